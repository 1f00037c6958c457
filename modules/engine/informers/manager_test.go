package informers

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/metadata"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

var (
	configmaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	secrets    = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	target     = identity.NewTarget("root:org", "kind", "uid")
	other      = identity.NewTarget("root:org", "other", "uid2")
)

func object(kind, ns, name string, lbls, ann map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(lbls)
	u.SetAnnotations(ann)
	return u
}

func newFakeDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		configmaps: "ConfigMapList", secrets: "SecretList", NamespacesGVR: "NamespaceList", services: "ServiceList",
	}, objs...)
}

// recorder collects the names of added objects per informer.
type recorder struct {
	mu    sync.Mutex
	added map[ID][]string
}

func (r *recorder) factory(id ID) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.added == nil {
			r.added = map[ID][]string{}
		}
		r.added[id] = append(r.added[id], obj.(metav1.Object).GetName())
	}}
}

func (r *recorder) names(id ID) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.added[id]...)
}

func TestUpstreamInformerSeesOnlyObjectsOfItsTarget(t *testing.T) {
	up := newFakeDynamic(
		object("ConfigMap", "ns", "mine", map[string]string{target.StateLabel(): "Sync"}, map[string]string{identity.LogicalClusterAnnotation: "lc"}),
		object("ConfigMap", "ns", "pending", map[string]string{target.StateLabel(): ""}, nil),
		object("ConfigMap", "ns", "theirs", map[string]string{other.StateLabel(): "Sync"}, nil),
	)
	m := NewManager(Options{Target: target, Upstream: Clients{Dynamic: up}})
	rec := &recorder{}
	require.NoError(t, m.AddEventHandler(Upstream, rec.factory))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	id := ID{Side: Upstream, GVR: configmaps}
	_, err := m.Start(ctx, id)
	require.NoError(t, err)
	require.True(t, m.WaitForSync(ctx, id))

	assert.ElementsMatch(t, []string{"mine", "pending"}, rec.names(id))
	assert.Equal(t, []Status{{ID: id, Synced: true, Objects: 2}}, m.Status())

	obj, ok, err := m.Get(id, "lc", "ns", "mine")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "mine", obj.GetName())
	_, ok, err = m.Get(id, "root:org", "ns", "pending") // no annotation: FromCluster defaults to the target's cluster
	require.NoError(t, err)
	assert.True(t, ok)
	_, ok, err = m.Get(id, "root:org", "ns", "mine")
	require.NoError(t, err)
	assert.False(t, ok, "object of cluster lc must not be found under root:org")

	lister, ok := m.Lister(id)
	require.True(t, ok)
	list, err := lister.List(target.UpstreamSelector())
	require.NoError(t, err)
	assert.Len(t, list, 2)

	// A handler added late still sees the cached objects.
	late := &recorder{}
	require.NoError(t, m.AddEventHandler(Upstream, late.factory))
	require.Eventually(t, func() bool { return len(late.names(id)) == 2 }, 5*time.Second, time.Millisecond)
}

func TestInformersStartAndStopIndividually(t *testing.T) {
	m := NewManager(Options{Target: target, Upstream: Clients{Dynamic: newFakeDynamic()}, Downstream: Clients{Dynamic: newFakeDynamic()}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cmUp, secUp := ID{Side: Upstream, GVR: configmaps}, ID{Side: Upstream, GVR: secrets}
	cmDown := ID{Side: Downstream, GVR: configmaps}
	started, stopped, err := m.Sync(ctx, []ID{cmUp, secUp, cmDown})
	require.NoError(t, err)
	assert.Equal(t, []ID{cmDown, cmUp, secUp}, started)
	assert.Empty(t, stopped)
	require.True(t, m.WaitForSync(ctx, cmUp, secUp, cmDown))
	cmInf, ok := m.Informer(cmUp)
	require.True(t, ok)

	started, stopped, err = m.Sync(ctx, []ID{secUp, cmDown})
	require.NoError(t, err)
	assert.Empty(t, started)
	assert.Equal(t, []ID{cmUp}, stopped)
	assert.True(t, cmInf.IsStopped(), "stopped informer must have returned")
	_, ok = m.Informer(cmUp)
	assert.False(t, ok)
	assert.Equal(t, []ID{cmDown, secUp}, m.Running())

	secInf, _ := m.Informer(secUp)
	m.Stop(secUp)
	assert.True(t, secInf.IsStopped())
	m.Stop(secUp) // idempotent
	assert.False(t, m.WaitForSync(ctx, secUp), "waiting for a stopped informer fails")

	m.StopAll()
	assert.Empty(t, m.Running())
}

func TestSyncLeavesPinnedInformersAlone(t *testing.T) {
	m := NewManager(Options{Target: target, Upstream: Clients{Dynamic: newFakeDynamic()}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pinned := ID{Side: Upstream, GVR: secrets}
	_, err := m.Start(ctx, pinned)
	require.NoError(t, err)
	_, stopped, err := m.Sync(ctx, nil)
	require.NoError(t, err)
	assert.Empty(t, stopped)
	assert.Equal(t, []ID{pinned}, m.Running())
	// Starting again returns the same informer.
	a, _ := m.Informer(pinned)
	b, err := m.Start(ctx, pinned)
	require.NoError(t, err)
	assert.Same(t, a, b)
}

func TestStartErrors(t *testing.T) {
	m := NewManager(Options{Target: target})
	ctx := context.Background()
	tests := map[string]ID{
		"no dynamic client":  {Side: Upstream, GVR: configmaps},
		"no metadata client": {Side: Downstream, GVR: configmaps, MetadataOnly: true},
		"unknown side":       {Side: "sideways", GVR: configmaps},
	}
	for name, id := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := m.Start(ctx, id)
			require.Error(t, err)
		})
	}
	_, _, err := m.Sync(ctx, []ID{{Side: Upstream, GVR: configmaps}})
	require.Error(t, err)
	_, _, err = m.Get(ID{Side: Upstream, GVR: configmaps}, "", "", "x")
	require.Error(t, err)
	_, _, err = m.DownstreamNamespace("c", "ns")
	require.Error(t, err)
	_, _, _, err = m.UpstreamNamespace("ns")
	require.Error(t, err)
}

func TestDownstreamNamespaceLocatorIndex(t *testing.T) {
	scheme := runtime.NewScheme()
	require.NoError(t, corev1.AddToScheme(scheme))
	md := metadatafake.NewSimpleMetadataClient(scheme)
	m := NewManager(Options{Target: target, Downstream: Clients{Metadata: md}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	loc, err := target.Locator("lc", "team-a").JSON()
	require.NoError(t, err)
	mkNS := func(name string, lbls, ann map[string]string) {
		_, err := md.Resource(NamespacesGVR).(metadatafake.MetadataClient).CreateFake(&metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls, Annotations: ann},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	mkNS("kcp-abc", target.DownstreamLabels(), map[string]string{identity.NamespaceLocatorAnnotation: loc})
	mkNS("kcp-bad", target.DownstreamLabels(), map[string]string{identity.NamespaceLocatorAnnotation: "{"})
	mkNS("kcp-plain", target.DownstreamLabels(), nil)

	id := ID{Side: Downstream, GVR: NamespacesGVR, MetadataOnly: true}
	_, err = m.Start(ctx, id)
	require.NoError(t, err)
	require.True(t, m.WaitForSync(ctx, id))

	name, ok, err := m.DownstreamNamespace("lc", "team-a")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "kcp-abc", name)
	_, ok, err = m.DownstreamNamespace("lc", "team-b")
	require.NoError(t, err)
	assert.False(t, ok)

	cluster, ns, ok, err := m.UpstreamNamespace("kcp-abc")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, []string{"lc", "team-a"}, []string{cluster, ns})
	_, _, ok, err = m.UpstreamNamespace("kcp-plain")
	require.NoError(t, err)
	assert.False(t, ok)
	_, _, _, err = m.UpstreamNamespace("kcp-bad")
	require.Error(t, err)
	_, _, ok, err = m.UpstreamNamespace("missing")
	require.NoError(t, err)
	assert.False(t, ok)

	obj, ok, err := m.Get(id, "ignored", "", "kcp-abc")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "kcp-abc", obj.GetName())
	assert.Equal(t, "downstream /v1, Resource=namespaces (metadata)", id.String())
}

// noWatchListDynamic fails the test when an informer asks for WatchList.
type noWatchListDynamic struct {
	dynamic.Interface
	t *testing.T
}

func (d noWatchListDynamic) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return noWatchListResource{d.Interface.Resource(gvr), d.t}
}

type noWatchListResource struct {
	dynamic.NamespaceableResourceInterface
	t *testing.T
}

func (r noWatchListResource) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	if o.SendInitialEvents != nil {
		r.t.Errorf("upstream watch with sendInitialEvents=%v: kcp v0.11 answers WatchList with 422", *o.SendInitialEvents)
	}
	return r.NamespaceableResourceInterface.Watch(ctx, o)
}

type noWatchListMetadata struct {
	metadata.Interface
	t *testing.T
}

func (m noWatchListMetadata) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return noWatchListGetter{m.Interface.Resource(gvr), m.t}
}

type noWatchListGetter struct {
	metadata.Getter
	t *testing.T
}

func (g noWatchListGetter) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	if o.SendInitialEvents != nil {
		g.t.Errorf("upstream watch with sendInitialEvents=%v: kcp v0.11 answers WatchList with 422", *o.SendInitialEvents)
	}
	return g.Getter.Watch(ctx, o)
}

// listing makes a fake answer every list of resource with objs: the fakes' trackers key
// by namespace/name and cannot hold one object per logical cluster.
func listing(f *clienttesting.Fake, resource string, list runtime.Object) {
	f.PrependReactor("list", resource, func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, list.DeepCopyObject(), nil
	})
}

func TestUpstreamCachesKeepOneObjectPerLogicalCluster(t *testing.T) {
	sync := map[string]string{target.StateLabel(): "Sync"}
	inCluster := func(c string) map[string]string {
		if c == "" {
			return nil
		}
		return map[string]string{identity.LogicalClusterAnnotation: c}
	}
	cms := &unstructured.UnstructuredList{}
	cms.SetAPIVersion("v1")
	cms.SetKind("ConfigMapList")
	for _, c := range []string{"root:a", "root:b", ""} {
		u := object("ConfigMap", "ns", "cm", sync, inCluster(c))
		u.SetUID(types.UID("uid-" + c))
		cms.Items = append(cms.Items, *u)
	}
	dyn := newFakeDynamic()
	listing(&dyn.Fake, "configmaps", cms)

	scheme := runtime.NewScheme()
	require.NoError(t, corev1.AddToScheme(scheme))
	md := metadatafake.NewSimpleMetadataClient(scheme)
	nss := &metav1.List{} // what the metadata fake expects from a reactor
	for _, c := range []string{"root:a", "root:b"} {
		nss.Items = append(nss.Items, runtime.RawExtension{Object: &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: sync, Annotations: inCluster(c)},
		}})
	}
	listing(&md.Fake, "namespaces", nss)

	m := NewManager(Options{Target: target, FromCluster: "root:plain", Upstream: Clients{
		Dynamic: noWatchListDynamic{dyn, t}, Metadata: noWatchListMetadata{md, t},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmID, nsID := ID{Side: Upstream, GVR: configmaps}, ID{Side: Upstream, GVR: NamespacesGVR, MetadataOnly: true}
	_, _, err := m.Sync(ctx, []ID{cmID, nsID})
	require.NoError(t, err)
	require.True(t, m.WaitForSync(ctx, cmID, nsID))

	tests := []struct {
		id                     ID
		cluster, ns, name, uid string
		found                  bool
	}{
		{id: cmID, cluster: "root:a", ns: "ns", name: "cm", uid: "uid-root:a", found: true},
		{id: cmID, cluster: "root:b", ns: "ns", name: "cm", uid: "uid-root:b", found: true},
		{id: cmID, cluster: "root:plain", ns: "ns", name: "cm", uid: "uid-", found: true},
		{id: cmID, cluster: "", ns: "ns", name: "cm", uid: "uid-", found: true}, // empty cluster: FromCluster
		{id: cmID, cluster: "root:c", ns: "ns", name: "cm"},
		{id: nsID, cluster: "root:a", name: "default", found: true},
		{id: nsID, cluster: "root:b", name: "default", found: true},
		{id: nsID, cluster: "root:plain", name: "default"},
	}
	for _, tc := range tests {
		t.Run(tc.id.GVR.Resource+" "+StoreKey(tc.cluster, tc.ns, tc.name), func(t *testing.T) {
			obj, ok, err := m.Get(tc.id, tc.cluster, tc.ns, tc.name)
			require.NoError(t, err)
			require.Equal(t, tc.found, ok)
			if ok && tc.uid != "" {
				assert.Equal(t, tc.uid, string(obj.GetUID()))
			}
		})
	}
	st := m.Status()
	require.Len(t, st, 2)
	assert.Equal(t, 3, st[0].Objects)
	assert.Equal(t, 2, st[1].Objects)

	lister, ok := m.Lister(cmID)
	require.True(t, ok)
	all, err := lister.List(labels.Everything())
	require.NoError(t, err)
	assert.Len(t, all, 3, "the lister lists every logical cluster")
	got, err := lister.ByNamespace("ns").Get("cm")
	require.NoError(t, err)
	assert.Equal(t, "uid-", string(got.(metav1.Object).GetUID()), "the lister gets from --from-cluster")
}

// clusterRecorder records the logical cluster the context of each list and watch names.
type clusterRecorder struct {
	dynamic.Interface
	mu       sync.Mutex
	clusters []string
}

func (c *clusterRecorder) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return clusterRecorderResource{c.Interface.Resource(gvr), c}
}

func (c *clusterRecorder) record(ctx context.Context) {
	cluster, _ := clients.ClusterFrom(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clusters = append(c.clusters, cluster)
}

type clusterRecorderResource struct {
	dynamic.NamespaceableResourceInterface
	c *clusterRecorder
}

func (r clusterRecorderResource) List(ctx context.Context, o metav1.ListOptions) (*unstructured.UnstructuredList, error) {
	r.c.record(ctx)
	return r.NamespaceableResourceInterface.List(ctx, o)
}

func (r clusterRecorderResource) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	r.c.record(ctx)
	return r.NamespaceableResourceInterface.Watch(ctx, o)
}

func TestUpstreamInformersSpanEveryClusterWhateverTheirContext(t *testing.T) {
	rec := &clusterRecorder{Interface: newFakeDynamic()}
	m := NewManager(Options{Target: target, Upstream: Clients{Dynamic: rec}})
	// Started from a reconcile, whose context routes requests to its key's cluster.
	ctx, cancel := context.WithTimeout(clients.WithCluster(context.Background(), "root:a"), 30*time.Second)
	defer cancel()
	id := ID{Side: Upstream, GVR: configmaps}
	_, err := m.Start(ctx, id)
	require.NoError(t, err)
	require.True(t, m.WaitForSync(ctx, id))
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.clusters) >= 2
	}, timeout, time.Millisecond, "list and watch")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, c := range rec.clusters {
		assert.Empty(t, c, "list and watch go to every logical cluster")
	}
}

func TestAResourceTheServerDoesNotServeIsNotWaitedFor(t *testing.T) {
	notServed := func() *dynamicfake.FakeDynamicClient {
		c := newFakeDynamic()
		c.PrependReactor("list", "secrets", func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, "")
		})
		return c
	}
	for _, side := range []Side{Upstream, Downstream} {
		t.Run(string(side), func(t *testing.T) {
			m := NewManager(Options{Target: target, Upstream: Clients{Dynamic: notServed()}, Downstream: Clients{Dynamic: notServed()}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			defer m.StopAll()
			cm, sec := ID{Side: side, GVR: configmaps}, ID{Side: side, GVR: secrets}
			_, _, err := m.Sync(ctx, []ID{cm, sec})
			require.NoError(t, err)
			require.True(t, m.WaitForSyncOrNotServed(ctx, cm, sec), "the served one synced, the other answered 404")
			byID := map[ID]Status{}
			for _, s := range m.Status() {
				byID[s.ID] = s
			}
			assert.True(t, byID[cm].Synced)
			assert.False(t, byID[cm].NotServed)
			assert.False(t, byID[sec].Synced)
			assert.True(t, byID[sec].NotServed)

			short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancelShort()
			assert.False(t, m.WaitForSync(short, sec), "WaitForSync still means synced")
		})
	}
}
