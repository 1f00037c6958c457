package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
)

// DefaultDrainTimeout bounds how long Run waits for queued keys on shutdown.
const DefaultDrainTimeout = 30 * time.Second

// Options configure a Runner. The zero value is usable.
type Options struct {
	// RateLimit configures retries.
	RateLimit RateLimit
	// MetricsProvider receives the work-queue metrics (depth, adds, latency, ...).
	// Nil means client-go's global provider, which is a no-op unless set.
	MetricsProvider workqueue.MetricsProvider
	// Observer, when set, is told about every reconcile.
	Observer Observer
	// DrainTimeout bounds the drain on shutdown; zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// Runner owns the queue and workers of one Controller.
type Runner struct {
	c            Controller
	queue        workqueue.TypedRateLimitingInterface[Key]
	observer     Observer
	drainTimeout time.Duration
	stats        *stats
	runOnce      sync.Once

	// firstSeen holds, per key, when the change being worked on was first enqueued;
	// it is cleared by the reconcile that succeeds.
	seenMu    sync.Mutex
	firstSeen map[Key]time.Time
	seenPeak  int // the most keys firstSeen held since it was made (see shrinkAfter)
}

// NewRunner returns a Runner for c. Keys may be enqueued before Run is called.
func NewRunner(c Controller, opts Options) *Runner {
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(opts.RateLimit.Limiter(),
		workqueue.TypedRateLimitingQueueConfig[Key]{Name: c.Name(), MetricsProvider: opts.MetricsProvider})
	return &Runner{
		c:            c,
		queue:        q,
		observer:     opts.Observer,
		drainTimeout: opts.DrainTimeout,
		stats:        newStats(),
		firstSeen:    map[Key]time.Time{},
	}
}

// Name returns the controller's name.
func (r *Runner) Name() string { return r.c.Name() }

// Enqueue adds key to the queue; a key already waiting is not added twice.
func (r *Runner) Enqueue(key Key) {
	if r.queue.ShuttingDown() {
		return
	}
	r.stats.pending(key)
	r.seen(key)
	r.queue.Add(key)
}

// seen records when a change of key was first enqueued, unless one is pending.
func (r *Runner) seen(key Key) {
	r.seenMu.Lock()
	if _, ok := r.firstSeen[key]; !ok {
		r.firstSeen[key] = time.Now()
		r.seenPeak = max(r.seenPeak, len(r.firstSeen))
	}
	r.seenMu.Unlock()
}

// converged reports the sync latency of key once a reconcile succeeded.
func (r *Runner) converged(key Key, now time.Time) {
	r.seenMu.Lock()
	first, ok := r.firstSeen[key]
	delete(r.firstSeen, key)
	if len(r.firstSeen) == 0 && r.seenPeak >= shrinkAfter {
		r.firstSeen, r.seenPeak = map[Key]time.Time{}, 0
	}
	r.seenMu.Unlock()
	if lo, isLatency := r.observer.(LatencyObserver); ok && isLatency {
		lo.ObserveSyncLatency(r.c.Name(), key, now.Sub(first))
	}
}

// EnqueueAfter adds key to the queue after d.
func (r *Runner) EnqueueAfter(key Key, d time.Duration) {
	if r.queue.ShuttingDown() {
		return
	}
	r.stats.pending(key)
	r.queue.AddAfter(key, d)
}

// Len returns the number of keys ready to be processed (not counting delayed ones).
func (r *Runner) Len() int { return r.queue.Len() }

// Run starts the controller's workers and blocks until ctx ends. It then stops
// taking new keys, lets the workers finish what is queued (bounded by the drain
// timeout, after which the reconcile context is cancelled) and returns once every
// worker has stopped. Run may be called once.
func (r *Runner) Run(ctx context.Context) error {
	started := false
	r.runOnce.Do(func() { started = true })
	if !started {
		return fmt.Errorf("controller %s: Run called twice", r.c.Name())
	}
	logger := klog.FromContext(ctx).WithValues("controller", r.c.Name())
	workers := max(r.c.Workers(), 1)

	// Reconciles keep running during the drain, so they get a context that outlives ctx.
	rctx, cancel := context.WithCancel(klog.NewContext(context.WithoutCancel(ctx), logger))
	defer cancel()

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for r.processNext(rctx) {
			}
		})
	}
	logger.V(2).Info("started workers", "workers", workers)

	<-ctx.Done()
	logger.V(2).Info("draining queue", "queued", r.queue.Len())
	drained := make(chan struct{})
	go func() {
		r.queue.ShutDownWithDrain()
		close(drained)
	}()
	timer := time.NewTimer(r.drainTimeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		logger.Info("drain timed out, cancelling in-flight reconciles", "timeout", r.drainTimeout)
		cancel()
		r.queue.ShutDown()
	}
	wg.Wait()
	logger.V(2).Info("stopped workers")
	return nil
}

func (r *Runner) processNext(ctx context.Context) bool {
	key, shutdown := r.queue.Get()
	if shutdown {
		return false
	}
	defer r.queue.Done(key)
	r.stats.taken(key)

	start := time.Now()
	err := r.reconcile(ctx, key)
	r.handle(ctx, key, err, time.Since(start))
	return true
}

func (r *Runner) reconcile(ctx context.Context, key Key) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	if key.Cluster != "" {
		// Under kcp every write of this reconcile goes to the key's workspace (see
		// clients.ForAllClusters); on a plain kube-apiserver the value is unused.
		ctx = clients.WithCluster(ctx, key.Cluster)
	}
	return r.c.Reconcile(ctx, key)
}

func (r *Runner) handle(ctx context.Context, key Key, err error, d time.Duration) {
	logger := klog.FromContext(ctx).WithValues("key", key.String())
	result := ResultSuccess
	var pe *PanicError
	switch ra, isRequeue := asRequeueAfter(err); {
	case err == nil:
		r.queue.Forget(key)
	case isRequeue:
		r.queue.Forget(key)
		if !r.queue.ShuttingDown() {
			r.stats.pending(key)
			r.queue.AddAfter(key, ra.After)
		}
		result = ResultRequeue
		if ra.Err != nil {
			result = ResultError
			logger.Error(ra.Err, "reconcile failed, retrying later", "after", ra.After)
		}
	case isUnreachable(err):
		// The API server is down (restarting, or the tunnel to it is): every key fails
		// alike, so growing each key's backoff (and spending the shared retry budget)
		// would only delay the recovery by minutes. Retry at a steady pace instead.
		result = ResultError
		logger.Error(err, "reconcile failed, API server unreachable, retrying", "after", UnreachableRetryDelay)
		r.queue.Forget(key)
		if !r.queue.ShuttingDown() {
			r.stats.pending(key)
			r.queue.AddAfter(key, UnreachableRetryDelay)
		}
	case errors.As(err, &pe):
		result = ResultPanic
		logger.Error(err, "recovered panic in reconcile", "stack", string(pe.Stack))
		r.retry(key)
	default:
		result = ResultError
		logger.Error(err, "reconcile failed, retrying with backoff", "retries", r.queue.NumRequeues(key))
		r.retry(key)
	}
	if result == ResultRequeue {
		err = nil
	}
	now := time.Now()
	r.stats.done(key, err, now)
	if result == ResultSuccess {
		r.converged(key, now)
	}
	if r.observer != nil {
		r.observer.ObserveReconcile(r.c.Name(), key, result, d)
	}
}

func (r *Runner) retry(key Key) {
	if r.queue.ShuttingDown() {
		return
	}
	r.stats.pending(key)
	r.queue.AddRateLimited(key)
}

// UnreachableRetryDelay is how soon a key is retried when its reconcile failed because
// an API server could not be reached.
const UnreachableRetryDelay = 2 * time.Second

// isUnreachable reports an error of an API server that is not there: the connection was
// refused or reset, or it answered 503 (starting up, or a proxy in front of it).
func isUnreachable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		apierrors.IsServiceUnavailable(err)
}
