package events

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/upstream/metrics"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func coreEvent(name, kind, objName string, count int32) *corev1.Event {
	apiVersion := "apps/v1"
	if kind == "Pod" {
		apiVersion = "v1"
	}
	return &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: "kcp-ns", UID: types.UID("uid-" + name)},
		InvolvedObject: corev1.ObjectReference{APIVersion: apiVersion, Kind: kind, Namespace: "kcp-ns", Name: objName},
		Reason:         "Scaled", Message: "Scaled up", Type: corev1.EventTypeNormal,
		Count: count, FirstTimestamp: metav1.NewTime(now.Add(-time.Minute)), LastTimestamp: metav1.NewTime(now),
	}
}

// testController is a Controller on fake clients whose Event cache is a map.
type testController struct {
	*Controller
	up     *fake.Clientset
	events map[string]record
	reg    *prometheus.Registry
}

func newTestController(t *testing.T, opts Options, upObjects ...runtime.Object) *testController {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	require.NoError(t, err)
	up := fake.NewClientset(upObjects...)
	c, err := New(Config{
		Downstream: fake.NewClientset(), Upstream: up, Metadata: chain().get, Mapper: testMapper(),
		SyncTargetKey: "k1", SyncTargetName: "phys", Options: opts, Metrics: m,
	})
	require.NoError(t, err)
	c.now = func() time.Time { return now }
	tc := &testController{Controller: c, up: up, events: map[string]record{}, reg: reg}
	c.getEvent = func(ns, name string) (record, bool, error) {
		r, ok := tc.events[ns+"/"+name]
		return r, ok, nil
	}
	c.managedNS = func(ns string) bool { return ns == "kcp-ns" }
	return tc
}

func (tc *testController) put(e *corev1.Event) queue.Key {
	r := fromCore(e)
	tc.events[r.Key()] = r
	return tc.key(r.Namespace, r.Name)
}

// forward runs one Event through Reconcile and, when offered, through send.
func (tc *testController) forward(t *testing.T, e *corev1.Event) {
	t.Helper()
	key := tc.put(e)
	require.NoError(t, tc.Reconcile(context.Background(), key))
	if tc.outbox.Len() == 0 {
		return
	}
	_, k, ok := tc.outbox.take()
	require.True(t, ok)
	require.Equal(t, e.Namespace+"/"+e.Name, k)
	require.NoError(t, tc.send(context.Background(), key))
}

func (tc *testController) upstreamEvents(t *testing.T) []corev1.Event {
	t.Helper()
	l, err := tc.up.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return l.Items
}

func (tc *testController) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := tc.reg.Gather()
	require.NoError(t, err)
	sum := 0.0
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
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestForwardedEventRefersToUpstreamObject(t *testing.T) {
	tests := []struct {
		name    string
		event   *corev1.Event
		message string
	}{
		{"Event of the synced Deployment", coreEvent("web.1", "Deployment", "web", 1), "Scaled up"},
		{"Event of its ReplicaSet", coreEvent("web-1.1", "ReplicaSet", "web-1", 1), "ReplicaSet web-1: Scaled up"},
		{"Event of its Pod", coreEvent("web-1-a.1", "Pod", "web-1-a", 1), "Pod web-1-a: Scaled up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestController(t, Options{})
			tc.forward(t, tt.event)
			got := tc.upstreamEvents(t)
			require.Len(t, got, 1)
			e := got[0]
			assert.Equal(t, UpstreamName("web", tt.event.UID), e.Name)
			assert.Equal(t, "team-a", e.Namespace)
			assert.Equal(t, corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "team-a", Name: "web", UID: "up-uid"}, e.InvolvedObject)
			assert.Equal(t, tt.message, e.Message)
			assert.Equal(t, "tmc-syncer/phys", e.ReportingController)
			assert.Equal(t, "tmc-syncer/phys", e.Source.Component)
			assert.Equal(t, "tmc-syncer-phys", e.ReportingInstance)
			assert.Equal(t, string(tt.event.UID), e.Annotations[DownstreamEventAnnotation])
			assert.Equal(t, int32(1), e.Count)
			assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_forwarded_total", nil), 0)
		})
	}
}

func TestRepeatsUpdateTheUpstreamEvent(t *testing.T) {
	tc := newTestController(t, Options{})
	e := coreEvent("web.1", "Deployment", "web", 1)
	tc.forward(t, e)
	for i := int32(2); i <= 5; i++ {
		e.Count = i
		e.LastTimestamp = metav1.NewTime(now.Add(time.Duration(i) * time.Second))
		tc.forward(t, e)
	}
	var verbs []string
	for _, a := range tc.up.Actions() {
		verbs = append(verbs, a.GetVerb())
	}
	assert.Equal(t, []string{"create", "patch", "patch", "patch", "patch"}, verbs, "one request per repeat")
	got := tc.upstreamEvents(t)
	require.Len(t, got, 1)
	assert.Equal(t, int32(5), got[0].Count)
	assert.True(t, now.Add(5*time.Second).Equal(got[0].LastTimestamp.Time), "lastTimestamp %s", got[0].LastTimestamp)
	assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_forwarded_total", nil), 0)
	assert.InDelta(t, 4.0, tc.metric(t, "tmc_syncer_events_deduplicated_total", nil), 0)

	// The same occurrence again (a resync) writes nothing.
	n := len(tc.up.Actions())
	tc.forward(t, e)
	assert.Len(t, tc.up.Actions(), n)
}

func TestRestartFindsEarlierCopy(t *testing.T) {
	e := coreEvent("web.1", "Deployment", "web", 3)
	first := newTestController(t, Options{})
	first.forward(t, e)
	existing := first.upstreamEvents(t)[0]

	// A new process: same upstream contents, empty memory.
	restarted := newTestController(t, Options{}, existing.DeepCopy())
	restarted.forward(t, e)
	assert.Len(t, restarted.upstreamEvents(t), 1)
	assert.InDelta(t, 0.0, restarted.metric(t, "tmc_syncer_events_forwarded_total", nil), 0)
	assert.InDelta(t, 1.0, restarted.metric(t, "tmc_syncer_events_deduplicated_total", nil), 0)

	// A repeat that happened while the syncer was down.
	again := newTestController(t, Options{}, existing.DeepCopy())
	e.Count = 4
	again.forward(t, e)
	got := again.upstreamEvents(t)
	require.Len(t, got, 1)
	assert.Equal(t, int32(4), got[0].Count)
}

func TestExpiredUpstreamCopyIsCreatedAgain(t *testing.T) {
	tc := newTestController(t, Options{})
	e := coreEvent("web.1", "Deployment", "web", 1)
	tc.forward(t, e)
	require.NoError(t, tc.up.CoreV1().Events("team-a").Delete(context.Background(), UpstreamName("web", e.UID), metav1.DeleteOptions{}))
	e.Count = 2
	tc.forward(t, e)
	got := tc.upstreamEvents(t)
	require.Len(t, got, 1)
	assert.Equal(t, int32(2), got[0].Count)
}

func TestFilters(t *testing.T) {
	old := coreEvent("old", "Deployment", "web", 1)
	old.LastTimestamp = metav1.NewTime(now.Add(-2 * time.Hour))
	warning := coreEvent("warn", "Deployment", "web", 1)
	warning.Type = corev1.EventTypeWarning
	tests := []struct {
		name   string
		opts   Options
		event  *corev1.Event
		reason string
	}{
		{"type not listed", Options{Types: []string{corev1.EventTypeWarning}}, coreEvent("a", "Deployment", "web", 1), metrics.DropFilteredType},
		{"reason not listed", Options{Reasons: []string{"Other"}}, coreEvent("a", "Deployment", "web", 1), metrics.DropFilteredReason},
		{"reason excluded", Options{ExcludeReasons: []string{"Scaled"}}, coreEvent("a", "Deployment", "web", 1), metrics.DropFilteredReason},
		{"older than max age", Options{}, old, metrics.DropTooOld},
		{"object not synced", Options{}, coreEvent("a", "Pod", "loner", 1), metrics.DropNotSynced},
		{"listed type passes", Options{Types: []string{corev1.EventTypeWarning}}, warning, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestController(t, tt.opts)
			tc.forward(t, tt.event)
			if tt.reason == "" {
				assert.Len(t, tc.upstreamEvents(t), 1)
				return
			}
			assert.Empty(t, tc.upstreamEvents(t))
			assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_dropped_total", map[string]string{"reason": tt.reason}), 0)
		})
	}
}

func TestUnmanagedNamespaceAndVanishedEventAreIgnored(t *testing.T) {
	tc := newTestController(t, Options{})
	e := coreEvent("x", "Deployment", "web", 1)
	e.Namespace = "kube-system"
	key := tc.put(e)
	require.NoError(t, tc.Reconcile(context.Background(), key))
	assert.Equal(t, 0, tc.outbox.Len())
	assert.Empty(t, tc.eventKeys(&metav1.ObjectMeta{Namespace: "kube-system", Name: "x"}))
	assert.Len(t, tc.eventKeys(&metav1.ObjectMeta{Namespace: "kcp-ns", Name: "x"}), 1)
	require.NoError(t, tc.Reconcile(context.Background(), tc.key("kcp-ns", "gone")))
	require.NoError(t, tc.send(context.Background(), tc.key("kcp-ns", "gone")))
}

func TestUpstreamRejectionIsDroppedAndErrorsRetried(t *testing.T) {
	tc := newTestController(t, Options{})
	tc.up.PrependReactor("create", "events", func(clienttesting.Action) (bool, runtime.Object, error) {
		err := apierrors.NewForbidden(corev1.Resource("events"), "x", errors.New("namespace terminating"))
		err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{Type: corev1.NamespaceTerminatingCause})
		return true, nil, err
	})
	tc.forward(t, coreEvent("a", "Deployment", "web", 1))
	assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_dropped_total", map[string]string{"reason": metrics.DropUpstreamRejected}), 0)

	// Any other 403 (an upstream API server whose authorizer has not synced yet) is retried.
	tc = newTestController(t, Options{})
	tc.up.PrependReactor("create", "events", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("events"), "x", errors.New("RBAC: not ready"))
	})
	forbidden := tc.put(coreEvent("a", "Deployment", "web", 1))
	require.NoError(t, tc.Reconcile(context.Background(), forbidden))
	for range maxForbiddenRetries {
		require.NoError(t, tc.Reconcile(context.Background(), forbidden))
		require.ErrorContains(t, tc.send(context.Background(), forbidden), "retrying")
	}
	require.NoError(t, tc.Reconcile(context.Background(), forbidden))
	require.NoError(t, tc.send(context.Background(), forbidden), "dropped after maxForbiddenRetries")
	assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_dropped_total", map[string]string{"reason": metrics.DropUpstreamRejected}), 0)
	assert.Empty(t, tc.forbidden)

	tc = newTestController(t, Options{})
	tc.up.PrependReactor("create", "events", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("busy")
	})
	key := tc.put(coreEvent("a", "Deployment", "web", 1))
	require.NoError(t, tc.Reconcile(context.Background(), key))
	require.ErrorContains(t, tc.send(context.Background(), key), "create upstream Event team-a/web.")
}

func TestSendResolvesWhenNotResolvedBefore(t *testing.T) {
	tc := newTestController(t, Options{})
	key := tc.put(coreEvent("a", "ReplicaSet", "web-1", 1))
	require.NoError(t, tc.send(context.Background(), key))
	assert.Len(t, tc.upstreamEvents(t), 1)
}

func TestOutboxDropsAreCounted(t *testing.T) {
	tc := newTestController(t, Options{Limits: Limits{PerObjectPending: 1, Pending: 1}})
	tc.dropped("a", dropObject)
	tc.dropped("b", dropGlobal)
	assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_dropped_total", map[string]string{"reason": metrics.DropObjectRateLimit}), 0)
	assert.InDelta(t, 1.0, tc.metric(t, "tmc_syncer_events_dropped_total", map[string]string{"reason": metrics.DropGlobalRateLimit}), 0)
}

func TestNewValidates(t *testing.T) {
	base := Config{Downstream: fake.NewClientset(), Upstream: fake.NewClientset(), Metadata: chain().get, Mapper: testMapper(), SyncTargetKey: "k", SyncTargetName: "n"}
	_, err := New(Config{})
	require.Error(t, err)
	bad := base
	bad.SyncTargetName = ""
	_, err = New(bad)
	require.ErrorContains(t, err, "sync target")
	bad = base
	bad.Options.API = "v2"
	_, err = New(bad)
	require.ErrorContains(t, err, "unknown Event API")
	c, err := New(base)
	require.NoError(t, err)
	assert.Equal(t, ControllerName, c.Name())
	assert.Equal(t, 2, c.Workers())
	assert.NotNil(t, c.Runner())
	assert.Equal(t, 0, c.Pending())
	assert.Equal(t, "ns", func() string { ns, _ := splitKey("ns/name"); return ns }())
	_, name := splitKey("name")
	assert.Equal(t, "name", name)
}

// TestRunForwardsFromInformers runs the controller on fake clientsets, in both Event APIs.
func TestRunForwardsFromInformers(t *testing.T) {
	for _, api := range []string{APICoreV1, APIEventsV1} {
		t.Run(api, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kcp-ns", Labels: map[string]string{identity.DownstreamClusterLabel: "k1"}}}
			// Run uses the real clock, so the Event must be recent by it (MaxAge).
			live := coreEvent("web.1", "Deployment", "web", 1)
			live.FirstTimestamp, live.LastTimestamp = metav1.Now(), metav1.Now()
			var ev runtime.Object = live
			if api == APIEventsV1 {
				ev = &eventsv1.Event{
					ObjectMeta: metav1.ObjectMeta{Name: "web.1", Namespace: "kcp-ns", UID: "uid-web.1"},
					Regarding:  corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "kcp-ns", Name: "web"},
					Reason:     "Scaled", Note: "Scaled up", Type: corev1.EventTypeNormal, EventTime: metav1.NewMicroTime(time.Now()),
					Series: &eventsv1.EventSeries{Count: 2, LastObservedTime: metav1.NewMicroTime(time.Now())},
				}
			}
			down := fake.NewClientset(ns, ev)
			up := fake.NewClientset()
			c, err := New(Config{Downstream: down, Upstream: up, Metadata: chain().get, Mapper: testMapper(),
				SyncTargetKey: "k1", SyncTargetName: "phys", Options: Options{API: api}})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			require.Eventually(t, func() bool {
				l, err := up.CoreV1().Events("team-a").List(ctx, metav1.ListOptions{})
				return err == nil && len(l.Items) == 1 && l.Items[0].Message == "Scaled up"
			}, 10*time.Second, 10*time.Millisecond, "the Event is forwarded")
			cancel()
			require.NoError(t, <-done)
		})
	}
}
