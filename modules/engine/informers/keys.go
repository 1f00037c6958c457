package informers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
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
		return StoreKey(identity.LogicalCluster(m, fromCluster), m.GetNamespace(), m.GetName()), nil
	}
}
