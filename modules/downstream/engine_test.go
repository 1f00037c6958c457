package downstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/downstream/cleanup"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

func TestRegisterWiresControllersOnTheEngine(t *testing.T) {
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	e, err := engine.New(engine.Config{SyncTargetName: "east", SyncTargetUID: "uid", FromCluster: "root", Resources: []string{"configmaps"}},
		engine.ClusterClients{Dynamic: c}, engine.ClusterClients{Dynamic: c})
	require.NoError(t, err)

	_, err = Register(e, Clients{}, Options{})
	require.Error(t, err, "clients are required")
	_, err = Register(e, Clients{Upstream: c, Downstream: c}, Options{ConflictPolicy: "Steal"})
	require.Error(t, err)

	reg, err := Register(e, Clients{Upstream: c, Downstream: c, UpstreamEvents: kubefake.NewClientset()}, Options{})
	require.NoError(t, err)
	assert.Equal(t, "downstream-spec", reg.Spec.Name())
	assert.Equal(t, "downstream-namespaces", reg.Namespaces.Name())
	assert.Equal(t, "downstream-cleanup", reg.Cleanup.Name())
	assert.Equal(t, 1, reg.Cleanup.Len(), "the start-up cleanup is queued")
	reg.Close()

	cl := &cleanupController{target: e.Target(), upstream: c, accepted: func() []schema.GroupVersionResource { return nil }}
	require.NoError(t, cl.Reconcile(context.Background(), cleanupKey))
	assert.Equal(t, 1, cl.Workers())
}

func TestStartUpCleanupSweepsAResourceOnlyOnceItsCachesSynced(t *testing.T) {
	cm := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deps := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		cm: "ConfigMapList", deps: "DeploymentList",
	})
	synced := map[schema.GroupVersionResource]bool{cm: true}
	var sweptFor []string
	cl := &cleanupController{
		target: identity.NewTarget("root", "east", "uid"), upstream: c, applier: nil,
		accepted:    func() []schema.GroupVersionResource { return []schema.GroupVersionResource{cm, deps} },
		cacheSynced: func(gvr schema.GroupVersionResource) bool { return synced[gvr] },
		resource: func(gvr schema.GroupVersionResource) cleanup.Resource {
			sweptFor = append(sweptFor, gvr.Resource)
			empty := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
			return cleanup.Resource{GVR: gvr, Downstream: empty, Upstream: empty}
		},
		cluster: func(*unstructured.Unstructured) string { return "root" }, enqueue: func(queue.Key) {},
		swept: map[schema.GroupVersionResource]bool{},
	}
	steps := []struct {
		name      string
		sync      []schema.GroupVersionResource
		wantSwept []string
		wantAgain bool
	}{
		{name: "deployments not served yet: configmaps swept, the key comes back", wantSwept: []string{"configmaps"}, wantAgain: true},
		{name: "still not served: nothing swept twice", wantSwept: []string{"configmaps"}, wantAgain: true},
		{name: "served and synced: swept, done", sync: []schema.GroupVersionResource{deps}, wantSwept: []string{"configmaps", "deployments"}},
	}
	for _, st := range steps {
		for _, gvr := range st.sync {
			synced[gvr] = true
		}
		err := cl.Reconcile(context.Background(), cleanupKey)
		var again *queue.RequeueAfterError
		assert.Equal(t, st.wantAgain, errors.As(err, &again), "%s: %v", st.name, err)
		if st.wantAgain {
			assert.Equal(t, cleanupRecheck, again.After, st.name)
		} else {
			require.NoError(t, err, st.name)
		}
		assert.Equal(t, st.wantSwept, sweptFor, st.name)
	}
}

func TestByNamespaceAndLazyStore(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, ns := range []string{"a", "a", "b"} {
		u := &unstructured.Unstructured{}
		u.SetNamespace(ns)
		u.SetName("x-" + ns + string(rune('0'+len(idx.List()))))
		require.NoError(t, idx.Add(u))
	}
	got, err := byNamespace{idx}.ByIndex(cache.NamespaceIndex, "a")
	require.NoError(t, err)
	assert.Len(t, got, 2)
	_, err = byNamespace{idx}.ByIndex("other", "a")
	require.Error(t, err, "only the namespace index is emulated")

	missing := lazyStore(func() (cache.Indexer, bool) { return nil, false })
	_, ok, err := missing.GetByKey("a/x")
	require.NoError(t, err)
	assert.False(t, ok)
	present := lazyStore(func() (cache.Indexer, bool) { return idx, true })
	_, ok, err = present.GetByKey("b/x-b2")
	require.NoError(t, err)
	assert.True(t, ok)

	w := &wiring{}
	assert.Nil(t, w.namespaceOfUpstream(&metav1.ObjectMeta{Name: "cluster-scoped"}))
	assert.Nil(t, namespaceOfDownstream(&metav1.ObjectMeta{Name: "cluster-scoped"}))
}

func TestRegisterRefusesBadOptions(t *testing.T) {
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	newEngine := func() *engine.Engine {
		e, err := engine.New(engine.Config{SyncTargetName: "east", SyncTargetUID: "uid", FromCluster: "root"},
			engine.ClusterClients{Dynamic: c}, engine.ClusterClients{Dynamic: c})
		require.NoError(t, err)
		return e
	}
	clients := Clients{Upstream: c, Downstream: c}
	tests := map[string]Options{
		"bad policy":      {ConflictPolicy: "Steal"},
		"bad propagation": {DeletionPropagation: "Later"},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Register(newEngine(), clients, opts)
			require.Error(t, err)
		})
	}
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tmc_syncer_downstream_applies_total", Help: "x"})))
	_, err := Register(newEngine(), clients, Options{Registerer: reg})
	require.Error(t, err, "metrics name clash")
}

// On the engine path (the only one), an assigned object syncs down with our
// finalizer upstream, and a downstream orphan whose upstream object is gone is
// deleted by the start-up cleanup.
func TestEnginePathSyncsAndCleansOrphans(t *testing.T) {
	target := identity.NewTarget("root", "east", "st-uid")
	up := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "web", "namespace": "team", "uid": "up-web",
			"labels": map[string]any{target.StateLabel(): "Sync"}},
		"data": map[string]any{"k": "v"},
	}}
	orphan := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "orphan", "namespace": "kcp-old", "uid": "d-orphan",
			"labels":      map[string]any{identity.DownstreamClusterLabel: target.Key},
			"annotations": map[string]any{ownership.NameAnnotation: "orphan", ownership.NamespaceAnnotation: "team", ownership.ClusterAnnotation: "root", ownership.UIDAnnotation: "up-orphan"}},
	}}
	f := startFakeEngine(t, target, []runtime.Object{up}, []runtime.Object{orphan}, Options{})
	nsName, err := namespace.DownstreamName(namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "east", UID: "st-uid"}, Cluster: "root", Namespace: "team"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := f.down.Resource(cmGVR).Namespace(nsName).Get(context.Background(), "web", metav1.GetOptions{})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the ConfigMap is synced down")
	require.Eventually(t, func() bool {
		_, err := f.down.Resource(cmGVR).Namespace("kcp-old").Get(context.Background(), "orphan", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 10*time.Second, 10*time.Millisecond, "the orphan is cleaned up on start")
	got, err := f.up.Resource(cmGVR).Namespace("team").Get(context.Background(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, got.GetFinalizers(), target.SyncerFinalizer())
	assert.NotEmpty(t, f.reg.Spec.Stats())
}
