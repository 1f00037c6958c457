package queue

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// KeysFunc maps an object from an informer event to the keys to reconcile.
// Returning no key ignores the event.
type KeysFunc func(obj metav1.Object) []Key

// ObjectKeys maps an upstream object to its own key: the logical cluster comes
// from the kcp.io/cluster annotation, else fallbackCluster.
func ObjectKeys(dir Direction, gvr schema.GroupVersionResource, fallbackCluster string) KeysFunc {
	return func(obj metav1.Object) []Key {
		return []Key{{
			Direction: dir, GVR: gvr, Cluster: identity.LogicalCluster(obj, fallbackCluster),
			Namespace: obj.GetNamespace(), Name: obj.GetName(),
		}}
	}
}

// EventHandler returns an informer event handler that enqueues the keys of every
// added, updated or deleted object (deletion tombstones included).
func (r *Runner) EventHandler(keys KeysFunc) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		for _, k := range keys(m) {
			r.Enqueue(k)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}
}
