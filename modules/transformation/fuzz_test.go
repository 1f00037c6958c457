package transformation

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
