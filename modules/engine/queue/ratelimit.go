package queue

import (
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/util/workqueue"
)

// Default retry settings: per-item exponential backoff from 5 ms to 5 min under
// an overall token bucket of 10 retries/s with a burst of 100.
const (
	DefaultBaseDelay = 5 * time.Millisecond
	DefaultMaxDelay  = 5 * time.Minute
	DefaultQPS       = 10
	DefaultBurst     = 100
)

// RateLimit configures how failed keys are retried. Zero fields take the defaults.
type RateLimit struct {
	// BaseDelay is the first per-item retry delay; it doubles on each failure.
	BaseDelay time.Duration
	// MaxDelay caps the per-item delay.
	MaxDelay time.Duration
	// QPS and Burst size the overall token bucket shared by all retries of a queue.
	QPS   float64
	Burst int
}

func (rl RateLimit) withDefaults() RateLimit {
	if rl.BaseDelay <= 0 {
		rl.BaseDelay = DefaultBaseDelay
	}
	if rl.MaxDelay <= 0 {
		rl.MaxDelay = DefaultMaxDelay
	}
	if rl.MaxDelay < rl.BaseDelay {
		rl.MaxDelay = rl.BaseDelay
	}
	if rl.QPS <= 0 {
		rl.QPS = DefaultQPS
	}
	if rl.Burst <= 0 {
		rl.Burst = DefaultBurst
	}
	return rl
}

// Limiter returns the work-queue rate limiter for rl: the maximum of the
// per-item exponential backoff and the overall token bucket.
func (rl RateLimit) Limiter() workqueue.TypedRateLimiter[Key] {
	rl = rl.withDefaults()
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[Key](rl.BaseDelay, rl.MaxDelay),
		&workqueue.TypedBucketRateLimiter[Key]{Limiter: rate.NewLimiter(rate.Limit(rl.QPS), rl.Burst)},
	)
}
