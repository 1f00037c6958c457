package downstream

import (
	"context"
	"testing"

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

	cl := &cleanupController{target: e.Target(), upstream: c, resources: func() []cleanup.Resource { return nil },
		gvrs: func() []schema.GroupVersionResource { return nil }}
	require.NoError(t, cl.Reconcile(context.Background(), cleanupKey))
	assert.Equal(t, 1, cl.Workers())
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
