// Package cleanup removes, when the syncer starts, downstream objects whose upstream
// object was deleted while the syncer was down. It deletes nothing else: an object whose
// upstream object still exists is left to the spec controller.
package cleanup

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// Lister lists cached objects (a cache.Indexer satisfies it).
type Lister interface {
	List() []any
}

// Deleter deletes a downstream object if it still has uid (*applier.Applier).
type Deleter interface {
	Delete(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, uid types.UID, propagation metav1.DeletionPropagation) error
}

// Store reads cached objects by key (a cache.Indexer satisfies it).
type Store interface {
	GetByKey(key string) (item any, exists bool, err error)
}

// Resource is one synced resource and its caches.
type Resource struct {
	// GVR is the resource.
	GVR schema.GroupVersionResource
	// Downstream caches our labelled downstream objects.
	Downstream Lister
	// Upstream caches upstream objects assigned to the target, keyed
	// informers.StoreKey(cluster, namespace, name); an object found there with the same
	// UID needs no request. May be nil.
	Upstream Store
}

// Counter counts deleted orphans (metrics); may be nil.
type Counter interface {
	OrphanDeleted()
}

// Orphans deletes the downstream objects of resources that carry target's cluster label
// and whose upstream object (by name and UID) no longer exists. It returns how many it
// deleted.
func Orphans(ctx context.Context, target identity.Target, resources []Resource, upstream dynamic.Interface, d Deleter, counter Counter) (int, error) {
	logger := klog.FromContext(ctx)
	deleted := 0
	for _, r := range resources {
		for _, item := range r.Downstream.List() {
			obj, ok := item.(*unstructured.Unstructured)
			if !ok || obj.GetLabels()[identity.DownstreamClusterLabel] != target.Key || obj.GetDeletionTimestamp() != nil {
				continue
			}
			owner, ok := ownership.FromAnnotations(obj.GetAnnotations())
			if !ok {
				continue
			}
			key := fmt.Sprintf("%s %s|%s", r.GVR.Resource, owner.Cluster, join(owner.Namespace, owner.Name))
			if cached(r.Upstream, owner) {
				continue
			}
			gone, err := upstreamGone(ctx, upstream, r.GVR, owner)
			if err != nil {
				return deleted, err
			}
			if !gone {
				continue
			}
			if err := d.Delete(ctx, r.GVR, obj.GetNamespace(), obj.GetName(), obj.GetUID(), metav1.DeletePropagationBackground); err != nil {
				return deleted, fmt.Errorf("cleanup orphan of %s: %w", key, err)
			}
			deleted++
			if counter != nil {
				counter.OrphanDeleted()
			}
			logger.Info("deleted downstream orphan: its upstream object is gone", "key", key, "downstream", join(obj.GetNamespace(), obj.GetName()))
		}
	}
	return deleted, nil
}

func cached(s Store, owner ownership.Owner) bool {
	if s == nil {
		return false
	}
	item, ok, err := s.GetByKey(informers.StoreKey(owner.Cluster, owner.Namespace, owner.Name))
	if err != nil || !ok {
		return false
	}
	u, isU := item.(*unstructured.Unstructured)
	return isU && string(u.GetUID()) == owner.UID
}

// upstreamGone reports whether the upstream object owner names no longer exists: not found,
// or found with another UID (deleted and recreated).
func upstreamGone(ctx context.Context, upstream dynamic.Interface, gvr schema.GroupVersionResource, owner ownership.Owner) (bool, error) {
	// Under kcp the read goes to the owner's logical cluster.
	u, err := upstream.Resource(gvr).Namespace(owner.Namespace).Get(clients.WithCluster(ctx, owner.Cluster), owner.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("get upstream %s %s: %w", gvr.Resource, join(owner.Namespace, owner.Name), err)
	}
	return owner.UID != "" && string(u.GetUID()) != owner.UID, nil
}

func join(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
