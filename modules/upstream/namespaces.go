package upstream

import (
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// namespaceLookup is the transformation's namespace.Lookup over the engine's downstream
// namespace cache: the namespace whose locator (a kcp ≤ v0.6 syncTarget.path read as the
// cluster) is the one asked for, whatever its name. The downstream syncer puts objects into
// such a namespace; status must be read from the same place.
type namespaceLookup struct{ m *informers.Manager }

// Existing implements namespace.Lookup.
func (l namespaceLookup) Existing(loc namespace.Locator) (string, bool) {
	for _, id := range []informers.ID{
		{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true},
		{Side: informers.Downstream, GVR: informers.NamespacesGVR},
	} {
		inf, ok := l.m.Informer(id)
		if !ok {
			continue
		}
		items, err := inf.GetIndexer().ByIndex(informers.ByLocator, informers.LocatorKey(loc.Cluster, loc.Namespace))
		if err != nil {
			return "", false
		}
		return namespace.FindExisting(items, loc)
	}
	return "", false
}
