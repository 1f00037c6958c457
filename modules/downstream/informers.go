package downstream

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// ownInformers is an adapter until the engine ships an informer manager: one label-filtered
// dynamic informer factory per side. Upstream sees objects carrying the target's state
// label (any value, so unassignment is observed); downstream sees objects and namespaces
// carrying the target's cluster label.
type ownInformers struct {
	up, down   dynamicinformer.DynamicSharedInformerFactory
	upstream   map[schema.GroupVersionResource]cache.SharedIndexInformer
	downstream map[schema.GroupVersionResource]cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
}

func newInformers(up, down dynamic.Interface, target identity.Target, resources []schema.GroupVersionResource, resync time.Duration) (*ownInformers, error) {
	upSel := target.UpstreamSelector().String()
	downSel := target.DownstreamSelector().String()
	inf := &ownInformers{
		up: dynamicinformer.NewFilteredDynamicSharedInformerFactory(up, resync, metav1.NamespaceAll,
			func(o *metav1.ListOptions) { o.LabelSelector = upSel }),
		down: dynamicinformer.NewFilteredDynamicSharedInformerFactory(down, resync, metav1.NamespaceAll,
			func(o *metav1.ListOptions) { o.LabelSelector = downSel }),
		upstream:   map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		downstream: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
	}
	for _, gvr := range resources {
		inf.upstream[gvr] = inf.up.ForResource(gvr).Informer()
		d := inf.down.ForResource(gvr).Informer()
		if err := d.AddIndexers(cache.Indexers{spec.ByUpstreamIndex: spec.UpstreamIndexFunc}); err != nil {
			return nil, err
		}
		inf.downstream[gvr] = d
	}
	inf.namespaces = inf.down.ForResource(namespaces.Resource).Informer()
	if err := inf.namespaces.AddIndexers(cache.Indexers{namespaces.ByLocatorIndex: namespaces.IndexByLocator}); err != nil {
		return nil, err
	}
	return inf, nil
}

func (i *ownInformers) start(stop <-chan struct{}) {
	i.up.Start(stop)
	i.down.Start(stop)
}

func (i *ownInformers) hasSynced() []cache.InformerSynced {
	out := []cache.InformerSynced{i.namespaces.HasSynced}
	for _, inf := range i.upstream {
		out = append(out, inf.HasSynced)
	}
	for _, inf := range i.downstream {
		out = append(out, inf.HasSynced)
	}
	return out
}

func (i *ownInformers) shutdown() {
	i.up.Shutdown()
	i.down.Shutdown()
}
