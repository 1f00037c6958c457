package engine

import (
	"context"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// resourceSetController keeps the resource set, the informers and
// status.syncedResources in step. It has a single key: the SyncTarget.
type resourceSetController struct{ e *Engine }

func (c resourceSetController) Name() string { return ResourceSetController }
func (c resourceSetController) Workers() int { return 1 }

func (c resourceSetController) Reconcile(ctx context.Context, _ queue.Key) error {
	return c.e.reconcileResourceSet(ctx)
}

// newSyncTargetInformer watches the one SyncTarget, in its own workspace (keys are plain
// names). It never uses client-go's WatchList (sendInitialEvents), which kcp v0.11
// refuses with 422.
func newSyncTargetInformer(client dynamic.NamespaceableResourceInterface, name string) cache.SharedIndexInformer {
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return client.Watch(ctx, o)
		},
	}
	return cache.NewSharedIndexInformerWithOptions(informers.WithoutWatchList(lw),
		&unstructured.Unstructured{}, cache.SharedIndexInformerOptions{ObjectDescription: "synctargets"})
}

// syncTargetHandler calls enqueue when the SyncTarget appears, goes, or changes
// in a way that matters to the resource set (not on heartbeats).
func syncTargetHandler(enqueue func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { enqueue() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*unstructured.Unstructured)
			n, ok2 := newObj.(*unstructured.Unstructured)
			if !ok1 || !ok2 || o.GetUID() != n.GetUID() {
				enqueue()
				return
			}
			oldSR, _, _ := unstructured.NestedSlice(o.Object, "status", "syncedResources")
			newSR, _, _ := unstructured.NestedSlice(n.Object, "status", "syncedResources")
			if !reflect.DeepEqual(oldSR, newSR) {
				enqueue()
			}
		},
		DeleteFunc: func(any) { enqueue() },
	}
}
