package informers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// ByLocator indexes downstream objects carrying a namespace locator (the downstream
// namespaces) by LocatorKey(cluster, namespace) of the upstream namespace. Upstream caches
// need no such index: their key is StoreKey(cluster, namespace, name).
const ByLocator = "namespace-locator"

// LocatorKey is the ByLocator index value of the upstream namespace ns in logical cluster cluster.
func LocatorKey(cluster, namespace string) string {
	return cluster + "|" + namespace
}

// Both sides index by namespace too: the downstream namespace controller asks whether a
// namespace still holds objects on every object event, and a scan of the whole cache
// per event made the initial sync of thousands of objects quadratic (P1 CPU profile).
// Upstream, a namespace name is shared by every logical cluster: filter by cluster.
func upstreamIndexers() cache.Indexers {
	return cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
}

func downstreamIndexers() cache.Indexers {
	return cache.Indexers{
		cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
		ByLocator: func(obj any) ([]string, error) {
			m, err := meta.Accessor(obj)
			if err != nil {
				return nil, nil //nolint:nilerr // non-objects are simply not indexed
			}
			loc, ok, err := identity.LocatorOf(m)
			if !ok || err != nil {
				// A malformed locator is not ours to fix here; the object is just not indexed.
				return nil, nil //nolint:nilerr
			}
			return []string{LocatorKey(loc.Cluster, loc.Namespace)}, nil
		},
	}
}
