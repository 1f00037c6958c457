package transformation_test

import (
	"errors"
	"fmt"

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
