package queue

import (
	"context"
	"time"
)

// Controller is what a syncer controller implements to run on the engine.
type Controller interface {
	// Name names the controller in logs and metrics; it must be unique per process.
	Name() string
	// Workers is the number of keys reconciled concurrently (at least 1 is used).
	Workers() int
	// Reconcile converges the object named by key. Returning an error retries the
	// key with backoff; a *RequeueAfterError retries it after a fixed delay.
	Reconcile(ctx context.Context, key Key) error
}

// Result is the outcome of one Reconcile call, as reported to an Observer.
type Result string

// The results of a reconcile.
const (
	ResultSuccess Result = "success"
	ResultError   Result = "error"
	ResultRequeue Result = "requeue"
	ResultPanic   Result = "panic"
)

// Observer is told about every reconcile, e.g. to count it in metrics.
type Observer interface {
	ObserveReconcile(controller string, key Key, result Result, duration time.Duration)
}

// LatencyObserver is an Observer that is also told the sync latency of a key: from
// the first enqueue of a change (an informer event) to the reconcile that converged
// it, retries included.
type LatencyObserver interface {
	ObserveSyncLatency(controller string, key Key, latency time.Duration)
}
