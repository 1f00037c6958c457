package client

import (
	"math/rand/v2"
	"time"
)

// Defaults of the reconnect backoff.
const (
	DefaultBackoffInitial    = 250 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultBackoffResetAfter = 60 * time.Second
)

// Backoff is a capped exponential backoff with full jitter: the n-th delay
// (n from 1) is uniform in [0, min(Max, Initial·2^(n-1))).
type Backoff struct {
	// Initial is the upper bound of the first delay. Default 250 ms.
	Initial time.Duration
	// Max caps every delay. Default 30 s.
	Max time.Duration
	// ResetAfter is how long a connection must stay up before the next
	// failure starts again from Initial. Default 60 s.
	ResetAfter time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = DefaultBackoffResetAfter
	}
	return b
}

// Bound returns the upper bound of the delay before attempt n (n ≥ 1).
func (b Backoff) Bound(n int) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Delay returns the jittered delay before attempt n; rnd returns a number in
// [0, 1) (nil means math/rand/v2).
func (b Backoff) Delay(n int, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	return time.Duration(rnd() * float64(b.Bound(n)))
}

// Clock is the time source of the connection manager; tests inject a fake.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
