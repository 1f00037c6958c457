package engine

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	discoveryfake "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

var (
	configmaps = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	widgets    = schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
)

const (
	cluster = "root:org"
	stName  = "kind"
	stUID   = "st-uid"
)

func unstr(apiVersion, kind, ns, name string, lbls map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(lbls)
	return u
}

func syncTarget(uid string) *unstructured.Unstructured {
	u := unstr("workload.kcp.io/v1alpha1", "SyncTarget", "", stName, nil)
	u.SetUID("st-uid")
	if uid != "" {
		u.SetUID("other-uid")
	}
	u.SetResourceVersion("1")
	return u
}

func listKinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{
		workloadv1alpha1.SyncTargetsResource:         "SyncTargetList",
		configmaps:                                   "ConfigMapList",
		{Version: "v1", Resource: "secrets"}:         "SecretList",
		{Version: "v1", Resource: "serviceaccounts"}: "ServiceAccountList",
		widgets: "WidgetList",
	}
}

func disc() *discoveryfake.FakeDiscovery {
	verbs := []string{"get", "list", "watch", "create", "update", "delete"}
	return &discoveryfake.FakeDiscovery{Fake: &clienttesting.Fake{Resources: []*metav1.APIResourceList{
		{GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "configmaps", Namespaced: true, Verbs: verbs},
			{Name: "secrets", Namespaced: true, Verbs: verbs},
			{Name: "serviceaccounts", Namespaced: true, Verbs: verbs},
			{Name: "namespaces", Verbs: verbs},
		}},
		{GroupVersion: "example.com/v1", APIResources: []metav1.APIResource{{Name: "widgets", Namespaced: true, Verbs: verbs}}},
	}}}
}

type fixture struct {
	upDyn, downDyn *dynamicfake.FakeDynamicClient
	up, down       ClusterClients
}

func newFixture(t *testing.T, st *unstructured.Unstructured, upObjs ...runtime.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	require.NoError(t, corev1.AddToScheme(scheme))
	f := &fixture{
		upDyn:   dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds(), append(upObjs, st)...),
		downDyn: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds()),
	}
	f.up = ClusterClients{Dynamic: f.upDyn, Metadata: metadatafake.NewSimpleMetadataClient(scheme), Discovery: disc()}
	f.down = ClusterClients{Dynamic: f.downDyn, Metadata: metadatafake.NewSimpleMetadataClient(scheme), Discovery: disc()}
	return f
}

// runEngine runs e until the test ends (then requires a clean stop) and waits until it
// is ready; it returns the engine's context.
func runEngine(t *testing.T, e *Engine) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case <-e.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("engine stopped early: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("engine not ready")
	}
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return ctx
}

type recordingController struct {
	mu   sync.Mutex
	keys []queue.Key
}

func (c *recordingController) Name() string { return "recorder" }
func (c *recordingController) Workers() int { return 2 }
func (c *recordingController) Reconcile(_ context.Context, k queue.Key) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, k)
	return nil
}

func (c *recordingController) seen() []queue.Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]queue.Key(nil), c.keys...)
}

func config() Config {
	return Config{SyncTargetName: stName, SyncTargetUID: stUID, FromCluster: cluster, IncompatibleRetryInterval: 20 * time.Millisecond}
}

func TestRunRefusesAnotherSyncTargetUID(t *testing.T) {
	f := newFixture(t, syncTarget("other"))
	e, err := New(config(), f.up, f.down)
	require.NoError(t, err)
	err = e.Run(context.Background())
	require.Error(t, err)
	var mm *identity.UIDMismatchError
	require.ErrorAs(t, err, &mm)
	assert.Contains(t, err.Error(), `"st-uid"`)
	assert.Contains(t, err.Error(), `"other-uid"`)
}

func TestRunFailsWithoutSyncTarget(t *testing.T) {
	f := newFixture(t, unstr("v1", "ConfigMap", "x", "unrelated", nil))
	e, err := New(config(), f.up, f.down)
	require.NoError(t, err)
	require.ErrorContains(t, e.Run(context.Background()), "get sync target root:org|kind")
}

func TestNewValidatesConfig(t *testing.T) {
	_, err := New(Config{SyncTargetUID: "u"}, ClusterClients{}, ClusterClients{})
	require.ErrorContains(t, err, "name is required")
	_, err = New(Config{SyncTargetName: "n"}, ClusterClients{}, ClusterClients{})
	require.ErrorContains(t, err, "UID is required")
	_, err = New(Config{SyncTargetName: "n", SyncTargetUID: "u", Resources: []string{"pods/log"}}, ClusterClients{}, ClusterClients{})
	require.ErrorContains(t, err, "--resources")
}

func TestEngineDeliversOwnObjectsAndFollowsSyncedResources(t *testing.T) {
	target := identity.NewTarget(cluster, stName, stUID)
	other := identity.NewTarget(cluster, "other", "x")
	mine := unstr("v1", "ConfigMap", "ns", "mine", map[string]string{target.StateLabel(): "Sync"})
	theirs := unstr("v1", "ConfigMap", "ns", "theirs", map[string]string{other.StateLabel(): "Sync"})
	f := newFixture(t, syncTarget(""), mine, theirs)

	reg := prometheus.NewRegistry()
	cfg := config()
	cfg.Registry = reg
	e, err := New(cfg, f.up, f.down)
	require.NoError(t, err)
	rec := &recordingController{}
	_, err = e.Register(rec, Watch{Side: informers.Upstream, Direction: queue.Down}, Watch{Side: informers.Downstream, Direction: queue.Up})
	require.NoError(t, err)

	ctx := runEngine(t, e)
	_, err = e.Register(&recordingController{}, Watch{Side: informers.Upstream})
	require.Error(t, err, "registering after Run fails")
	require.Error(t, e.Run(ctx), "Run twice fails")

	wantKey := queue.Key{Direction: queue.Down, GVR: configmaps, Cluster: cluster, Namespace: "ns", Name: "mine"}
	require.Eventually(t, func() bool { return len(rec.seen()) > 0 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []queue.Key{wantKey}, rec.seen(), "only the object labelled for this target arrives")

	// The status now lists the configured resources as Accepted.
	st, err := f.upDyn.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, stName, metav1.GetOptions{})
	require.NoError(t, err)
	synced, _, _ := unstructured.NestedSlice(st.Object, "status", "syncedResources")
	assert.Len(t, synced, 3)
	conds, _, _ := unstructured.NestedSlice(st.Object, "status", "conditions")
	require.Len(t, conds, 1)
	assert.Equal(t, "ResourcesCompatible", conds[0].(map[string]any)["type"])

	// An Accepted entry for a new resource starts its informers at run time.
	widgetsUp := informers.ID{Side: informers.Upstream, GVR: widgets}
	_, running := e.Informers().Informer(widgetsUp)
	require.False(t, running)
	synced = append(synced, map[string]any{"group": "example.com", "resource": "widgets", "versions": []any{"v1"}, "state": "Accepted"})
	require.NoError(t, unstructured.SetNestedSlice(st.Object, synced, "status", "syncedResources"))
	_, err = f.upDyn.Resource(workloadv1alpha1.SyncTargetsResource).UpdateStatus(ctx, st, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, ok := e.Informers().Informer(widgetsUp)
		return ok
	}, 5*time.Second, 5*time.Millisecond, "widgets informer should start after the syncedResources change")

	// A new widget for this target reaches the controller through the new informer.
	w := unstr("example.com/v1", "Widget", "ns", "w1", map[string]string{target.StateLabel(): "Sync"})
	_, err = f.upDyn.Resource(widgets).Namespace("ns").Create(ctx, w, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, k := range rec.seen() {
			if k.GVR == widgets && k.Name == "w1" {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)

	snap := e.Snapshot()
	assert.Equal(t, "root:org|kind", snap.Target)
	var cm bool
	for _, r := range snap.Resources {
		if r.GVR == configmaps {
			cm = true
			assert.True(t, r.UpstreamSynced)
			assert.Equal(t, 1, r.UpstreamObjects)
			assert.Equal(t, int64(1), r.ReconcilesOK)
		}
	}
	assert.True(t, cm)
	assert.Len(t, e.Resources().Accepted(), 4)
	n, err := reg.Gather()
	require.NoError(t, err)
	assert.NotEmpty(t, n)
}

func TestDefaultKeysMapsDownstreamObjectsThroughTheirNamespace(t *testing.T) {
	f := newFixture(t, syncTarget(""))
	e, err := New(config(), f.up, f.down)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target := e.Target()
	loc, err := target.Locator("lc", "team-a").JSON()
	require.NoError(t, err)
	_, err = f.down.Metadata.Resource(informers.NamespacesGVR).(metadatafake.MetadataClient).CreateFake(&metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: "kcp-xyz", Labels: target.DownstreamLabels(), Annotations: map[string]string{identity.NamespaceLocatorAnnotation: loc}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	id := informers.ID{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true}
	_, err = e.Informers().Start(ctx, id)
	require.NoError(t, err)
	require.True(t, e.Informers().WaitForSync(ctx, id))

	keys := e.DefaultKeys(queue.Up, informers.ID{Side: informers.Downstream, GVR: configmaps})
	assert.Equal(t, []queue.Key{{Direction: queue.Up, GVR: configmaps, Cluster: "lc", Namespace: "team-a", Name: "cm"}},
		keys(&metav1.ObjectMeta{Namespace: "kcp-xyz", Name: "cm"}))
	assert.Empty(t, keys(&metav1.ObjectMeta{Namespace: "not-ours", Name: "cm"}))
	assert.Equal(t, []queue.Key{{Direction: queue.Up, GVR: configmaps, Cluster: cluster, Name: "cluster-scoped"}},
		keys(&metav1.ObjectMeta{Name: "cluster-scoped"}))
}

func TestMetadataOnlySideRunsMetadataInformers(t *testing.T) {
	f := newFixture(t, syncTarget(""))
	cfg := config()
	cfg.MetadataOnly = []informers.Side{informers.Upstream}
	e, err := New(cfg, f.up, f.down)
	require.NoError(t, err)
	rec := &recordingController{}
	_, err = e.Register(rec, Watch{Side: informers.Upstream, Direction: queue.Up})
	require.NoError(t, err)

	runEngine(t, e)

	id := e.SetInformer(informers.Upstream, configmaps)
	assert.True(t, id.MetadataOnly)
	_, ok := e.Informers().Informer(id)
	assert.True(t, ok, "metadata-only informer runs upstream")
	_, ok = e.Informers().Informer(informers.ID{Side: informers.Upstream, GVR: configmaps})
	assert.False(t, ok, "no full informer upstream")
	assert.False(t, e.SetInformer(informers.Downstream, configmaps).MetadataOnly)

	_, err = f.up.Metadata.Resource(configmaps).Namespace("ns").(metadatafake.MetadataClient).CreateFake(&metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "meta", Labels: map[string]string{e.Target().StateLabel(): "Sync"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, k := range rec.seen() {
			if k.Name == "meta" && k.GVR == configmaps {
				return true
			}
		}
		return false
	}, 5*time.Second, 5*time.Millisecond, "events of metadata-only informers reach the controller")
}

// watchOptions records whether a watch asked for WatchList (sendInitialEvents).
type watchOptions struct {
	dynamic.Interface
	watchList atomic.Bool
}

func (w *watchOptions) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return watchOptionsResource{w.Interface.Resource(gvr), w}
}

type watchOptionsResource struct {
	dynamic.NamespaceableResourceInterface
	w *watchOptions
}

func (r watchOptionsResource) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	if o.SendInitialEvents != nil {
		r.w.watchList.Store(true)
	}
	return r.NamespaceableResourceInterface.Watch(ctx, o)
}

func TestSyncTargetInformerNeverUsesWatchList(t *testing.T) {
	client := &watchOptions{Interface: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds(), syncTarget(""))}
	inf := newSyncTargetInformer(client.Resource(workloadv1alpha1.SyncTargetsResource), stName)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go inf.RunWithContext(ctx)
	require.True(t, cache.WaitForCacheSync(ctx.Done(), inf.HasSynced), "sync target informer syncs")
	_, ok, err := inf.GetStore().GetByKey(stName)
	require.NoError(t, err)
	assert.True(t, ok, "the SyncTarget is cached under its plain name")
	assert.False(t, client.watchList.Load(), "kcp v0.11 answers WatchList with 422")
}

func TestTheSyncTargetKeyComesFromTheSyncTargetsOwnCluster(t *testing.T) {
	annotated := func(cluster string) *unstructured.Unstructured {
		st := syncTarget("")
		if cluster != "" {
			st.SetAnnotations(map[string]string{identity.LogicalClusterAnnotation: cluster})
		}
		return st
	}
	tests := []struct {
		name              string
		stCluster         string // the SyncTarget's kcp.io/cluster annotation
		syncTargetCluster string // Config.SyncTargetCluster
		wantKey           string
		wantErr           string
	}{
		{name: "no annotation: --from-cluster", wantKey: identity.SyncTargetKey(cluster, stName)},
		{name: "annotation passed on", stCluster: "root:org:ws", syncTargetCluster: "root:org:ws",
			wantKey: identity.SyncTargetKey("root:org:ws", stName)},
		{name: "annotation equal to --from-cluster", stCluster: cluster, wantKey: identity.SyncTargetKey(cluster, stName)},
		{name: "annotation not passed on", stCluster: "root:org:ws", wantKey: identity.SyncTargetKey(cluster, stName),
			wantErr: `lives in logical cluster "root:org:ws"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, annotated(tt.stCluster))
			cfg := config()
			cfg.SyncTargetCluster = tt.syncTargetCluster
			e, err := New(cfg, f.up, f.down)
			require.NoError(t, err)
			assert.Equal(t, tt.wantKey, e.Target().Key)
			// Run until the engine is ready (a bound for a loaded machine, not a timing).
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go func() {
				select {
				case <-e.Ready():
					cancel()
				case <-ctx.Done():
				}
			}()
			err = e.Run(ctx)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
		})
	}
}

func TestWatchSkipUpdateDropsTheUpdatesItSelects(t *testing.T) {
	target := identity.NewTarget(cluster, stName, stUID)
	mine := unstr("v1", "ConfigMap", "ns", "mine", map[string]string{target.StateLabel(): "Sync"})
	mine.SetResourceVersion("1")
	f := newFixture(t, syncTarget(""), mine)
	e, err := New(config(), f.up, f.down)
	require.NoError(t, err)
	rec := &recordingController{}
	var mu sync.Mutex
	var asked []informers.ID
	_, err = e.Register(rec, Watch{Side: informers.Upstream, Direction: queue.Down, SkipUpdate: func(id informers.ID, _, _ any) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, id)
		return true
	}})
	require.NoError(t, err)
	ctx := runEngine(t, e)
	require.Eventually(t, func() bool { return len(rec.seen()) == 1 }, 10*time.Second, 5*time.Millisecond, "the add passes")

	mine.Object["data"] = map[string]any{"k": "v"}
	mine.SetResourceVersion("2") // the fake client keeps what it is given
	_, err = f.upDyn.Resource(configmaps).Namespace("ns").Update(ctx, mine, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(asked) == 1
	}, 5*time.Second, 5*time.Millisecond, "the update is offered to SkipUpdate")
	mu.Lock()
	assert.Equal(t, informers.ID{Side: informers.Upstream, GVR: configmaps}, asked[0], "with the informer's ID")
	mu.Unlock()
	// SkipUpdate runs in the handler before the key is queued: none was.
	assert.Len(t, rec.seen(), 1, "the skipped update is not reconciled")
}

func TestSkippingUpdatesPassesAddsDeletesAndOtherUpdates(t *testing.T) {
	var adds, updates, deletes int
	h := skippingUpdates{cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { adds++ },
		UpdateFunc: func(_, _ any) { updates++ },
		DeleteFunc: func(any) { deletes++ },
	}, func(oldObj, _ any) bool { return oldObj == "skip" }}
	h.OnAdd("a", false)
	h.OnUpdate("skip", "b")
	h.OnUpdate("keep", "b")
	h.OnDelete("c")
	assert.Equal(t, []int{1, 1, 1}, []int{adds, updates, deletes})
}

func TestSkippingAddsPassesUpdatesAndDeletes(t *testing.T) {
	var adds, updates, deletes int
	h := skippingAdds{skippingUpdates{cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { adds++ },
		UpdateFunc: func(_, _ any) { updates++ },
		DeleteFunc: func(any) { deletes++ },
	}, func(oldObj, _ any) bool { return oldObj == "skip" }}}
	h.OnAdd("a", true)
	h.OnAdd("a", false)
	h.OnUpdate("skip", "b")
	h.OnUpdate("keep", "b")
	h.OnDelete("c")
	assert.Equal(t, []int{0, 1, 1}, []int{adds, updates, deletes}, "adds dropped, the update filter still applies")
}

func TestWatchSkipAddsDropsTheAddsOfTheInformersItSelects(t *testing.T) {
	target := identity.NewTarget(cluster, stName, stUID)
	mine := unstr("v1", "ConfigMap", "ns", "mine", map[string]string{target.StateLabel(): "Sync"})
	mine.SetResourceVersion("1")
	f := newFixture(t, syncTarget(""), mine)
	e, err := New(config(), f.up, f.down)
	require.NoError(t, err)
	rec := &recordingController{}
	_, err = e.Register(rec, Watch{Side: informers.Upstream, Direction: queue.Down, SkipAdds: func(id informers.ID) bool {
		return id.GVR == configmaps
	}})
	require.NoError(t, err)
	ctx := runEngine(t, e)
	second := unstr("v1", "ConfigMap", "ns", "second", map[string]string{target.StateLabel(): "Sync"})
	_, err = f.upDyn.Resource(configmaps).Namespace("ns").Create(ctx, second, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.upDyn.Resource(configmaps).Namespace("ns").Delete(ctx, "second", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return len(rec.seen()) > 0 }, 10*time.Second, 5*time.Millisecond, "the delete passes")
	names := []string{}
	for _, k := range rec.seen() {
		names = append(names, k.Name)
	}
	assert.Equal(t, []string{"second"}, slices.Compact(names), "neither the listed nor the created object's add was reconciled, only the delete")
}
