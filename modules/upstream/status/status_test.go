package status

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
	"github.com/tmc-syncer/syncer/modules/upstream/metrics"
)

var (
	widgets = schema.GroupVersionResource{Group: "test.tmc.dev", Version: "v1", Resource: "widgets"}
	tctx    = transformation.Context{SyncTargetKey: "k1", SyncTargetName: "phys", SyncTargetUID: "st-uid", LogicalCluster: "root:org"}
)

func downstreamNS(t *testing.T, ns string) string {
	t.Helper()
	up := &unstructured.Unstructured{}
	up.SetNamespace(ns)
	name, err := namespace.DownstreamName(tctx.Locator(up))
	require.NoError(t, err)
	return name
}

func upstreamWidget(labels map[string]string, status map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "test.tmc.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w", "namespace": "team-a", "uid": "up-uid", "resourceVersion": "5"},
		"spec":     map[string]any{"size": int64(1)},
	}}
	if labels == nil {
		labels = map[string]string{kcp.StateLabel("k1"): kcp.StateSync}
	}
	u.SetLabels(labels)
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

func downstreamWidget(t *testing.T, ownerUID string, status map[string]any) *unstructured.Unstructured {
	d := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "test.tmc.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w", "namespace": downstreamNS(t, "team-a"), "uid": "down-uid"},
	}}
	d.SetLabels(map[string]string{identity.DownstreamClusterLabel: "k1"})
	d.SetAnnotations(ownership.Owner{Cluster: "root:org", Namespace: "team-a", Name: "w", UID: ownerUID}.Annotations())
	if status != nil {
		d.Object["status"] = status
	}
	return d
}

// fakeInformers serves objects from maps, as the informer caches would.
type fakeInformers struct {
	up, down map[string]*unstructured.Unstructured
	err      error
}

func (f *fakeInformers) Start(context.Context, informers.ID) (cache.SharedIndexInformer, error) {
	return nil, errors.New("not in unit tests")
}

func (f *fakeInformers) WaitForSyncOrNotServed(context.Context, ...informers.ID) bool { return true }

// Get keys upstream objects by logical cluster as the engine's caches do.
func (f *fakeInformers) Get(id informers.ID, cluster, namespace, name string) (metav1.Object, bool, error) {
	if f.err != nil {
		return nil, false, f.err
	}
	m, k := f.down, namespace+"/"+name
	if id.Side == informers.Upstream {
		m, k = f.up, informers.StoreKey(cluster, namespace, name)
	}
	o, ok := m[k]
	if !ok {
		return nil, false, nil
	}
	return o, true, nil
}

func newTestController(t *testing.T, up, down *unstructured.Unstructured, objects ...runtime.Object) (*Controller, *dynamicfake.FakeDynamicClient, *prometheus.Registry) {
	t.Helper()
	scheme := runtime.NewScheme()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{widgets: "WidgetList"}, objects...)
	inf := &fakeInformers{up: map[string]*unstructured.Unstructured{}, down: map[string]*unstructured.Unstructured{}}
	if up != nil {
		inf.up[informers.StoreKey(identity.LogicalCluster(up, tctx.LogicalCluster), up.GetNamespace(), up.GetName())] = up
	}
	if down != nil {
		inf.down[down.GetNamespace()+"/"+down.GetName()] = down
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	require.NoError(t, err)
	c, err := New(Config{Resources: []schema.GroupVersionResource{widgets}, Informers: inf, Upstream: client,
		Transformer: transformation.NewPipeline(), Context: tctx, Metrics: m})
	require.NoError(t, err)
	return c, client, reg
}

var key = queue.Key{Direction: queue.Up, GVR: widgets, Cluster: "root:org", Namespace: "team-a", Name: "w"}

func writes(client *dynamicfake.FakeDynamicClient) []clienttesting.Action {
	var out []clienttesting.Action
	for _, a := range client.Actions() {
		if a.GetVerb() == "update" || a.GetVerb() == "patch" {
			out = append(out, a)
		}
	}
	return out
}

func TestReconcileDecisions(t *testing.T) {
	deleting := upstreamWidget(nil, nil)
	deleting.SetDeletionTimestamp(&metav1.Time{Time: time.Now()})
	notOurs := downstreamWidget(t, "up-uid", map[string]any{"ready": true})
	notOurs.SetAnnotations(nil)
	otherKey := downstreamWidget(t, "up-uid", map[string]any{"ready": true})
	otherKey.SetAnnotations(ownership.Owner{Cluster: "root:org", Namespace: "team-b", Name: "w", UID: "up-uid"}.Annotations())
	otherCluster := downstreamWidget(t, "up-uid", map[string]any{"ready": true})
	otherCluster.SetAnnotations(ownership.Owner{Cluster: "root:other", Namespace: "team-a", Name: "w", UID: "up-uid"}.Annotations())
	upInOtherCluster := upstreamWidget(nil, nil)
	upInOtherCluster.SetAnnotations(map[string]string{identity.LogicalClusterAnnotation: "root:other"})

	tests := []struct {
		name       string
		up, down   *unstructured.Unstructured
		wantVerb   string
		wantStatus map[string]any
		wantAnn    *string
	}{
		{name: "single target: status copied", up: upstreamWidget(nil, nil), down: downstreamWidget(t, "up-uid", map[string]any{"ready": true}),
			wantVerb: "update", wantStatus: map[string]any{"ready": true}},
		{name: "unchanged: no write", up: upstreamWidget(nil, map[string]any{"ready": true}), down: downstreamWidget(t, "up-uid", map[string]any{"ready": true})},
		{name: "being deleted upstream", up: deleting, down: downstreamWidget(t, "up-uid", map[string]any{"ready": true})},
		{name: "downstream of a re-created upstream object", up: upstreamWidget(nil, nil), down: downstreamWidget(t, "older-uid", map[string]any{"ready": true})},
		{name: "downstream not ours", up: upstreamWidget(nil, nil), down: notOurs},
		{name: "downstream of another upstream object", up: upstreamWidget(nil, nil), down: otherKey},
		{name: "downstream of the same namespace/name in another logical cluster", up: upstreamWidget(nil, nil), down: otherCluster},
		{name: "upstream object only in another logical cluster", up: upInOtherCluster, down: downstreamWidget(t, "up-uid", map[string]any{"ready": true})},
		{name: "no upstream object", down: downstreamWidget(t, "up-uid", map[string]any{"ready": true})},
		{name: "no downstream object", up: upstreamWidget(nil, nil)},
		{name: "pending assignment", up: upstreamWidget(map[string]string{kcp.StateLabel("k1"): ""}, nil), down: downstreamWidget(t, "up-uid", map[string]any{"ready": true})},
		{name: "multi-target: annotation", up: upstreamWidget(map[string]string{kcp.StateLabel("k1"): "Sync", kcp.StateLabel("k2"): "Sync"}, nil),
			down: downstreamWidget(t, "up-uid", map[string]any{"ready": true}), wantVerb: "patch", wantAnn: ptr(`{"ready":true}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []runtime.Object
			if tt.up != nil {
				objs = append(objs, tt.up.DeepCopy())
			}
			c, client, _ := newTestController(t, tt.up, tt.down, objs...)
			var before *unstructured.Unstructured
			if tt.up != nil {
				before = tt.up.DeepCopy()
			}
			require.NoError(t, c.Reconcile(context.Background(), key))
			if tt.up != nil {
				assert.Equal(t, before, tt.up, "the cached object is never mutated")
			}
			w := writes(client)
			if tt.wantVerb == "" {
				assert.Empty(t, w)
				return
			}
			require.Len(t, w, 1)
			assert.Equal(t, tt.wantVerb, w[0].GetVerb())
			got, err := client.Resource(widgets).Namespace("team-a").Get(context.Background(), "w", metav1.GetOptions{})
			require.NoError(t, err)
			if tt.wantStatus != nil {
				assert.Equal(t, "status", w[0].GetSubresource())
				assert.Equal(t, tt.wantStatus, got.Object["status"])
			}
			if tt.wantAnn != nil {
				assert.Equal(t, *tt.wantAnn, got.GetAnnotations()[kcp.StatusAnnotation("k1")])
				assert.NotContains(t, got.Object, "status")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestStaleAnnotationRemovedWhenBackToOneTarget(t *testing.T) {
	up := upstreamWidget(nil, map[string]any{"ready": true})
	up.SetAnnotations(map[string]string{kcp.StatusAnnotation("k1"): `{"ready":true}`, "keep": "me"})
	c, client, _ := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}), up.DeepCopy())
	require.NoError(t, c.Reconcile(context.Background(), key))
	w := writes(client)
	require.Len(t, w, 1)
	patch := string(w[0].(clienttesting.PatchAction).GetPatch())
	assert.JSONEq(t, `{"metadata":{"uid":"up-uid","annotations":{"experimental.status.workload.kcp.io/k1":null}}}`, patch)
	got, err := client.Resource(widgets).Namespace("team-a").Get(context.Background(), "w", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"keep": "me"}, got.GetAnnotations())
}

func TestConflictRereadsAndRetries(t *testing.T) {
	up := upstreamWidget(nil, nil)
	c, client, reg := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}), up.DeepCopy())
	conflicts := 0
	client.PrependReactor("update", "widgets", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" && conflicts == 0 {
			conflicts++
			return true, nil, apierrors.NewConflict(widgets.GroupResource(), "w", errors.New("stale"))
		}
		return false, nil, nil
	})
	c.enqueueObserved(key)
	require.NoError(t, c.Reconcile(context.Background(), key))
	var verbs []string
	for _, a := range client.Actions() {
		verbs = append(verbs, a.GetVerb())
	}
	assert.Equal(t, []string{"update", "get", "update"}, verbs, "a 409 re-reads the object from the API server")
	got, err := client.Resource(widgets).Namespace("team-a").Get(context.Background(), "w", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"ready": true}, got.Object["status"])
	assertMetric(t, reg, "tmc_syncer_status_writes_total", map[string]string{"write": "conflict"}, 1)
	assertMetric(t, reg, "tmc_syncer_status_writes_total", map[string]string{"write": "status"}, 1)
	assertMetric(t, reg, "tmc_syncer_status_sync_latency_seconds", nil, 1)
}

func TestConflictWithDeletedObjectStops(t *testing.T) {
	up := upstreamWidget(nil, nil)
	fresh := up.DeepCopy()
	fresh.SetDeletionTimestamp(&metav1.Time{Time: time.Now()})
	c, client, _ := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}), fresh)
	client.PrependReactor("update", "widgets", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(widgets.GroupResource(), "w", errors.New("stale"))
	})
	require.NoError(t, c.Reconcile(context.Background(), key))
	assert.Len(t, writes(client), 1, "no second write on an object being deleted")
}

func TestNoStatusSubresourceIsRememberedPerResource(t *testing.T) {
	up := upstreamWidget(nil, nil)
	c, client, reg := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}), up.DeepCopy())
	client.PrependReactor("update", "widgets", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			return true, nil, apierrors.NewNotFound(widgets.GroupResource(), "w")
		}
		return false, nil, nil
	})
	require.NoError(t, c.Reconcile(context.Background(), key))
	require.NoError(t, c.Reconcile(context.Background(), key))
	assert.Len(t, writes(client), 1, "the second reconcile does not try again")
	assertMetric(t, reg, "tmc_syncer_status_writes_total", map[string]string{"write": "no_subresource"}, 1)
}

func TestStatusNotFoundBecauseObjectVanished(t *testing.T) {
	up := upstreamWidget(nil, nil)
	c, client, _ := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}))
	require.NoError(t, c.Reconcile(context.Background(), key))
	assert.False(t, c.hasNoStatus(widgets), "a vanished object says nothing about the resource")
	assert.Len(t, writes(client), 1)
}

func TestUpdateErrorIsRetriedWithKeyAndLatencyKept(t *testing.T) {
	up := upstreamWidget(nil, nil)
	c, client, _ := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}), up.DeepCopy())
	client.PrependReactor("update", "widgets", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("boom"))
	})
	c.enqueueObserved(key)
	err := c.Reconcile(context.Background(), key)
	require.ErrorContains(t, err, "update status of up widgets.v1.test.tmc.dev root:org|team-a/w")
	_, kept := c.takeSeen(key)
	assert.True(t, kept, "the first observation time survives a failed write")
}

func TestCacheErrorsAreReturned(t *testing.T) {
	c, _, _ := newTestController(t, nil, nil)
	c.cfg.Informers.(*fakeInformers).err = errors.New("informer widgets is not running")
	require.ErrorContains(t, c.Reconcile(context.Background(), key), "informer widgets is not running")
}

func TestTransformErrorIsPermanent(t *testing.T) {
	down := downstreamWidget(t, "up-uid", nil)
	down.Object["status"] = "not an object"
	c, _, _ := newTestController(t, upstreamWidget(nil, nil), down)
	err := c.Reconcile(context.Background(), key)
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, err, &ra)
	assert.Equal(t, queue.PermanentRetryDelay, ra.After)
}

func TestAnnotationPatchOnRecreatedObjectIsDropped(t *testing.T) {
	up := upstreamWidget(map[string]string{kcp.StateLabel("k1"): "Sync", kcp.StateLabel("k2"): "Sync"}, nil)
	c, client, _ := newTestController(t, up, downstreamWidget(t, "up-uid", map[string]any{"ready": true}), up.DeepCopy())
	client.PrependReactor("patch", "widgets", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInvalid(schema.GroupKind{Group: "test.tmc.dev", Kind: "Widget"}, "w", nil)
	})
	require.NoError(t, c.Reconcile(context.Background(), key))
	client.PrependReactor("patch", "widgets", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	require.ErrorContains(t, c.Reconcile(context.Background(), key), "patch status annotation")
}

func TestHandlersMapObjectsToUpstreamKeys(t *testing.T) {
	c, _, _ := newTestController(t, nil, nil)
	down := downstreamWidget(t, "up-uid", map[string]any{"ready": true})
	k, ok := c.downstreamKey(widgets, down)
	require.True(t, ok)
	assert.Equal(t, key, k)

	foreign := down.DeepCopy()
	foreign.SetLabels(map[string]string{identity.DownstreamClusterLabel: "other"})
	_, ok = c.downstreamKey(widgets, foreign)
	assert.False(t, ok, "objects of another target are ignored")

	h := c.downstreamHandler(widgets)
	h.OnAdd(down, false)
	assert.Equal(t, 1, c.runner.Len())
	_, seen := c.takeSeen(key)
	assert.True(t, seen)

	spec := down.DeepCopy()
	spec.Object["spec"] = map[string]any{"size": int64(2)}
	assert.False(t, statusOrOwnerChanged(down, spec), "spec-only updates are ignored")
	st := down.DeepCopy()
	st.Object["status"] = map[string]any{"ready": false}
	assert.True(t, statusOrOwnerChanged(down, st))
	owner := down.DeepCopy()
	owner.SetAnnotations(ownership.Owner{Name: "x"}.Annotations())
	assert.True(t, statusOrOwnerChanged(down, owner))
	assert.True(t, statusOrOwnerChanged("x", down))
	h.OnUpdate(down, st)
	h.OnUpdate(down, spec)
	_, seen = c.takeSeen(key)
	assert.True(t, seen)

	uh := c.upstreamHandler(widgets)
	up := upstreamWidget(nil, nil)
	uh.OnAdd(up, false)
	relabelled := up.DeepCopy()
	relabelled.SetLabels(map[string]string{kcp.StateLabel("k1"): "Sync", kcp.StateLabel("k2"): "Sync"})
	uh.OnUpdate(up, relabelled)
	statusOnly := up.DeepCopy()
	statusOnly.Object["status"] = map[string]any{"by": "someone else"}
	uh.OnUpdate(up, statusOnly)
	uh.OnDelete(cache.DeletedFinalStateUnknown{Obj: up})
	assert.Equal(t, 1, c.runner.Len(), "one key, deduplicated while waiting")
	_, ok = asObject(cache.DeletedFinalStateUnknown{Obj: up})
	assert.True(t, ok)
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{})
	require.Error(t, err)
	_, err = New(Config{Informers: &fakeInformers{}, Upstream: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()), Transformer: transformation.NewPipeline()})
	require.ErrorContains(t, err, "sync target")
	c, _, _ := newTestController(t, nil, nil)
	assert.Equal(t, ControllerName, c.Name())
	assert.Equal(t, 4, c.Workers())
	assert.NotNil(t, c.Runner())
}

func TestRunSyncsStatusThroughInformers(t *testing.T) {
	up := upstreamWidget(nil, nil)
	up.SetResourceVersion("")
	down := downstreamWidget(t, "up-uid", map[string]any{"ready": true})
	scheme := runtime.NewScheme()
	kinds := map[schema.GroupVersionResource]string{widgets: "WidgetList"}
	upClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, kinds, up)
	downClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, kinds, down)
	target := identity.Target{Cluster: "root:org", Name: "phys", UID: "st-uid", Key: "k1"}
	mgr := informers.NewManager(informers.Options{Target: target, FromCluster: "root:org",
		Upstream: informers.Clients{Dynamic: upClient}, Downstream: informers.Clients{Dynamic: downClient}})
	c, err := New(Config{Resources: []schema.GroupVersionResource{widgets}, Informers: mgr, Upstream: upClient,
		Transformer: transformation.NewPipeline(), Context: tctx, Workers: 1})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	require.Eventually(t, func() bool {
		got, err := upClient.Resource(widgets).Namespace("team-a").Get(ctx, "w", metav1.GetOptions{})
		return err == nil && got.Object["status"] != nil
	}, 10*time.Second, 10*time.Millisecond, "status written upstream")
	cancel()
	require.NoError(t, <-done)
	mgr.StopAll()
}

func TestRunFailsWhenInformersCannotStart(t *testing.T) {
	c, _, _ := newTestController(t, nil, nil)
	require.ErrorContains(t, c.Run(context.Background()), "not in unit tests")
}

func assertMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				ok := false
				for _, l := range m.GetLabel() {
					ok = ok || (l.GetName() == k && l.GetValue() == v)
				}
				if !ok {
					continue next
				}
			}
			if m.GetCounter() != nil {
				got += m.GetCounter().GetValue()
			}
			if m.GetHistogram() != nil {
				got += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	assert.InDelta(t, want, got, 0, "metric %s%v", name, labels)
}

var _ = types.UID("")

func TestReassertBacksOffAndIgnoresOwnWrites(t *testing.T) {
	c, _, _ := newTestController(t, nil, nil)
	now := time.Now()
	c.now = func() time.Time { return now }
	require.NoError(t, c.writing(key, func() (string, error) { return "10", nil }))
	c.reassert(key, "10")
	assert.Nil(t, c.reasserts[key], "our own write is not re-asserted")
	for range 3 {
		c.reassert(key, "11")
	}
	assert.Equal(t, 3, c.reasserts[key].n, "each foreign write doubles the next delay")
	now = now.Add(3 * time.Minute)
	c.reassert(key, "12")
	assert.Equal(t, 1, c.reasserts[key].n, "quiet resets the backoff")
	c.forget(key)
	assert.Empty(t, c.written)
	assert.Empty(t, c.reasserts)
}

// The upstream watch often delivers our own write before the write's response: the event
// must not count as another writer's (which would re-queue the key and grow its backoff).
func TestOwnWriteSeenBeforeItsResponseIsNotReasserted(t *testing.T) {
	tests := []struct {
		name     string
		seen     []string // status changes the watch delivers while the write is in flight
		rv       string
		err      error
		reassert bool
	}{
		{name: "nothing seen", rv: "10"},
		{name: "own write seen first", seen: []string{"10"}, rv: "10"},
		{name: "another write after ours", seen: []string{"10", "11"}, rv: "10", reassert: true},
		{name: "another write only", seen: []string{"9"}, rv: "10", reassert: true},
		{name: "failed write re-reads anyway", seen: []string{"9"}, err: errors.New("conflict")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := newTestController(t, nil, nil)
			err := c.writing(key, func() (string, error) {
				for _, rv := range tt.seen {
					c.reassert(key, rv)
				}
				return tt.rv, tt.err
			})
			require.ErrorIs(t, err, tt.err)
			assert.Equal(t, tt.reassert, c.reasserts[key] != nil, "re-asserted")
			assert.Empty(t, c.inflight, "no write in flight afterwards")
			if tt.err == nil {
				assert.Equal(t, tt.rv, c.written[key], "our write's resourceVersion is remembered")
				c.reassert(key, tt.rv)
				assert.Equal(t, tt.reassert, c.reasserts[key] != nil, "the later event of our own write is ignored")
			}
		})
	}
}
