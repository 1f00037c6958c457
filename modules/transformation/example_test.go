package transformation_test

import (
	"errors"
	"fmt"
	"net/url"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// The engine's use: build the downstream namespace from the object's locator, check it does
// not collide with an existing one, then transform the object itself.
func ExamplePipeline_ToDownstream() {
	ctx := transformation.Context{
		SyncTargetKey:  "6Rz1e1QbnQwqAsYPw4GJ3H",
		SyncTargetName: "us-east1",
		SyncTargetUID:  "c1d2e3f4",
	}
	upstream := &unstructured.Unstructured{}
	upstream.SetAPIVersion("v1")
	upstream.SetKind("ConfigMap")
	upstream.SetNamespace("team-a")
	upstream.SetName("kube-root-ca.crt")
	upstream.SetAnnotations(map[string]string{kcp.ClusterAnnotation: "root:org:ws"})
	upstream.SetLabels(map[string]string{kcp.StateLabel(ctx.SyncTargetKey): kcp.StateSync})

	ns, err := namespace.DownstreamNamespace(ctx.Locator(upstream), ctx.SyncTargetKey)
	if err != nil {
		panic(err)
	}
	var existing *unstructured.Unstructured // as read from the downstream lister
	if err := namespace.CheckCollision(existing, ctx.Locator(upstream)); err != nil {
		panic(err)
	}

	p := transformation.NewPipeline()
	downstream, err := p.ToDownstream(ctx, upstream)
	var skip *transformation.SkipError
	switch {
	case errors.As(err, &skip):
		fmt.Println("skipped:", skip.Reason)
	case err != nil:
		panic(err)
	default:
		fmt.Println(ns.GetName(), downstream.GetNamespace(), downstream.GetName())
	}
	// Output: kcp-77hmyjhzed9x kcp-77hmyjhzed9x kcp-root-ca.crt
}

// workspaceInputs is what the downstream module would implement over its caches: the upstream
// token Secrets by ServiceAccount, and the per-workspace DNS Service IPs.
type workspaceInputs struct{}

func (workspaceInputs) TokenSecret(cluster, ns, serviceAccount string) (string, error) {
	if serviceAccount == "default" {
		return "default-token-abc", nil
	}
	return "", nil // none yet: the object fails with ErrPodInputsNotReady and is retried
}

func (workspaceInputs) Nameserver(string) (string, error) { return "10.96.0.53", nil }

// The pod mutator makes a Deployment's pods talk to their workspace.
func ExampleWithPodMutator() {
	api, _ := url.Parse("https://kcp.example.com:6443")
	p := transformation.NewPipeline(transformation.WithPodMutator(transformation.PodMutatorConfig{
		APIURL: api,
		Inputs: workspaceInputs{},
	}))
	ctx := transformation.Context{SyncTargetKey: "6Rz1e1QbnQwqAsYPw4GJ3H", SyncTargetName: "us-east1"}
	upstream := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "Deployment",
		"metadata": map[string]any{
			"name":        "web",
			"namespace":   "team-a",
			"labels":      map[string]any{kcp.StateLabel(ctx.SyncTargetKey): kcp.StateSync},
			"annotations": map[string]any{kcp.ClusterAnnotation: "root:org:ws"},
		},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": "web", "image": "web:1"}},
		}}},
	}}
	downstream, err := p.ToDownstream(ctx, upstream)
	if err != nil {
		panic(err)
	}
	spec, _, _ := unstructured.NestedMap(downstream.Object, "spec", "template", "spec")
	env := spec["containers"].([]any)[0].(map[string]any)["env"].([]any)
	fmt.Println(env[2], spec["dnsPolicy"], spec["automountServiceAccountToken"])
	sources, _, _ := unstructured.NestedSlice(spec["volumes"].([]any)[0].(map[string]any), "projected", "sources")
	fmt.Println(sources[0].(map[string]any)["secret"].(map[string]any)["name"])
	// Output:
	// map[name:KUBERNETES_SERVICE_HOST value:kcp.example.com] None false
	// kcp-default-token-abc
}
