package monitor

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clocktesting "k8s.io/utils/clock/testing"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sessions struct {
	mu        sync.Mutex
	connected bool
}

func (s *sessions) Connected(tunnel.Target) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

func (s *sessions) set(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = v
}

type heartbeats struct {
	mu   sync.Mutex
	last map[tunnel.Target]time.Time
}

func (h *heartbeats) TargetHeartbeat(t tunnel.Target, last time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last[t] = last
}

func (h *heartbeats) TargetDeleted(t tunnel.Target) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.last, t)
}

func (h *heartbeats) get(t tunnel.Target) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.last[t]
	return v, ok
}

func TestMonitorRequeuesAtExpiryAndFollowsTheTunnel(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
		"metadata": map[string]any{"name": "st", "uid": "uid-1", "resourceVersion": "1",
			"annotations": map[string]any{ClusterAnnotation: "root:org"}},
		"status": map[string]any{
			"lastSyncerHeartbeatTime": t0.Add(-5 * time.Second).Format(time.RFC3339),
			"conditions":              []any{map[string]any{"type": "SyncerReady", "status": "True", "lastTransitionTime": "2026-11-27T11:00:00Z"}},
		},
	}}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{workloadv1alpha1.SyncTargetsResource: "SyncTargetList"}, obj)
	sess := &sessions{connected: true}
	obs := &heartbeats{last: map[tunnel.Target]time.Time{}}
	m, err := New(Options{Client: client, Threshold: threshold, Period: period, Clock: clk, Sessions: sess, Observer: obs})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	get := func(typ workloadv1alpha1.ConditionType) *workloadv1alpha1.Condition {
		u, err := client.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, "st", metav1.GetOptions{})
		require.NoError(t, err)
		st := &workloadv1alpha1.SyncTarget{}
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, st))
		return st.Status.Conditions.Get(typ)
	}
	status := func(typ workloadv1alpha1.ConditionType) corev1.ConditionStatus {
		if c := get(typ); c != nil {
			return c.Status
		}
		return ""
	}
	require.Eventually(t, func() bool {
		return status(workloadv1alpha1.HeartbeatHealthy) == corev1.ConditionTrue && status(workloadv1alpha1.TunnelConnected) == corev1.ConditionTrue &&
			status(workloadv1alpha1.ReadyCondition) == corev1.ConditionTrue
	}, 5*time.Second, 10*time.Millisecond, "fresh heartbeat and live session: HeartbeatHealthy, TunnelConnected and Ready True")
	last, ok := obs.get(tunnel.Target{Cluster: "root:org", Name: "st"})
	require.True(t, ok, "observer told the last heartbeat")
	assert.True(t, last.Equal(t0.Add(-5*time.Second)))

	// Nothing changes on the object: only the requeue at expiry (35 s) can notice.
	clk.Step(34 * time.Second)
	assert.Never(t, func() bool { return status(workloadv1alpha1.HeartbeatHealthy) != corev1.ConditionTrue },
		100*time.Millisecond, 10*time.Millisecond, "still healthy before the threshold")
	clk.Step(2 * time.Second)
	require.Eventually(t, func() bool {
		c := get(workloadv1alpha1.HeartbeatHealthy)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == workloadv1alpha1.ErrorHeartbeatReason &&
			c.Message == "no heartbeat since 2026-11-27T11:59:55Z"
	}, 5*time.Second, 10*time.Millisecond, "HeartbeatHealthy=False (ErrorHeartbeat) once the heartbeat expired")
	assert.Equal(t, corev1.ConditionFalse, status(workloadv1alpha1.ReadyCondition))

	// The tunnel drops: the session event requeues the target; TunnelConnected
	// last flipped more than a period ago, so it flips at once.
	sess.set(false)
	m.TunnelObserver().Disconnected(tunnel.Target{Cluster: "root:org", Name: "st"}, tunnel.ReasonClosed)
	require.Eventually(t, func() bool { return status(workloadv1alpha1.TunnelConnected) == corev1.ConditionFalse },
		5*time.Second, 10*time.Millisecond, "TunnelConnected=False after the session ended")
	// It comes back at once: damped until one period after the last flip.
	sess.set(true)
	m.TunnelObserver().Connected(tunnel.Target{Cluster: "root:org", Name: "st"}, time.Second)
	assert.Never(t, func() bool { return status(workloadv1alpha1.TunnelConnected) == corev1.ConditionTrue },
		100*time.Millisecond, 10*time.Millisecond, "flip damped within one period")
	clk.Step(period)
	require.Eventually(t, func() bool { return status(workloadv1alpha1.TunnelConnected) == corev1.ConditionTrue },
		5*time.Second, 10*time.Millisecond, "TunnelConnected=True one period later")
	assert.True(t, m.HasSynced())
	assert.Len(t, m.SyncTargets(), 1)
}

// watchListRecorder records whether a watch asked for WatchList (sendInitialEvents).
type watchListRecorder struct {
	dynamic.Interface
	seen atomic.Bool
}

func (w *watchListRecorder) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return watchListResource{w.Interface.Resource(gvr), w}
}

type watchListResource struct {
	dynamic.NamespaceableResourceInterface
	w *watchListRecorder
}

func (r watchListResource) Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	if o.SendInitialEvents != nil {
		r.w.seen.Store(true)
	}
	return r.NamespaceableResourceInterface.Watch(ctx, o)
}

func TestMonitorNeverUsesWatchList(t *testing.T) {
	client := &watchListRecorder{Interface: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{workloadv1alpha1.SyncTargetsResource: "SyncTargetList"})}
	m, err := New(Options{Client: client, Threshold: threshold, Period: period, Sessions: &sessions{}, Observer: &heartbeats{last: map[tunnel.Target]time.Time{}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			require.ErrorIs(t, err, context.Canceled, "stopped, perhaps before Run saw the sync")
		}
	}()
	require.Eventually(t, m.HasSynced, 5*time.Second, 10*time.Millisecond, "the SyncTarget informer syncs")
	assert.False(t, client.seen.Load(), "kcp v0.11 answers WatchList with 422")
}
