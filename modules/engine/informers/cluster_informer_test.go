package informers

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

const timeout = 5 * time.Second

// fakeLW serves a fixed list and hands every watch to the test. It fails the test when
// a request asks for WatchList (sendInitialEvents), unless allowWatchList is set.
type fakeLW struct {
	t              *testing.T
	items          []unstructured.Unstructured
	allowWatchList bool
	lists          atomic.Int32
	watchList      atomic.Bool
	watchers       chan *watch.RaceFreeFakeWatcher
}

func newFakeLW(t *testing.T, objs ...*unstructured.Unstructured) *fakeLW {
	f := &fakeLW{t: t, watchers: make(chan *watch.RaceFreeFakeWatcher, 10)}
	for _, o := range objs {
		f.items = append(f.items, *o)
	}
	return f
}

func (f *fakeLW) listWatch() *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(_ context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f.lists.Add(1)
			list := &unstructured.UnstructuredList{Items: f.items}
			list.SetAPIVersion("v1")
			list.SetKind("ConfigMapList")
			list.SetResourceVersion("10")
			return list, nil
		},
		WatchFuncWithContext: func(_ context.Context, o metav1.ListOptions) (watch.Interface, error) {
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				f.watchList.Store(true)
				if !f.allowWatchList {
					f.t.Errorf("watch with sendInitialEvents=true (WatchList): kcp v0.11 answers 422")
				}
				return nil, errors.New("422: sendInitialEvents is not supported")
			}
			w := watch.NewRaceFreeFake()
			f.watchers <- w
			return w, nil
		},
	}
}

// watcher returns the watch the informer opened after its list.
func (f *fakeLW) watcher(t *testing.T) *watch.RaceFreeFakeWatcher {
	t.Helper()
	select {
	case w := <-f.watchers:
		return w
	case <-time.After(timeout):
		t.Fatal("informer opened no watch")
		return nil
	}
}

func cm(cluster, ns, name, rv string) *unstructured.Unstructured {
	u := object("ConfigMap", ns, name, nil, nil)
	if cluster != "" {
		u.SetAnnotations(map[string]string{identity.LogicalClusterAnnotation: cluster})
	}
	u.SetResourceVersion(rv)
	u.SetUID(types.UID("uid-" + cluster + "-" + ns + "-" + name))
	return u
}

// events records what a handler was told, as "add a|ns/cm" etc., in order.
type events struct {
	mu   sync.Mutex
	got  []string
	gate chan struct{} // when set, OnAdd waits for it to close
}

func (e *events) record(op string, obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m := obj.(metav1.Object)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, op+" "+StoreKey(identity.LogicalCluster(m, "root"), m.GetNamespace(), m.GetName())+"@"+m.GetResourceVersion())
}

func (e *events) OnAdd(obj any, initial bool) {
	if e.gate != nil {
		<-e.gate
	}
	op := "add"
	if initial {
		op = "initial"
	}
	e.record(op, obj)
}
func (e *events) OnUpdate(_, obj any) { e.record("update", obj) }
func (e *events) OnDelete(obj any)    { e.record("delete", obj) }

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

func (e *events) sorted() []string {
	out := e.list()
	sort.Strings(out)
	return out
}

func run(t *testing.T, inf cache.SharedIndexInformer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.RunWithContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func newTestInformer(lw cache.ListerWatcher) cache.SharedIndexInformer {
	return NewClusterInformer(lw, &unstructured.Unstructured{}, ClusterInformerOptions{
		FromCluster: "root", Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, Description: "configmaps",
	})
}

func TestSameNamespaceAndNameInTwoClustersNeverCollide(t *testing.T) {
	lw := newFakeLW(t, cm("a", "ns", "cm", "1"), cm("b", "ns", "cm", "2"), cm("", "ns", "cm", "3"))
	inf := newTestInformer(WithoutWatchList(lw.listWatch()))
	h := &events{}
	reg, err := inf.AddEventHandler(h)
	require.NoError(t, err)
	run(t, inf)
	w := lw.watcher(t)
	// The informer's HasSynced says the cache is filled; the registration's says this
	// handler has seen the initial list too.
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced, reg.HasSynced))

	assert.ElementsMatch(t, []string{"a|ns/cm", "b|ns/cm", "root|ns/cm"}, inf.GetStore().ListKeys(),
		"one entry per logical cluster; no annotation means --from-cluster")
	assert.Equal(t, []string{"initial a|ns/cm@1", "initial b|ns/cm@2", "initial root|ns/cm@3"}, h.sorted())
	inNS, err := inf.GetIndexer().ByIndex(cache.NamespaceIndex, "ns")
	require.NoError(t, err)
	assert.Len(t, inNS, 3, "the namespace index spans clusters")

	steps := []struct {
		name  string
		event func()
		want  string // the handler's next event
		keys  []string
		check func(t *testing.T)
	}{
		{
			name: "update in b leaves a alone", event: func() { w.Modify(cm("b", "ns", "cm", "11")) },
			want: "update b|ns/cm@11", keys: []string{"a|ns/cm", "b|ns/cm", "root|ns/cm"},
			check: func(t *testing.T) {
				a, ok, err := inf.GetStore().GetByKey(StoreKey("a", "ns", "cm"))
				require.NoError(t, err)
				require.True(t, ok)
				assert.Equal(t, "1", a.(metav1.Object).GetResourceVersion())
				b, _, _ := inf.GetStore().GetByKey(StoreKey("b", "ns", "cm"))
				assert.Equal(t, "11", b.(metav1.Object).GetResourceVersion())
			},
		},
		{
			name: "delete in a leaves b", event: func() { w.Delete(cm("a", "ns", "cm", "12")) },
			want: "delete a|ns/cm@12", keys: []string{"b|ns/cm", "root|ns/cm"},
		},
		{
			name: "add in a again", event: func() { w.Add(cm("a", "ns", "cm", "13")) },
			want: "add a|ns/cm@13", keys: []string{"a|ns/cm", "b|ns/cm", "root|ns/cm"},
		},
		{
			name: "cluster-scoped key has no slash", event: func() { w.Add(cm("a", "", "global", "14")) },
			want: "add a|global@14", keys: []string{"a|global", "a|ns/cm", "b|ns/cm", "root|ns/cm"},
		},
	}
	seen := len(h.list())
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.event()
			require.Eventually(t, func() bool { return len(h.list()) > seen }, timeout, time.Millisecond, "handler heard nothing")
			got := h.list()
			assert.Equal(t, []string{s.want}, got[seen:])
			seen = len(got)
			assert.ElementsMatch(t, s.keys, inf.GetStore().ListKeys())
			if s.check != nil {
				s.check(t)
			}
		})
	}
}

func TestUnchangedResourceVersionIsNotAnUpdate(t *testing.T) {
	lw := newFakeLW(t, cm("a", "ns", "cm", "1"))
	inf := newTestInformer(WithoutWatchList(lw.listWatch()))
	h := &events{}
	_, err := inf.AddEventHandler(h)
	require.NoError(t, err)
	run(t, inf)
	w := lw.watcher(t)
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced))

	w.Modify(cm("a", "ns", "cm", "1")) // a relist of an unchanged object looks like this
	w.Modify(cm("a", "ns", "cm", "2"))
	require.Eventually(t, func() bool { return len(h.list()) == 2 }, timeout, time.Millisecond)
	assert.Equal(t, []string{"initial a|ns/cm@1", "update a|ns/cm@2"}, h.list())
}

func TestLateHandlerGetsTheReplayAndItsOwnHasSynced(t *testing.T) {
	lw := newFakeLW(t, cm("a", "ns", "cm", "1"), cm("b", "ns", "cm", "2"))
	inf := newTestInformer(WithoutWatchList(lw.listWatch()))
	assert.False(t, inf.HasSynced(), "not synced before it runs")
	run(t, inf)
	w := lw.watcher(t)
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced))

	late := &events{gate: make(chan struct{})}
	reg, err := inf.AddEventHandler(late)
	require.NoError(t, err)
	w.Modify(cm("b", "ns", "cm", "3"))
	// The informer has synced but this handler has not seen the replay yet.
	assert.True(t, inf.HasSynced())
	assert.Never(t, reg.HasSynced, 50*time.Millisecond, time.Millisecond, "registration synced before its handler saw the replay")
	close(late.gate)
	require.Eventually(t, reg.HasSynced, timeout, time.Millisecond)
	require.Eventually(t, func() bool { return len(late.list()) == 3 }, timeout, time.Millisecond)
	assert.ElementsMatch(t, []string{"initial a|ns/cm@1", "initial b|ns/cm@2"}, late.list()[:2], "the replay comes first, as initial adds")
	assert.Equal(t, "update b|ns/cm@3", late.list()[2])
	select {
	case <-reg.HasSyncedChecker().Done():
	default:
		t.Error("HasSyncedChecker not done")
	}

	require.NoError(t, inf.RemoveEventHandler(reg))
	w.Add(cm("c", "ns", "cm", "4"))
	require.Eventually(t, func() bool { return len(inf.GetStore().ListKeys()) == 3 }, timeout, time.Millisecond)
	assert.Len(t, late.list(), 3, "a removed handler hears nothing more")
}

func TestEarlyHandlerHasSyncedAfterTheInitialList(t *testing.T) {
	lw := newFakeLW(t, cm("a", "ns", "cm", "1"))
	inf := newTestInformer(WithoutWatchList(lw.listWatch()))
	h := &events{gate: make(chan struct{})}
	reg, err := inf.AddEventHandler(h)
	require.NoError(t, err)
	run(t, inf)
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced))
	assert.False(t, reg.HasSynced(), "the handler is still on its first add")
	close(h.gate)
	require.Eventually(t, reg.HasSynced, timeout, time.Millisecond)
	assert.Equal(t, []string{"initial a|ns/cm@1"}, h.list())
}

func TestWatchListIsNeverUsedUpstream(t *testing.T) {
	tests := map[string]struct {
		wrap          bool
		wantWatchList bool
	}{
		"WithoutWatchList: list, then watch": {wrap: true},
		// Proves the fake notices WatchList: client-go uses it by default.
		"plain ListWatch uses WatchList": {wrap: false, wantWatchList: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			lw := newFakeLW(t, cm("a", "ns", "cm", "1"))
			lw.allowWatchList = tc.wantWatchList
			var l cache.ListerWatcher = lw.listWatch()
			if tc.wrap {
				l = WithoutWatchList(lw.listWatch())
			}
			inf := newTestInformer(l)
			run(t, inf)
			if tc.wantWatchList {
				require.Eventually(t, lw.watchList.Load, timeout, time.Millisecond)
				return
			}
			lw.watcher(t)
			require.True(t, cache.WaitForCacheSync(t.Context().Done(), inf.HasSynced))
			assert.False(t, lw.watchList.Load())
			assert.Equal(t, int32(1), lw.lists.Load())
		})
	}
}

func TestClusterInformerLifecycle(t *testing.T) {
	lw := newFakeLW(t, cm("a", "ns", "cm", "1"))
	inf := newTestInformer(WithoutWatchList(lw.listWatch()))
	require.NoError(t, inf.AddIndexers(cache.Indexers{"by-name": func(obj any) ([]string, error) {
		return []string{obj.(metav1.Object).GetName()}, nil
	}}))
	require.NoError(t, inf.SetTransform(func(obj any) (any, error) {
		u := obj.(*unstructured.Unstructured).DeepCopy()
		u.SetLabels(map[string]string{"transformed": "yes"})
		return u, nil
	}))
	var watchErrors atomic.Int32
	require.NoError(t, inf.SetWatchErrorHandler(func(*cache.Reflector, error) { watchErrors.Add(1) }))
	assert.Empty(t, inf.LastSyncResourceVersion())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.GetController().RunWithContext(ctx)
	}()
	lw.watcher(t)
	require.True(t, cache.WaitForCacheSync(ctx.Done(), inf.GetController().HasSynced))
	assert.Equal(t, "10", inf.LastSyncResourceVersion())
	byName, err := inf.GetIndexer().ByIndex("by-name", "cm")
	require.NoError(t, err)
	require.Len(t, byName, 1)
	assert.Equal(t, "yes", byName[0].(metav1.Object).GetLabels()["transformed"])

	for name, err := range map[string]error{
		"AddIndexers":               inf.AddIndexers(cache.Indexers{"x": cache.MetaNamespaceIndexFunc}),
		"SetTransform":              inf.SetTransform(nil),
		"SetWatchErrorHandler":      inf.SetWatchErrorHandler(nil),
		"SetWatchErrorHandlerWithC": inf.SetWatchErrorHandlerWithContext(nil),
	} {
		require.Error(t, err, "%s after start", name)
	}
	inf.Run(ctx.Done()) // a second run returns at once

	assert.False(t, inf.IsStopped())
	cancel()
	<-done
	assert.True(t, inf.IsStopped())
	_, err = inf.AddEventHandlerWithResyncPeriod(&events{}, time.Minute)
	require.Error(t, err, "no handler on a stopped informer")
	require.Error(t, inf.RemoveEventHandler(nil))
	assert.Zero(t, watchErrors.Load())
}

func TestClusterListerGetsFromClusterAndListsAll(t *testing.T) {
	store := cache.NewIndexer(StoreKeyFunc("root"), cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range []*unstructured.Unstructured{cm("a", "ns", "cm", "1"), cm("", "ns", "cm", "2"), cm("", "", "global", "3")} {
		require.NoError(t, store.Add(o))
	}
	l := clusterLister{indexer: store, gr: configmaps.GroupResource(), cluster: "root"}
	all, err := l.List(labels.Everything())
	require.NoError(t, err)
	assert.Len(t, all, 3)
	inNS, err := l.ByNamespace("ns").List(labels.Everything())
	require.NoError(t, err)
	assert.Len(t, inNS, 2)
	got, err := l.ByNamespace("ns").Get("cm")
	require.NoError(t, err)
	assert.Equal(t, "2", got.(metav1.Object).GetResourceVersion(), "Get reads --from-cluster")
	_, err = l.Get("global")
	require.NoError(t, err)
	_, err = l.ByNamespace("other").Get("cm")
	assert.True(t, apierrors.IsNotFound(err), "%v", err)
}

func TestStoreKey(t *testing.T) {
	tests := map[string]struct {
		obj  any
		want string
	}{
		"annotated namespaced":      {obj: cm("root:org:ws", "ns", "cm", "1"), want: "root:org:ws|ns/cm"},
		"unannotated: from-cluster": {obj: cm("", "ns", "cm", "1"), want: "root|ns/cm"},
		"cluster-scoped":            {obj: cm("a", "", "n", "1"), want: "a|n"},
		"metadata-only": {obj: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Name: "default", Annotations: map[string]string{identity.LogicalClusterAnnotation: "root:b"}}}, want: "root:b|default"},
		"metadata-only unannotated": {obj: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "n"}}, want: "root|ns/n"},
		"empty annotation":          {obj: object("ConfigMap", "ns", "n", nil, map[string]string{identity.LogicalClusterAnnotation: ""}), want: "root|ns/n"},
		"tombstone keeps its key":   {obj: cache.DeletedFinalStateUnknown{Key: "x|y/z"}, want: "x|y/z"},
		"explicit key":              {obj: cache.ExplicitKey("a|b"), want: "a|b"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := StoreKeyFunc("root")(tc.obj)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := StoreKeyFunc("root")(42)
	assert.Error(t, err)
}

func TestResyncRedeliversUnchangedObjects(t *testing.T) {
	lw := newFakeLW(t, cm("a", "ns", "cm", "1"))
	inf := NewClusterInformer(WithoutWatchList(lw.listWatch()), &unstructured.Unstructured{}, ClusterInformerOptions{
		FromCluster: "root", ResyncPeriod: 20 * time.Millisecond, Description: "configmaps",
	})
	h := &events{}
	_, err := inf.AddEventHandler(h)
	require.NoError(t, err)
	run(t, inf)
	require.Eventually(t, func() bool { return len(h.list()) >= 2 }, timeout, time.Millisecond, "a resync reaches the handler")
	assert.Equal(t, []string{"initial a|ns/cm@1", "update a|ns/cm@1"}, h.list()[:2])
}
