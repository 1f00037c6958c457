package informers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// StoreKey is the key of an upstream object in the upstream caches, kcp's cluster-aware
// key: "<cluster>|<namespace>/<name>", or "<cluster>|<name>" for a cluster-scoped object.
// Two workspaces holding the same namespace/name thus never share a cache entry.
func StoreKey(cluster, namespace, name string) string {
	if namespace == "" {
		return cluster + "|" + name
	}
	return cluster + "|" + namespace + "/" + name
}

// StoreKeyFunc is the key function of the upstream caches: StoreKey of the object's
// logical cluster (kcp.io/cluster, else fromCluster), namespace and name. Deletion
// tombstones keep their key; explicit keys are used as they are.
func StoreKeyFunc(fromCluster string) cache.KeyFunc {
	return func(obj any) (string, error) {
		switch o := obj.(type) {
		case cache.DeletedFinalStateUnknown:
			return o.Key, nil
		case cache.ExplicitKey:
			return string(o), nil
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return "", fmt.Errorf("cluster-aware key: %w", err)
		}
		return StoreKey(logicalCluster(obj, m, fromCluster), m.GetNamespace(), m.GetName()), nil
	}
}

// logicalCluster is identity.LogicalCluster without the copy of every annotation that
// Unstructured.GetAnnotations makes: keys are computed several times per event.
func logicalCluster(obj any, m metav1.Object, fallback string) string {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return identity.LogicalCluster(m, fallback)
	}
	if c, ok, _ := unstructured.NestedFieldNoCopy(u.Object, "metadata", "annotations", identity.LogicalClusterAnnotation); ok {
		if s, isString := c.(string); isString && s != "" {
			return s
		}
	}
	return fallback
}
