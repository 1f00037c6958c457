package downstream

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
)

// ownInformers is an adapter until the engine ships an informer manager: label-filtered
// informers per side. Upstream sees objects carrying the target's state label (any value,
// so unassignment is observed), in cluster-aware caches like the engine's (keyed
// informers.StoreKey, no WatchList); downstream sees objects and namespaces carrying the
// target's cluster label.
type ownInformers struct {
	down       dynamicinformer.DynamicSharedInformerFactory
	upstream   map[schema.GroupVersionResource]cache.SharedIndexInformer
	downstream map[schema.GroupVersionResource]cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	running    sync.WaitGroup
}

func newInformers(up, down dynamic.Interface, target identity.Target, fromCluster string, resources []schema.GroupVersionResource, resync time.Duration) (*ownInformers, error) {
	upSel := target.UpstreamSelector().String()
	downSel := target.DownstreamSelector().String()
	inf := &ownInformers{
		down: dynamicinformer.NewFilteredDynamicSharedInformerFactory(down, resync, metav1.NamespaceAll,
			func(o *metav1.ListOptions) { o.LabelSelector = downSel }),
		upstream:   map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		downstream: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
	}
	for _, gvr := range resources {
		inf.upstream[gvr] = informers.NewClusterInformer(informers.WithoutWatchList(informers.DynamicListWatch(up, gvr, upSel)),
			&unstructured.Unstructured{}, informers.ClusterInformerOptions{
				FromCluster: fromCluster, ResyncPeriod: resync, Description: gvr.String(),
				Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			})
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

func (i *ownInformers) start(ctx context.Context) {
	for _, inf := range i.upstream {
		i.running.Go(func() { inf.RunWithContext(ctx) })
	}
	i.down.Start(ctx.Done())
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

// shutdown waits for the informers to stop once the context given to start has ended.
func (i *ownInformers) shutdown() {
	i.running.Wait()
	i.down.Shutdown()
}
