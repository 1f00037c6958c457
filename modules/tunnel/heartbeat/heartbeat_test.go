package heartbeat

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clocktesting "k8s.io/utils/clock/testing"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func syncTarget(name, uid string, status map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
		"metadata": map[string]any{"name": name, "uid": uid, "resourceVersion": "1"},
	}}
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

func fakeClient(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{workloadv1alpha1.SyncTargetsResource: "SyncTargetList"}, objs...)
}

func read(t *testing.T, c *dynamicfake.FakeDynamicClient, name string) *workloadv1alpha1.SyncTarget {
	t.Helper()
	u, err := c.Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	st := &workloadv1alpha1.SyncTarget{}
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, st))
	return st
}

type recorder struct {
	mu        sync.Mutex
	successes []time.Time
	failures  int
}

func (r *recorder) HeartbeatSucceeded(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.successes = append(r.successes, at)
}

func (r *recorder) HeartbeatFailed(error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
}

func TestBeatWritesHeartbeatAndSyncerReady(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status map[string]any
	}{
		{name: "no status yet"},
		{name: "status without heartbeat", status: map[string]any{"syncedResources": []any{}}},
		{name: "other conditions present", status: map[string]any{
			"lastSyncerHeartbeatTime": "2026-11-27T11:00:00Z",
			"conditions": []any{map[string]any{"type": "HeartbeatHealthy", "status": "False", "reason": "ErrorHeartbeat",
				"lastTransitionTime": "2026-11-27T11:00:00Z"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeClient(syncTarget("st", "uid-1", tc.status))
			clk := clocktesting.NewFakeClock(t0)
			var notReady error
			obs := &recorder{}
			h, err := New(Options{Client: c.Resource(workloadv1alpha1.SyncTargetsResource), Name: "st", UID: "uid-1",
				Clock: clk, Observer: obs, Ready: func(context.Context) error { return notReady }})
			require.NoError(t, err)
			ctx := context.Background()

			require.NoError(t, h.Beat(ctx))
			st := read(t, c, "st")
			require.NotNil(t, st.Status.LastSyncerHeartbeatTime)
			assert.True(t, st.Status.LastSyncerHeartbeatTime.Time.Equal(t0))
			ready := st.Status.Conditions.Get(workloadv1alpha1.SyncerReady)
			require.NotNil(t, ready)
			assert.Equal(t, corev1.ConditionTrue, ready.Status)
			assert.True(t, ready.LastTransitionTime.Time.Equal(t0))
			if tc.status != nil && tc.status["conditions"] != nil {
				assert.NotNil(t, st.Status.Conditions.Get(workloadv1alpha1.HeartbeatHealthy), "other conditions are kept")
			}

			clk.Step(10 * time.Second)
			require.NoError(t, h.Beat(ctx))
			st = read(t, c, "st")
			assert.True(t, st.Status.LastSyncerHeartbeatTime.Time.Equal(t0.Add(10*time.Second)), "heartbeat advances")
			assert.True(t, st.Status.Conditions.Get(workloadv1alpha1.SyncerReady).LastTransitionTime.Time.Equal(t0),
				"lastTransitionTime stays while the status does not flip")

			clk.Step(10 * time.Second)
			notReady = NotReady("InformersNotSynced", "deployments.apps not synced")
			require.NoError(t, h.Beat(ctx))
			ready = read(t, c, "st").Status.Conditions.Get(workloadv1alpha1.SyncerReady)
			assert.Equal(t, corev1.ConditionFalse, ready.Status)
			assert.Equal(t, "InformersNotSynced", ready.Reason)
			assert.Equal(t, "deployments.apps not synced", ready.Message)
			assert.Equal(t, workloadv1alpha1.ConditionSeverityError, ready.Severity)
			assert.True(t, ready.LastTransitionTime.Time.Equal(t0.Add(20*time.Second)))

			clk.Step(10 * time.Second)
			notReady = errors.New("last round: upstream unreachable")
			require.NoError(t, h.Beat(ctx))
			ready = read(t, c, "st").Status.Conditions.Get(workloadv1alpha1.SyncerReady)
			assert.Equal(t, ReasonSyncerNotReady, ready.Reason)
			assert.Equal(t, "last round: upstream unreachable", ready.Message)
			assert.True(t, ready.LastTransitionTime.Time.Equal(t0.Add(20*time.Second)), "still False: no new transition")
			assert.Len(t, obs.successes, 4)
		})
	}
}

func TestBeatRefusesAnotherUID(t *testing.T) {
	c := fakeClient(syncTarget("st", "uid-new", nil))
	obs := &recorder{}
	h, err := New(Options{Client: c.Resource(workloadv1alpha1.SyncTargetsResource), Name: "st", UID: "uid-old", Observer: obs})
	require.NoError(t, err)
	err = h.Beat(context.Background())
	require.ErrorContains(t, err, "has UID uid-new, want uid-old")
	assert.Nil(t, read(t, c, "st").Status.LastSyncerHeartbeatTime)
	assert.Equal(t, 1, obs.failures)
}

func TestPatchTestsUID(t *testing.T) {
	// The object was replaced (new UID) after the heartbeater read it: the
	// patch's test operation must fail instead of writing the new object.
	c := fakeClient(syncTarget("st", "uid-1", nil))
	h, err := New(Options{Client: c.Resource(workloadv1alpha1.SyncTargetsResource), Name: "st"})
	require.NoError(t, err)
	require.NoError(t, h.Beat(context.Background()))
	require.NoError(t, c.Tracker().Update(workloadv1alpha1.SyncTargetsResource, syncTarget("st", "uid-2", nil), ""))
	require.Error(t, h.Beat(context.Background()))
	assert.Nil(t, read(t, c, "st").Status.LastSyncerHeartbeatTime)
}

// failingClient fails every call and reports each on calls.
type failingClient struct{ calls chan struct{} }

func (f failingClient) Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error) {
	f.calls <- struct{}{}
	return nil, errors.New("control plane down")
}

func (f failingClient) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*unstructured.Unstructured, error) {
	return nil, errors.New("unexpected patch")
}

func TestRunBacksOffExponentiallyWithJitter(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	calls := make(chan struct{}, 16)
	h, err := New(Options{Client: failingClient{calls}, Name: "st", Clock: clk, Rand: func() float64 { return 0.5 },
		Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	<-calls // first attempt at once
	// rnd 0.5 → delay = 3/4 of the bound: 1 s, 2 s, 4 s, 8 s, 8 s (cap).
	for i, bound := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		want := bound * 3 / 4
		require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond, "retry %d: heartbeater is not waiting", i+1)
		clk.Step(want - time.Millisecond)
		select {
		case <-calls:
			t.Fatalf("retry %d came before %s", i+1, want)
		case <-time.After(20 * time.Millisecond):
		}
		clk.Step(time.Millisecond)
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("retry %d did not come after %s", i+1, want)
		}
	}
}

func TestBackoffAndPeriod(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Minute}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 6: 32 * time.Second, 7: time.Minute, 30: time.Minute} {
		assert.Equal(t, want, b.Bound(n), "bound of retry %d", n)
	}
	for _, tc := range []struct {
		rnd  float64
		want time.Duration
	}{{0, 9 * time.Second}, {0.5, 10 * time.Second}, {1, 11 * time.Second}} {
		h, err := New(Options{Client: failingClient{}, Name: "st", Rand: func() float64 { return tc.rnd }})
		require.NoError(t, err)
		assert.Equal(t, tc.want, h.period(), "period with rnd %v (10 s ±10 %%)", tc.rnd)
		assert.GreaterOrEqual(t, h.retryDelay(3), 2*time.Second, "retry delay never below half the bound")
	}
}

func TestRunBeatsEveryJitteredPeriod(t *testing.T) {
	c := fakeClient(syncTarget("st", "uid-1", nil))
	clk := clocktesting.NewFakeClock(t0)
	obs := &recorder{}
	rnd := 0.0 // period 10 s · (1 + 0.1·(2·0 − 1)) = 9 s
	h, err := New(Options{Client: c.Resource(workloadv1alpha1.SyncTargetsResource), Name: "st", Clock: clk, Observer: obs,
		Rand: func() float64 { return rnd }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	beats := func() int {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return len(obs.successes)
	}
	require.Eventually(t, func() bool { return beats() == 1 }, 5*time.Second, time.Millisecond, "first beat at once")
	for i := 2; i <= 4; i++ {
		require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond)
		clk.Step(9*time.Second - time.Millisecond)
		assert.Never(t, func() bool { return beats() == i }, 20*time.Millisecond, time.Millisecond, "beat %d before 9 s", i)
		clk.Step(time.Millisecond)
		require.Eventually(t, func() bool { return beats() == i }, 5*time.Second, time.Millisecond, "beat %d after 9 s", i)
	}
	assert.True(t, read(t, c, "st").Status.LastSyncerHeartbeatTime.Time.Equal(t0.Add(27*time.Second)))
}
