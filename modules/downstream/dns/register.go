package dns

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// Register adds the Controller to e: it follows the engine's downstream namespaces and, when
// Services are synced, their downstream copies. Call it before e.Run, and run the returned
// Controller's Run next to the engine (it watches the syncer's own namespace).
func Register(e *engine.Engine, cfg Config) (*Controller, error) {
	m := e.Informers()
	if cfg.Target.Key == "" {
		cfg.Target = e.Target()
	}
	nsID := informers.ID{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true}
	servicesID := func() (informers.ID, bool) {
		for _, gvr := range e.Resources().Accepted().GVRs() {
			if isServices(gvr) {
				return e.SetInformer(informers.Downstream, gvr), true
			}
		}
		return informers.ID{}, false
	}
	src := Sources{
		Namespaces: func() []metav1.Object {
			inf, ok := m.Informer(nsID)
			if !ok {
				return nil
			}
			return accessors(inf.GetStore().List())
		},
		Services: func(ns string) []metav1.Object {
			id, ok := servicesID()
			if !ok {
				return nil
			}
			inf, ok := m.Informer(id)
			if !ok {
				return nil
			}
			objs, err := inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
			if err != nil {
				return nil
			}
			return accessors(objs)
		},
	}
	var runner *queue.Runner
	c, err := New(cfg, src, func(k queue.Key, d time.Duration) {
		if runner == nil {
			return
		}
		if d > 0 {
			runner.EnqueueAfter(k, d)
			return
		}
		runner.Enqueue(k)
	})
	if err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return c, nil
	}
	nsOf := func(ns string) (string, bool) {
		cluster, _, ok, err := m.UpstreamNamespace(ns)
		if err != nil || !ok {
			return "", false
		}
		if cluster == "" {
			cluster = cfg.FromCluster
		}
		return cluster, true
	}
	runner, err = e.Register(c, engine.Watch{Side: informers.Downstream, Keys: func(id informers.ID) queue.KeysFunc {
		switch {
		case id == nsID:
			return c.NamespaceKeys
		case isServices(id.GVR) && !id.MetadataOnly:
			return c.ServiceKeys(nsOf)
		}
		return nil
	}})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return c, nil
}

func isServices(gvr schema.GroupVersionResource) bool {
	return gvr.Group == "" && gvr.Resource == "services"
}

func accessors(objs []any) []metav1.Object {
	out := make([]metav1.Object, 0, len(objs))
	for _, o := range objs {
		if m, err := meta.Accessor(o); err == nil {
			out = append(out, m)
		}
	}
	return out
}
