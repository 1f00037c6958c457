package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
)

var deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

func key(name string) Key {
	return Key{Direction: Down, GVR: deployments, Cluster: "root", Namespace: "ns", Name: name}
}

// fakeController calls fn for each reconcile and records the keys it saw.
type fakeController struct {
	name    string
	workers int
	fn      func(ctx context.Context, key Key, attempt int) error

	mu       sync.Mutex
	attempts map[Key]int
	times    map[Key][]time.Time
}

func newFake(fn func(ctx context.Context, key Key, attempt int) error) *fakeController {
	return &fakeController{name: "fake", workers: 2, fn: fn, attempts: map[Key]int{}, times: map[Key][]time.Time{}}
}

func (f *fakeController) Name() string { return f.name }
func (f *fakeController) Workers() int { return f.workers }
func (f *fakeController) Reconcile(ctx context.Context, key Key) error {
	f.mu.Lock()
	f.attempts[key]++
	n := f.attempts[key]
	f.times[key] = append(f.times[key], time.Now())
	f.mu.Unlock()
	if f.fn == nil {
		return nil
	}
	return f.fn(ctx, key, n)
}

func (f *fakeController) count(k Key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[k]
}

type recordingObserver struct {
	mu      sync.Mutex
	results map[Result]int
}

func (o *recordingObserver) ObserveReconcile(_ string, _ Key, r Result, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.results == nil {
		o.results = map[Result]int{}
	}
	o.results[r]++
}

func (o *recordingObserver) get(r Result) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.results[r]
}

func start(t *testing.T, r *Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("runner did not stop")
		}
	}
}

func TestFailingReconcileIsRetriedWithBackoffThenSucceeds(t *testing.T) {
	c := newFake(func(_ context.Context, _ Key, attempt int) error {
		if attempt < 4 {
			return errors.New("boom")
		}
		return nil
	})
	obs := &recordingObserver{}
	r := NewRunner(c, Options{RateLimit: RateLimit{BaseDelay: 10 * time.Millisecond, MaxDelay: time.Second}, Observer: obs})
	stop := start(t, r)
	defer stop()

	r.Enqueue(key("a"))
	require.Eventually(t, func() bool { return c.count(key("a")) == 4 }, 5*time.Second, 5*time.Millisecond,
		"key should be reconciled four times")
	require.Eventually(t, func() bool { return obs.get(ResultSuccess) == 1 }, time.Second, 5*time.Millisecond)
	assert.Equal(t, 3, obs.get(ResultError))

	c.mu.Lock()
	ts := c.times[key("a")]
	c.mu.Unlock()
	// Delays double: 10ms, 20ms, 40ms.
	for i, min := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		assert.GreaterOrEqual(t, ts[i+1].Sub(ts[i]), min, "retry %d came too early", i+1)
	}
	stats := r.Stats()
	require.Len(t, stats, 1)
	assert.Equal(t, int64(1), stats[0].ReconcilesOK)
	assert.Equal(t, int64(3), stats[0].ReconcilesFailed)
	assert.Contains(t, stats[0].LastError, "boom")
	assert.Equal(t, 0, stats[0].Pending)
	assert.Equal(t, 0, r.queue.NumRequeues(key("a")), "success must Forget the key")
}

func TestPanicIsRecoveredAndRetried(t *testing.T) {
	c := newFake(func(_ context.Context, _ Key, attempt int) error {
		if attempt == 1 {
			panic("kaboom")
		}
		return nil
	})
	obs := &recordingObserver{}
	r := NewRunner(c, Options{RateLimit: RateLimit{BaseDelay: time.Millisecond}, Observer: obs})
	stop := start(t, r)
	defer stop()

	r.Enqueue(key("p"))
	require.Eventually(t, func() bool { return obs.get(ResultSuccess) == 1 }, 5*time.Second, 5*time.Millisecond,
		"panicking key should be retried and succeed")
	assert.Equal(t, 1, obs.get(ResultPanic))
	assert.Contains(t, r.Stats()[0].LastError, "kaboom")
}

func TestRequeueAfterUsesFixedDelay(t *testing.T) {
	c := newFake(func(_ context.Context, _ Key, attempt int) error {
		switch attempt {
		case 1:
			return Permanent(errors.New("forbidden"))
		case 2:
			return RequeueAfter(20*time.Millisecond, nil)
		}
		return nil
	})
	obs := &recordingObserver{}
	r := NewRunner(c, Options{Observer: obs})
	// Shorten the permanent delay through the same code path.
	c.fn = func(_ context.Context, _ Key, attempt int) error {
		switch attempt {
		case 1:
			return RequeueAfter(50*time.Millisecond, errors.New("forbidden"))
		case 2:
			return RequeueAfter(20*time.Millisecond, nil)
		}
		return nil
	}
	stop := start(t, r)
	defer stop()

	r.Enqueue(key("r"))
	require.Eventually(t, func() bool { return c.count(key("r")) == 3 }, 5*time.Second, 5*time.Millisecond)
	c.mu.Lock()
	ts := c.times[key("r")]
	c.mu.Unlock()
	assert.GreaterOrEqual(t, ts[1].Sub(ts[0]), 50*time.Millisecond)
	assert.GreaterOrEqual(t, ts[2].Sub(ts[1]), 20*time.Millisecond)
	require.Eventually(t, func() bool { return obs.get(ResultSuccess) == 1 }, time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, obs.get(ResultError))
	assert.Equal(t, 1, obs.get(ResultRequeue))
}

func TestShutdownDrainsQueuedKeys(t *testing.T) {
	release := make(chan struct{})
	c := newFake(func(ctx context.Context, _ Key, _ int) error {
		<-release
		return ctx.Err()
	})
	c.workers = 1
	r := NewRunner(c, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	for _, n := range []string{"a", "b", "c"} {
		r.Enqueue(key(n))
	}
	require.Eventually(t, func() bool { return c.count(key("a")) == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.Eventually(t, r.queue.ShuttingDown, 5*time.Second, time.Millisecond)
	r.Enqueue(key("late")) // refused once shutting down
	select {
	case <-done:
		t.Fatal("Run returned before the queue drained")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after draining")
	}
	for _, n := range []string{"a", "b", "c"} {
		assert.Equal(t, 1, c.count(key(n)), "key %s should have been processed during drain", n)
	}
	assert.Equal(t, 0, c.count(key("late")))
}

func TestDrainTimeoutCancelsInFlightReconciles(t *testing.T) {
	c := newFake(func(ctx context.Context, _ Key, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	})
	r := NewRunner(c, Options{DrainTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	r.Enqueue(key("stuck"))
	require.Eventually(t, func() bool { return c.count(key("stuck")) == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("drain timeout did not cancel the stuck reconcile")
	}
}

func TestRunTwiceFails(t *testing.T) {
	c := newFake(nil)
	r := NewRunner(c, Options{})
	stop := start(t, r)
	defer stop()
	r.Enqueue(key("x"))
	require.Eventually(t, func() bool { return c.count(key("x")) == 1 }, 5*time.Second, time.Millisecond)
	require.Error(t, r.Run(context.Background()))
}

func TestDuplicateKeysAreCoalesced(t *testing.T) {
	c := newFake(nil)
	r := NewRunner(c, Options{})
	for range 5 {
		r.Enqueue(key("dup"))
	}
	assert.Equal(t, 1, r.Len())
	assert.Equal(t, 1, r.Stats()[0].Pending)
	stop := start(t, r)
	defer stop()
	require.Eventually(t, func() bool { return r.Stats()[0].ReconcilesOK == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, 1, c.count(key("dup")))
}

func TestEventHandlerEnqueuesObjectKeys(t *testing.T) {
	r := NewRunner(newFake(nil), Options{})
	h := r.EventHandler(ObjectKeys(Down, deployments, "fallback"))

	withCluster := &metav1.ObjectMeta{Namespace: "ns", Name: "a", Annotations: map[string]string{"kcp.io/cluster": "lc"}}
	plain := &metav1.ObjectMeta{Namespace: "ns", Name: "b"}
	h.OnAdd(withCluster, false)
	h.OnUpdate(plain, plain)
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/c", Obj: &metav1.ObjectMeta{Namespace: "ns", Name: "c"}})
	h.OnDelete("not an object")

	got := map[Key]bool{}
	for r.Len() > 0 {
		k, _ := r.queue.Get()
		got[k] = true
		r.queue.Done(k)
	}
	assert.Equal(t, map[Key]bool{
		{Direction: Down, GVR: deployments, Cluster: "lc", Namespace: "ns", Name: "a"}:       true,
		{Direction: Down, GVR: deployments, Cluster: "fallback", Namespace: "ns", Name: "b"}: true,
		{Direction: Down, GVR: deployments, Cluster: "fallback", Namespace: "ns", Name: "c"}: true,
	}, got)
}

func TestEnqueueAfterDelaysKey(t *testing.T) {
	var n atomic.Int32
	c := newFake(func(context.Context, Key, int) error { n.Add(1); return nil })
	r := NewRunner(c, Options{})
	stop := start(t, r)
	defer stop()
	r.EnqueueAfter(key("later"), 30*time.Millisecond)
	assert.Equal(t, int32(0), n.Load())
	require.Eventually(t, func() bool { return n.Load() == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, "fake", r.Name())
}

func TestKeyString(t *testing.T) {
	tests := []struct {
		key  Key
		want string
	}{
		{key("web"), "down deployments.v1.apps root|ns/web"},
		{Key{Direction: Up, GVR: schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, Name: "x"}, "up namespaces.v1 x"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.key.String())
	}
}

func TestErrorsUnwrapAndDescribe(t *testing.T) {
	base := errors.New("base")
	err := Permanent(base)
	require.ErrorIs(t, err, base)
	assert.Contains(t, err.Error(), "retry in 5m0s")
	assert.Equal(t, "requeue after 1s", RequeueAfter(time.Second, nil).Error())
	assert.Contains(t, (&PanicError{Value: "x"}).Error(), "panicked: x")
}

func TestRateLimitDefaults(t *testing.T) {
	rl := RateLimit{}.withDefaults()
	assert.Equal(t, RateLimit{BaseDelay: 5 * time.Millisecond, MaxDelay: 5 * time.Minute, QPS: 10, Burst: 100}, rl)
	lim := RateLimit{BaseDelay: time.Second, MaxDelay: time.Millisecond}.Limiter()
	assert.Equal(t, time.Second, lim.When(key("x")), "max below base is raised to base")
	assert.Equal(t, time.Second, lim.When(key("x")))
}

// latencyObserver records sync latencies per key.
type latencyObserver struct {
	recordingObserver
	latencies map[Key][]time.Duration
}

func (o *latencyObserver) ObserveSyncLatency(_ string, k Key, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.latencies == nil {
		o.latencies = map[Key][]time.Duration{}
	}
	o.latencies[k] = append(o.latencies[k], d)
}

func (o *latencyObserver) get(k Key) []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]time.Duration(nil), o.latencies[k]...)
}

func TestSyncLatencySpansRetriesUntilTheChangeConverges(t *testing.T) {
	c := newFake(func(_ context.Context, _ Key, attempt int) error {
		if attempt < 3 {
			return errors.New("boom")
		}
		return nil
	})
	obs := &latencyObserver{}
	r := NewRunner(c, Options{RateLimit: RateLimit{BaseDelay: 20 * time.Millisecond, MaxDelay: time.Second}, Observer: obs})
	stop := start(t, r)
	defer stop()

	r.Enqueue(key("a"))
	require.Eventually(t, func() bool { return len(obs.get(key("a"))) == 1 }, 5*time.Second, 5*time.Millisecond,
		"one latency for one converged change")
	assert.GreaterOrEqual(t, obs.get(key("a"))[0], 60*time.Millisecond, "the latency includes both retry delays (20 + 40 ms)")
	assert.Equal(t, 3, c.count(key("a")))

	r.Enqueue(key("a"))
	require.Eventually(t, func() bool { return len(obs.get(key("a"))) == 2 }, 5*time.Second, 5*time.Millisecond,
		"the next change is measured from its own enqueue")
	assert.Less(t, obs.get(key("a"))[1], obs.get(key("a"))[0])
}

// TestUnreachableAPIServerIsRetriedAtASteadyPace: while an API server is down, a key is
// retried every UnreachableRetryDelay instead of with a growing backoff.
func TestUnreachableAPIServerIsRetriedAtASteadyPace(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, err := range []error{fmt.Errorf("get x: %w", refused), apierrors.NewServiceUnavailable("starting")} {
		assert.True(t, isUnreachable(err), "%v", err)
	}
	assert.False(t, isUnreachable(errors.New("conflict")))
	assert.False(t, isUnreachable(nil))

	c := newFake(func(_ context.Context, _ Key, attempt int) error {
		if attempt == 1 {
			return fmt.Errorf("get x: %w", refused)
		}
		return nil
	})
	r := NewRunner(c, Options{})
	stop := start(t, r)
	defer stop()
	r.Enqueue(key("u"))
	require.Eventually(t, func() bool { return c.count(key("u")) == 2 }, 10*time.Second, 10*time.Millisecond)
	c.mu.Lock()
	ts := c.times[key("u")]
	c.mu.Unlock()
	assert.GreaterOrEqual(t, ts[1].Sub(ts[0]), UnreachableRetryDelay, "retried after the steady delay, not the 5 ms first backoff")
}

func TestReconcileContextCarriesTheKeysCluster(t *testing.T) {
	got := make(chan string, 1)
	c := newFake(func(ctx context.Context, _ Key, _ int) error {
		cluster, _ := clients.ClusterFrom(ctx)
		got <- cluster
		return nil
	})
	r := NewRunner(c, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	k := key("a")
	k.Cluster = "root:team-a"
	r.Enqueue(k)
	select {
	case cluster := <-got:
		assert.Equal(t, "root:team-a", cluster)
	case <-time.After(10 * time.Second):
		t.Fatal("key was not reconciled")
	}
}
