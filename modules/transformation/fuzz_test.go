package transformation

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// FuzzPipeline feeds arbitrary JSON objects through both directions. It proves that the
// pipeline never panics (not even one caught by its own recover), never modifies its input,
// and is deterministic.
func FuzzPipeline(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	require.NoError(f, err)
	for _, file := range files {
		raw, err := os.ReadFile(file)
		require.NoError(f, err)
		js, err := yaml.YAMLToJSON(raw)
		require.NoError(f, err)
		f.Add(js)
	}
	p := NewPipeline()
	f.Fuzz(func(t *testing.T, data []byte) {
		var obj map[string]any
		// apimachinery's decoder yields the int64/float64 mix the apiserver's does.
		if utiljson.Unmarshal(data, &obj) != nil || obj == nil {
			return
		}
		in := &unstructured.Unstructured{Object: obj}
		before, err := json.Marshal(obj)
		require.NoError(t, err)

		out, err := p.ToDownstream(testContext(), in)
		noPanic(t, err)
		if err == nil {
			first, err := json.Marshal(out.Object)
			require.NoError(t, err)
			again, err := p.ToDownstream(testContext(), in)
			require.NoError(t, err)
			second, err := json.Marshal(again.Object)
			require.NoError(t, err)
			require.Equal(t, string(first), string(second), "deterministic")
			if ns := out.GetNamespace(); ns != "" {
				require.Empty(t, validation.IsDNS1123Label(ns), "namespace %q", ns)
			}
		}

		_, _, err = p.StatusToUpstream(testContext(), in, in)
		noPanic(t, err)

		after, err := json.Marshal(obj)
		require.NoError(t, err)
		require.Equal(t, string(before), string(after), "input not modified")
	})
}

func noPanic(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		require.NotContains(t, err.Error(), "panic:", "a stage panicked")
	}
}

// FuzzSpecDiff feeds arbitrary patches and specs to the spec-diff stage, where user text meets
// a third-party JSON Patch implementation: a bad patch must be an error, never a panic.
func FuzzSpecDiff(f *testing.F) {
	f.Add(`[{"op":"replace","path":"/replicas","value":2}]`, []byte(`{"replicas":1}`))
	f.Add(`[{"op":"move","from":"/a","path":"/a/b"}]`, []byte(`{"a":{"b":[1]}}`))
	f.Add(`[{"op":"copy","from":"/a","path":"/b/-"},{"op":"test","path":"/b/0","value":{"x":1}}]`, []byte(`{"a":{"x":1},"b":[]}`))
	f.Add(`[{"op":"add","path":"/a/99999999999","value":1}]`, []byte(`{"a":[]}`))
	f.Add(`[{"op":"remove","path":"/"}]`, []byte(`{"":1}`))
	p := NewPipeline()
	f.Fuzz(func(t *testing.T, patch string, specJSON []byte) {
		var spec any
		if utiljson.Unmarshal(specJSON, &spec) != nil {
			return
		}
		in := synced("apps/v1", "Deployment", "ns", "web", map[string]any{"spec": spec})
		annotations := in.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations["experimental.spec-diff.workload.kcp.io/"+testKey] = patch
		in.SetAnnotations(annotations)

		out, err := p.ToDownstream(testContext(), in)
		noPanic(t, err)
		if err == nil {
			_, err := json.Marshal(out.Object)
			require.NoError(t, err)
		}
	})
}

// FuzzPodMutator puts arbitrary JSON where a pod spec belongs, in every kind the pod mutator
// changes, and runs the mutator stage outside the pipeline (so no recover hides a panic) and
// through it: it must never panic, never modify its input, and be deterministic.
func FuzzPodMutator(f *testing.F) {
	f.Add(uint8(0), []byte(`{"containers":[{"name":"a","env":[{"name":"X","valueFrom":{"fieldRef":{"fieldPath":"metadata.namespace"}}}]}]}`))
	f.Add(uint8(1), []byte(`{"containers":[{"name":"a","volumeMounts":[{"name":"kcp-api-access"},{"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount/"}]}],"volumes":[{"name":"kcp-api-access"},7]}`))
	f.Add(uint8(2), []byte(`{"containers":[1,null,{"env":"x","volumeMounts":{}}],"initContainers":{},"volumes":"v","serviceAccountName":3}`))
	f.Add(uint8(3), []byte(`{"template":[],"jobTemplate":{"spec":null}}`))
	f.Add(uint8(4), []byte(`null`))
	kinds := PodMutatorKinds()
	inputs := &podInputsStub{
		tokens:      map[string]string{"root:default/ns/default": "default-token-abc"},
		nameservers: map[string]string{"root:default": "10.96.0.53"},
	}
	cfg := PodMutatorConfig{APIURL: &url.URL{Scheme: "https", Host: "kcp:6443"}, Inputs: inputs, UpsyncPods: true}
	stage := NewPodMutator(cfg)
	p := NewPipeline(WithPodMutator(cfg))
	f.Fuzz(func(t *testing.T, kind uint8, specJSON []byte) {
		var spec any
		if utiljson.Unmarshal(specJSON, &spec) != nil {
			return
		}
		gk := kinds[int(kind)%len(kinds)]
		paths := podTemplatePaths()[gk]
		// The spec goes where the kind keeps it, and, for the odd bytes, one level up in
		// place of the whole template.
		at := append(append([]string{}, paths...), "spec")
		if kind%2 == 1 && len(at) > 1 {
			at = at[:len(at)-1]
		}
		obj := map[string]any{}
		cur := obj
		for _, key := range at[:len(at)-1] {
			next := map[string]any{}
			cur[key] = next
			cur = next
		}
		cur[at[len(at)-1]] = spec
		in := synced(schema.GroupVersion{Group: gk.Group, Version: "v1"}.String(), gk.Kind, "ns", "w", obj)
		before, err := json.Marshal(in.Object)
		require.NoError(t, err)

		copied, err := copyJSON(in.Object)
		require.NoError(t, err)
		direct := &unstructured.Unstructured{Object: copied.(map[string]any)}
		if err := stage.Transform(newRequest(testContext(), Down, in, nil), direct); err == nil {
			_, err := json.Marshal(direct.Object)
			require.NoError(t, err, "the result is JSON")
		}

		out, err := p.ToDownstream(testContext(), in)
		noPanic(t, err)
		if err == nil {
			again, err := p.ToDownstream(testContext(), in)
			require.NoError(t, err)
			require.Equal(t, out.Object, again.Object, "deterministic")
		}
		after, err := json.Marshal(in.Object)
		require.NoError(t, err)
		require.Equal(t, string(before), string(after), "input not modified")
	})
}
