package spec

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

var cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

type fakeWriter struct {
	mu sync.Mutex
	// down is the physical cluster a CreateOnly apply checks, as the server's
	// resourceVersion precondition does.
	down *dynamicfake.FakeDynamicClient
	// refused counts CreateOnly applies that found the object there (nothing written).
	refused  int
	applies  []applier.Request
	deletes  []string
	applyErr error
	props    []metav1.DeletionPropagation
}

func (w *fakeWriter) Apply(_ context.Context, req applier.Request) (applier.Outcome, *unstructured.Unstructured, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sent, outcome, err := applier.Plan(req)
	if err != nil {
		return "", nil, err
	}
	if outcome == applier.Unchanged {
		return outcome, req.Live, nil
	}
	if req.CreateOnly && w.down != nil {
		if _, err := w.down.Tracker().Get(req.GVR, sent.GetNamespace(), sent.GetName()); err == nil {
			w.refused++
			return "", nil, &applier.ExistsError{GVR: req.GVR, Namespace: sent.GetNamespace(), Name: sent.GetName()}
		}
	}
	w.applies = append(w.applies, req)
	if w.applyErr != nil {
		return "", nil, w.applyErr
	}
	return outcome, sent, nil
}

func (w *fakeWriter) Delete(_ context.Context, _ schema.GroupVersionResource, ns, name string, uid types.UID, p metav1.DeletionPropagation) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deletes = append(w.deletes, ns+"/"+name+"@"+string(uid))
	w.props = append(w.props, p)
	return nil
}

type fakeEnsurer struct {
	err   error
	calls int
}

func (e *fakeEnsurer) Ensure(_ context.Context, l namespace.Locator) (string, error) {
	e.calls++
	if e.err != nil {
		return "", e.err
	}
	return namespace.DownstreamName(l)
}

type countingMetrics struct {
	mu     sync.Mutex
	counts map[string]int
}

func (m *countingMetrics) inc(k string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[k]++
}
func (m *countingMetrics) Conflict(p, _ string)       { m.inc("conflict/" + p) }
func (m *countingMetrics) DriftReverted(string)       { m.inc("drift") }
func (m *countingMetrics) PermanentError(_, c string) { m.inc("permanent/" + c) }
func (m *countingMetrics) Applied(_, o string)        { m.inc("applied/" + o) }
func (m *countingMetrics) Deleted(string)             { m.inc("deleted") }

type fixture struct {
	t        *testing.T
	target   identity.Target
	tctx     transformation.Context
	upStore  cache.Indexer
	down     cache.Indexer
	up       *dynamicfake.FakeDynamicClient
	downAPI  *dynamicfake.FakeDynamicClient
	writer   *fakeWriter
	ns       *fakeEnsurer
	recorder *record.FakeRecorder
	metrics  *countingMetrics
	ctl      *Controller
}

func newFixture(t *testing.T, upObjs ...*unstructured.Unstructured) *fixture {
	t.Helper()
	target := identity.NewTarget("root", "east", "st-uid")
	f := &fixture{
		t: t, target: target,
		tctx: transformation.Context{SyncTargetKey: target.Key, SyncTargetName: target.Name, SyncTargetUID: string(target.UID),
			SyncTargetCluster: "root", LogicalCluster: "root"},
		upStore:  cache.NewIndexer(informers.StoreKeyFunc("root"), cache.Indexers{}),
		down:     cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{ByUpstreamIndex: UpstreamIndexFunc}),
		writer:   &fakeWriter{},
		ns:       &fakeEnsurer{},
		recorder: record.NewFakeRecorder(100),
		metrics:  &countingMetrics{counts: map[string]int{}},
	}
	var objs []runtime.Object
	for _, o := range upObjs {
		objs = append(objs, o)
		require.NoError(t, f.upStore.Add(o))
	}
	kinds := map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList"}
	f.up = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds, objs...)
	f.downAPI = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds)
	f.writer.down = f.downAPI
	f.ctl = NewController(Config{
		Target: target, Transform: f.tctx,
		Pipeline:       transformation.NewPipeline(transformation.WithStage(StripControlAnnotations())),
		Resources:      []Resource{{GVR: cmGVR, Upstream: f.upStore, Downstream: f.down}},
		UpstreamClient: f.up, DownstreamClient: f.downAPI, Writer: f.writer, Namespaces: f.ns,
		Recorder: f.recorder, Metrics: f.metrics, PermanentRetryDelay: time.Minute,
	})
	return f
}

func (f *fixture) cm(name string, mutate ...func(u *unstructured.Unstructured)) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": name, "namespace": "team", "uid": "up-" + name, "resourceVersion": "1",
			"labels": map[string]any{f.target.StateLabel(): "Sync"},
		},
		"data": map[string]any{"k": "v"},
	}}
	for _, m := range mutate {
		m(u)
	}
	return u
}

func withFinalizer(f *fixture) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) { u.SetFinalizers([]string{"other", f.target.SyncerFinalizer()}) }
}

func withAnnotation(k, v string) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		a := u.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		a[k] = v
		u.SetAnnotations(a)
	}
}

func key(name string) queue.Key {
	return queue.Key{Direction: queue.Down, GVR: cmGVR, Cluster: "root", Namespace: "team", Name: name}
}

// downstreamOf returns what the physical cluster holds after a successful sync of up.
func (f *fixture) downstreamOf(up *unstructured.Unstructured) *unstructured.Unstructured {
	f.t.Helper()
	d, err := transformation.NewPipeline(transformation.WithStage(StripControlAnnotations())).ToDownstream(f.tctx, up)
	require.NoError(f.t, err)
	sent, _, err := applier.Plan(applier.Request{Desired: d})
	require.NoError(f.t, err)
	sent.SetUID("down-uid")
	return sent
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (f *fixture) upstream(name string) *unstructured.Unstructured {
	f.t.Helper()
	u, err := f.up.Resource(cmGVR).Namespace("team").Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(f.t, err)
	return u
}

func TestFirstSyncIsOneFinalizerPatchAndOneCreateWithoutARead(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web")
	f = newFixture(t, up)
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	var upVerbs []string
	for _, a := range f.up.Actions() {
		upVerbs = append(upVerbs, a.GetVerb())
	}
	assert.Equal(t, []string{"patch"}, upVerbs, "one upstream write: the finalizer")
	assert.Contains(t, f.upstream("web").GetFinalizers(), f.target.SyncerFinalizer())
	assert.Equal(t, 1, f.ns.calls)
	require.Len(t, f.writer.applies, 1)
	req := f.writer.applies[0]
	assert.Nil(t, req.Live)
	assert.True(t, req.CreateOnly, "an object missing from our cache is created without a read")
	assert.True(t, req.Force)
	assert.Equal(t, f.target.Key, req.Desired.GetLabels()[identity.DownstreamClusterLabel])
	assert.Equal(t, 1, f.metrics.counts["applied/created"])
	assert.Empty(t, f.downAPI.Actions(), "no downstream read")

	// The finalizer's watch event brings the key back before the downstream cache has seen
	// the create: the server's answer stands in for it, nothing is sent, and the key is
	// looked at again once the cache must have caught up.
	require.NoError(t, f.upStore.Update(f.upstream("web")))
	err := f.ctl.Reconcile(context.Background(), key("web"))
	var again *queue.RequeueAfterError
	require.ErrorAs(t, err, &again)
	assert.Equal(t, writtenTTL, again.After)
	assert.Len(t, f.writer.applies, 1, "no second write")
	assert.Empty(t, f.downAPI.Actions(), "no downstream read")
	assert.Zero(t, f.writer.refused)
}

func TestFirstSyncOfAnObjectChangedMeanwhileWritesTheNewVersion(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web")
	f = newFixture(t, up)
	changed := up.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(changed.Object, "v2", "data", "k"))
	changed.SetResourceVersion("2")
	_, err := f.up.Resource(cmGVR).Namespace("team").Update(context.Background(), changed, metav1.UpdateOptions{})
	require.NoError(t, err)

	// The cache still holds version 1: its finalizer patch conflicts, is computed again on
	// version 2, and the object created from version 1 is updated to version 2 at once.
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	require.Len(t, f.writer.applies, 2)
	assert.True(t, f.writer.applies[0].CreateOnly)
	assert.False(t, f.writer.applies[1].CreateOnly)
	assert.NotNil(t, f.writer.applies[1].Live, "the update starts from what was just created")
	v, _, _ := unstructured.NestedString(f.writer.applies[1].Desired.Object, "data", "k")
	assert.Equal(t, "v2", v)
	assert.Contains(t, f.upstream("web").GetFinalizers(), f.target.SyncerFinalizer())
}

func TestPreservedFieldsAreNeverTakenFromOurOwnWrite(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withAnnotation(conflict.IgnoreFieldsAnnotation, "data.k"))
	f = newFixture(t, up)
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	require.Len(t, f.writer.applies, 1)
	// The physical cluster took data.k over right after the create; our cache has not
	// seen the object yet, our own write's answer would say "v".
	live := f.downstreamOf(up)
	require.NoError(t, unstructured.SetNestedField(live.Object, "local", "data", "k"))
	require.NoError(t, f.downAPI.Tracker().Add(live))
	changed := f.upstream("web")
	require.NoError(t, unstructured.SetNestedField(changed.Object, "other", "data", "x"))
	require.NoError(t, f.upStore.Update(changed))

	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	var gets int
	for _, a := range f.downAPI.Actions() {
		if a.GetVerb() == "get" {
			gets++
		}
	}
	assert.Equal(t, 1, gets, "no trust in the remembered write or the cache: the object is read")
	require.Len(t, f.writer.applies, 2)
	assert.Equal(t, live.GetResourceVersion(), f.writer.applies[1].Live.GetResourceVersion(), "the write is conditional on what was read")
	sent, _, err := applier.Plan(f.writer.applies[1])
	require.NoError(t, err)
	v, _, _ := unstructured.NestedString(sent.Object, "data", "k")
	assert.Equal(t, "local", v, "the physical cluster's value is kept")
}

func TestObjectOursButNotYetCachedIsReadAfterTheRefusedCreate(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	// Created by an earlier run; the cache has not seen it.
	live := f.downstreamOf(up)
	_, err := f.downAPI.Resource(cmGVR).Namespace(live.GetNamespace()).Create(context.Background(), live, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	assert.Equal(t, 1, f.writer.refused, "the create found it")
	assert.Empty(t, f.writer.applies, "then read it: unchanged, nothing written")
	assert.Equal(t, 1, f.metrics.counts["applied/unchanged"])
}

func TestRememberedWritesYieldToTheCacheAndToDeletes(t *testing.T) {
	now := time.Unix(1000, 0)
	w := newWritten()
	obj := func(rv string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetNamespace("ns")
		u.SetName("a")
		u.SetResourceVersion(rv)
		return u
	}
	tests := map[string]struct {
		cached *unstructured.Unstructured
		after  time.Duration
		forget bool
		want   bool
	}{
		"cache has not seen it":           {want: true},
		"cache holds an older version":    {cached: obj("5"), want: true},
		"cache caught up":                 {cached: obj("7")},
		"cache is newer":                  {cached: obj("9")},
		"too old to trust":                {after: writtenTTL},
		"we deleted it":                   {forget: true},
		"unparsable versions: cache wins": {cached: obj("x")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w.remember(cmGVR, obj("7"), now)
			if tc.forget {
				w.forget(cmGVR, "ns", "a")
			}
			_, ok := w.newer(cmGVR, "ns", "a", tc.cached, now.Add(tc.after))
			assert.Equal(t, tc.want, ok)
			w.forget(cmGVR, "ns", "a")
		})
	}
}

func TestUnchangedObjectIsNotWritten(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	require.NoError(t, f.down.Add(f.downstreamOf(up)))
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	assert.Empty(t, f.writer.applies)
	assert.Equal(t, 1, f.metrics.counts["applied/unchanged"])
	for _, a := range f.up.Actions() {
		assert.NotEqual(t, "patch", a.GetVerb(), "no upstream write either")
	}
}

func TestDriftIsRevertedWithinOneReconcile(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	live := f.downstreamOf(up)
	require.NoError(t, unstructured.SetNestedField(live.Object, "edited", "data", "k"))
	require.NoError(t, f.down.Add(live))
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	require.Len(t, f.writer.applies, 1)
	assert.Equal(t, 1, f.metrics.counts["drift"])
}

func TestForeignObjectConflicts(t *testing.T) {
	tests := map[string]struct {
		policy    string
		liveData  string
		wantApply bool
	}{
		"abort by default":    {"", "v", false},
		"adopt equal content": {"Adopt", "v", true},
		"adopt different":     {"Adopt", "theirs", false},
		"overwrite":           {"Overwrite", "theirs", true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			var mut []func(*unstructured.Unstructured)
			mut = append(mut, withFinalizer(f))
			if tt.policy != "" {
				mut = append(mut, withAnnotation(conflict.PolicyAnnotation, tt.policy))
			}
			up := f.cm("web", mut...)
			f = newFixture(t, up)
			nsName, err := namespace.DownstreamName(f.tctx.Locator(up))
			require.NoError(t, err)
			foreign := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": "web", "namespace": nsName},
				"data":     map[string]any{"k": tt.liveData},
			}}
			require.NoError(t, f.downAPI.Tracker().Add(foreign))

			err = f.ctl.Reconcile(context.Background(), key("web"))
			if tt.wantApply {
				require.NoError(t, err)
				require.Len(t, f.writer.applies, 1)
				assert.True(t, f.writer.applies[0].Force)
				return
			}
			var ra *queue.RequeueAfterError
			require.ErrorAs(t, err, &ra)
			require.NoError(t, ra.Err, "a conflict is not a failure of the syncer")
			assert.Empty(t, f.writer.applies)
			ev := f.events()
			require.Len(t, ev, 1)
			assert.Contains(t, ev[0], "Warning SyncConflict")
			assert.Contains(t, ev[0], "ConfigMap "+nsName+"/web")
			policy := tt.policy
			if policy == "" {
				policy = "Abort"
			}
			assert.Equal(t, 1, f.metrics.counts["conflict/"+policy])
		})
	}
}

func TestPermanentFailureIsReportedUpstreamWithoutHotLoop(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	f.writer.applyErr = apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "web",
		field.ErrorList{field.Invalid(field.NewPath("data"), "x", "physical cluster says no")})

	err := f.ctl.Reconcile(context.Background(), key("web"))
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, err, &ra)
	assert.Equal(t, time.Minute, ra.After, "permanent errors back off to the permanent delay")
	ev := f.events()
	require.Len(t, ev, 1)
	assert.Contains(t, ev[0], "Warning SyncFailed")
	assert.Contains(t, ev[0], "physical cluster says no")
	assert.Contains(t, f.upstream("web").GetAnnotations()[SyncErrorAnnotation], "physical cluster says no")
	assert.Equal(t, 1, f.metrics.counts["permanent/permanent"])

	// Our own annotation patch brings the key back at once: the same object is not sent again.
	require.NoError(t, f.upStore.Update(f.upstream("web")))
	err = f.ctl.Reconcile(context.Background(), key("web"))
	require.ErrorAs(t, err, &ra)
	assert.Len(t, f.writer.applies, 1, "not sent again while unchanged")

	// Fixed upstream: applied, annotation cleared.
	f.writer.applyErr = nil
	fixed := f.upstream("web")
	require.NoError(t, unstructured.SetNestedField(fixed.Object, "v2", "data", "k"))
	require.NoError(t, f.upStore.Update(fixed))
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	assert.Len(t, f.writer.applies, 2)
	assert.NotContains(t, f.upstream("web").GetAnnotations(), SyncErrorAnnotation)
}

func TestImmutableChangeRecreatesOnlyWhenAllowed(t *testing.T) {
	immutable := apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "web",
		field.ErrorList{field.Invalid(field.NewPath("immutable"), true, "field is immutable")})
	for _, allowed := range []bool{true, false} {
		t.Run(fmt.Sprint("recreate=", allowed), func(t *testing.T) {
			f := newFixture(t)
			mut := []func(*unstructured.Unstructured){withFinalizer(f)}
			if allowed {
				mut = append(mut, withAnnotation(RecreateOnImmutableAnnotation, "true"))
			}
			up := f.cm("web", mut...)
			f = newFixture(t, up)
			live := f.downstreamOf(up)
			require.NoError(t, unstructured.SetNestedField(live.Object, "old", "data", "k"))
			require.NoError(t, f.down.Add(live))
			f.writer.applyErr = immutable
			err := f.ctl.Reconcile(context.Background(), key("web"))
			var ra *queue.RequeueAfterError
			require.ErrorAs(t, err, &ra)
			if allowed {
				assert.Equal(t, []string{live.GetNamespace() + "/web@down-uid"}, f.writer.deletes)
				assert.NoError(t, ra.Err)
				return
			}
			assert.Empty(t, f.writer.deletes)
			assert.Equal(t, 1, f.metrics.counts["permanent/immutable"])
		})
	}
}

func TestRetriableErrorsUseBackoffOrRetryAfter(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	f.writer.applyErr = apierrors.NewTooManyRequests("slow", 7)
	err := f.ctl.Reconcile(context.Background(), key("web"))
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, err, &ra)
	assert.Equal(t, 7*time.Second, ra.After)

	f.writer.applyErr = apierrors.NewInternalError(errors.New("boom"))
	err = f.ctl.Reconcile(context.Background(), key("web"))
	require.Error(t, err)
	assert.NotErrorAs(t, err, &ra, "plain backoff")
	assert.Empty(t, f.events(), "retriable errors are not reported upstream")
}

func TestTransformAndNamespaceErrors(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f), withAnnotation(identity.SpecDiffAnnotation(f.target.Key), "not json"),
		func(u *unstructured.Unstructured) { u.Object["spec"] = map[string]any{"a": "b"} })
	f = newFixture(t, up)
	err := f.ctl.Reconcile(context.Background(), key("web"))
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, err, &ra)
	assert.Equal(t, 1, f.metrics.counts["permanent/transform"])

	up = f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	f.ns.err = fmt.Errorf("%w: kcp-x has no locator", namespace.ErrCollision)
	err = f.ctl.Reconcile(context.Background(), key("web"))
	require.ErrorAs(t, err, &ra)
	assert.Equal(t, 1, f.metrics.counts["permanent/namespace-collision"])
	assert.Contains(t, strings.Join(f.events(), "\n"), "collision")

	f = newFixture(t, up)
	f.ns.err = errors.New("apiserver down")
	err = f.ctl.Reconcile(context.Background(), key("web"))
	require.ErrorContains(t, err, "apiserver down")
	assert.NotErrorAs(t, err, &ra)

	bad := f.cm("web", withFinalizer(f), withAnnotation(conflict.PolicyAnnotation, "Steal"))
	f = newFixture(t, bad)
	require.ErrorAs(t, f.ctl.Reconcile(context.Background(), key("web")), &ra)
	bad = f.cm("web", withFinalizer(f), withAnnotation(conflict.IgnoreFieldsAnnotation, "[oops"))
	f = newFixture(t, bad)
	require.ErrorAs(t, f.ctl.Reconcile(context.Background(), key("web")), &ra)
	assert.Equal(t, 1, f.metrics.counts["permanent/annotation"])
}

func TestRemovePaths(t *testing.T) {
	tests := map[string]struct {
		mutate        []func(f *fixture, u *unstructured.Unstructured)
		downstream    bool
		terminating   bool
		wantDeletes   int
		wantFinalizer bool
		wantProp      metav1.DeletionPropagation
	}{
		"state pending deletes downstream": {
			mutate: []func(*fixture, *unstructured.Unstructured){func(f *fixture, u *unstructured.Unstructured) {
				u.SetLabels(map[string]string{f.target.StateLabel(): ""})
			}},
			downstream: true, wantDeletes: 1, wantFinalizer: true, wantProp: metav1.DeletePropagationBackground,
		},
		"deletion annotation with foreground propagation": {
			mutate: []func(*fixture, *unstructured.Unstructured){func(f *fixture, u *unstructured.Unstructured) {
				withAnnotation(f.target.DeletionAnnotation(), "2026-01-01T00:00:00Z")(u)
				withAnnotation(DeletionPropagationAnnotation, "Foreground")(u)
			}},
			downstream: true, wantDeletes: 1, wantFinalizer: true, wantProp: metav1.DeletePropagationForeground,
		},
		"soft finalizers hold the delete": {
			mutate: []func(*fixture, *unstructured.Unstructured){func(f *fixture, u *unstructured.Unstructured) {
				now := metav1.Now()
				u.SetDeletionTimestamp(&now)
				withAnnotation(f.target.SoftFinalizersAnnotation(), "a,b")(u)
			}},
			downstream: true, wantDeletes: 0, wantFinalizer: true,
		},
		"downstream being deleted waits": {
			mutate:     []func(*fixture, *unstructured.Unstructured){func(f *fixture, u *unstructured.Unstructured) { u.SetLabels(nil) }},
			downstream: true, terminating: true, wantDeletes: 0, wantFinalizer: true,
		},
		"downstream gone releases the finalizer": {
			mutate: []func(*fixture, *unstructured.Unstructured){func(f *fixture, u *unstructured.Unstructured) {
				u.SetLabels(map[string]string{f.target.StateLabel(): "Upsync"})
			}},
			downstream: false, wantDeletes: 0, wantFinalizer: false,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			base := f.cm("web", withFinalizer(f))
			down := f.downstreamOf(base)
			up := base.DeepCopy()
			for _, m := range tt.mutate {
				m(f, up)
			}
			f = newFixture(t, up)
			if tt.downstream {
				if tt.terminating {
					now := metav1.Now()
					down.SetDeletionTimestamp(&now)
				}
				require.NoError(t, f.down.Add(down))
			}
			requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), key("web")))
			assert.Len(t, f.writer.deletes, tt.wantDeletes)
			if tt.wantDeletes > 0 {
				assert.Equal(t, tt.wantProp, f.writer.props[0])
				assert.Contains(t, f.writer.deletes[0], "@down-uid", "UID precondition")
			}
			assert.Equal(t, tt.wantFinalizer, hasFinalizer(f.upstream("web"), f.target.SyncerFinalizer()))
			assert.Contains(t, f.upstream("web").GetFinalizers(), "other", "other finalizers are kept")
		})
	}
}

func TestRemoveConfirmsWithTheAPIServerBeforeReleasing(t *testing.T) {
	f := newFixture(t)
	base := f.cm("web", withFinalizer(f))
	down := f.downstreamOf(base)
	up := base.DeepCopy()
	up.SetLabels(nil)
	f = newFixture(t, up)
	require.NoError(t, f.downAPI.Tracker().Add(down), "not yet in the cache")
	requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), key("web")))
	assert.Len(t, f.writer.deletes, 1)
	assert.True(t, hasFinalizer(f.upstream("web"), f.target.SyncerFinalizer()), "kept until the delete is observed")
}

func TestUpstreamMissingFromCacheIsReadFromTheAPIServer(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	up.SetLabels(nil) // label dropped: the filtered cache no longer has it
	f = newFixture(t)
	require.NoError(t, f.up.Tracker().Add(up))
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	assert.False(t, hasFinalizer(f.upstream("web"), f.target.SyncerFinalizer()))

	// Gone entirely: the downstream copy is deleted.
	f = newFixture(t)
	require.NoError(t, f.down.Add(f.downstreamOf(f.cm("gone"))))
	requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), key("gone")))
	assert.Len(t, f.writer.deletes, 1)

	// Unknown resource: ignored.
	require.NoError(t, f.ctl.Reconcile(context.Background(), queue.Key{GVR: schema.GroupVersionResource{Resource: "x"}}))
}

func TestFinalizerPatchRetriesConflictsWithFreshReads(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web")
	f = newFixture(t, up)
	conflicts := 0
	f.up.PrependReactor("patch", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		if conflicts < 2 {
			conflicts++
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("modified"))
		}
		return false, nil, nil
	})
	require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
	assert.Equal(t, 2, conflicts)
	gets := 0
	for _, a := range f.up.Actions() {
		if a.GetVerb() == "get" {
			gets++
		}
	}
	assert.Equal(t, 2, gets, "each conflict re-reads the object")
	assert.Contains(t, f.upstream("web").GetFinalizers(), f.target.SyncerFinalizer())

	f = newFixture(t, up)
	f.up.PrependReactor("patch", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("modified"))
	})
	require.ErrorContains(t, f.ctl.Reconcile(context.Background(), key("web")), "still conflicting")
}

func TestDownstreamBeingDeletedIsRecreatedLater(t *testing.T) {
	f := newFixture(t)
	up := f.cm("web", withFinalizer(f))
	f = newFixture(t, up)
	live := f.downstreamOf(up)
	now := metav1.Now()
	live.SetDeletionTimestamp(&now)
	require.NoError(t, f.down.Add(live))
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, f.ctl.Reconcile(context.Background(), key("web")), &ra)
	assert.Empty(t, f.writer.applies)
}

func TestKeysIndexAndStripStage(t *testing.T) {
	f := newFixture(t)
	down := f.downstreamOf(f.cm("web"))
	keys := DownstreamKeys(cmGVR)(down)
	assert.Equal(t, []queue.Key{key("web")}, keys)
	assert.Nil(t, DownstreamKeys(cmGVR)(&metav1.ObjectMeta{Name: "x"}))
	assert.Equal(t, []queue.Key{key("web")}, f.ctl.UpstreamKeys(cmGVR)(f.cm("web")))
	idx, err := UpstreamIndexFunc(down)
	require.NoError(t, err)
	assert.Equal(t, []string{"root|team/web"}, idx)
	idx, err = UpstreamIndexFunc("not an object")
	require.NoError(t, err)
	assert.Nil(t, idx)

	up := f.cm("web", withAnnotation(SyncErrorAnnotation, "x"), withAnnotation(conflict.PolicyAnnotation, "Adopt"), withAnnotation("keep", "me"))
	d, err := transformation.NewPipeline(transformation.WithStage(StripControlAnnotations())).ToDownstream(f.tctx, up)
	require.NoError(t, err)
	assert.NotContains(t, d.GetAnnotations(), SyncErrorAnnotation)
	assert.NotContains(t, d.GetAnnotations(), conflict.PolicyAnnotation)
	assert.Equal(t, "me", d.GetAnnotations()["keep"])
	o, ok := ownership.FromAnnotations(d.GetAnnotations())
	require.True(t, ok)
	assert.Equal(t, "up-web", o.UID)
	assert.Equal(t, "downstream-spec", f.ctl.Name())
	assert.Equal(t, 1, f.ctl.Workers())
}

func TestCachesWithoutTheUpstreamIndexFindDownstreamByName(t *testing.T) {
	f := newFixture(t)
	down := f.downstreamOf(f.cm("gone"))
	plain := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	require.NoError(t, plain.Add(down))
	f.ctl = NewController(Config{
		Target: f.target, Transform: f.tctx, Pipeline: transformation.NewPipeline(),
		Lookup: func(gvr schema.GroupVersionResource) (Resource, bool) {
			return Resource{GVR: gvr, Upstream: f.upStore, Downstream: plain}, gvr == cmGVR
		},
		UpstreamClient: f.up, DownstreamClient: f.downAPI, Writer: f.writer, Namespaces: f.ns,
	})
	requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), key("gone")))
	assert.Len(t, f.writer.deletes, 1, "found by the name the transformation gives")
	require.NoError(t, f.ctl.Reconcile(context.Background(), queue.Key{GVR: schema.GroupVersionResource{Resource: "other"}}))

	assert.Equal(t, schema.GroupKind{Kind: "ConfigMap"}, kindOf(cmGVR, nil))
	assert.Equal(t, schema.GroupKind{Kind: "Secret"}, kindOf(schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, nil))
	assert.Equal(t, schema.GroupKind{Group: "apps"}, kindOf(schema.GroupVersionResource{Group: "apps", Resource: "deployments"}, nil))
	ns, names, err := f.ctl.expectedNames(queue.Key{GVR: cmGVR, Name: "kube-root-ca.crt"}, nil)
	require.NoError(t, err)
	assert.Empty(t, ns, "cluster-scoped")
	assert.Equal(t, []string{"kcp-root-ca.crt"}, names)
}

// requireDoneOrRecheck accepts a finished reconcile or one that asks to look again
// later without an error (a downstream delete in flight).
func requireDoneOrRecheck(t *testing.T, err error) {
	t.Helper()
	var ra *queue.RequeueAfterError
	if errors.As(err, &ra) {
		require.NoError(t, ra.Err)
		assert.Equal(t, removeRecheck, ra.After)
		return
	}
	require.NoError(t, err)
}

func TestSameNamespaceAndNameInTwoClustersAreTwoKeys(t *testing.T) {
	f := newFixture(t)
	inCluster := func(c string) *unstructured.Unstructured {
		u := f.cm("cm", withFinalizer(f), withAnnotation(identity.LogicalClusterAnnotation, c))
		u.SetUID(types.UID("up-" + c))
		return u
	}
	a, b := inCluster("root:a"), inCluster("root:b")
	f = newFixture(t, a) // the fake API server keys by namespace/name: it holds only a
	require.NoError(t, f.upStore.Add(b))
	require.Len(t, f.upStore.ListKeys(), 2, "the upstream cache holds both")

	keyA, keyB := f.ctl.UpstreamKeys(cmGVR)(a), f.ctl.UpstreamKeys(cmGVR)(b)
	require.Len(t, keyA, 1)
	require.Len(t, keyB, 1)
	require.NotEqual(t, keyA[0], keyB[0])

	downNS := map[string]string{}
	for _, c := range []string{"root:a", "root:b"} {
		ns, err := namespace.DownstreamName(f.tctx.Locator(inCluster(c)))
		require.NoError(t, err)
		downNS[c] = ns
	}
	require.NotEqual(t, downNS["root:a"], downNS["root:b"], "each workspace has its own downstream namespace")

	tests := []struct {
		key     queue.Key
		cluster string
		up      *unstructured.Unstructured
	}{
		{key: keyA[0], cluster: "root:a", up: a},
		{key: keyB[0], cluster: "root:b", up: b},
	}
	for i, tc := range tests {
		t.Run(tc.cluster, func(t *testing.T) {
			require.Equal(t, tc.cluster, tc.key.Cluster)
			require.NoError(t, f.ctl.Reconcile(context.Background(), tc.key))
			require.Len(t, f.writer.applies, i+1)
			desired := f.writer.applies[i].Desired
			assert.Equal(t, downNS[tc.cluster], desired.GetNamespace())
			owner, ok := ownership.FromAnnotations(desired.GetAnnotations())
			require.True(t, ok)
			assert.Equal(t, ownership.Owner{Cluster: tc.cluster, Namespace: "team", Name: "cm", UID: "up-" + tc.cluster}, owner)
			synced := f.downstreamOf(tc.up)
			synced.SetUID(types.UID("down-" + tc.cluster))
			require.NoError(t, f.down.Add(synced))
		})
	}

	// Cluster b deletes its ConfigMap: only b's downstream copy goes.
	require.NoError(t, f.upStore.Delete(b))
	var pending *queue.RequeueAfterError
	require.ErrorAs(t, f.ctl.Reconcile(context.Background(), keyB[0]), &pending, "looked at again until the copy is gone")
	assert.Equal(t, []string{downNS["root:b"] + "/cm@down-root:b"}, f.writer.deletes)
	_, ok, err := f.upStore.GetByKey(informers.StoreKey("root:a", "team", "cm"))
	require.NoError(t, err)
	assert.True(t, ok, "a's upstream object is still cached")

	// A key of a cluster holding no such object finds nothing, though the API server's
	// object of the same namespace/name (cluster a's) answers the fallback read.
	require.NoError(t, f.ctl.Reconcile(context.Background(), queue.Key{Direction: queue.Down, GVR: cmGVR, Cluster: "root:c", Namespace: "team", Name: "cm"}))
	assert.Len(t, f.writer.applies, 2)
	assert.Len(t, f.writer.deletes, 1)
}
