package client

import (
	"math/rand/v2"
	"time"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// Defaults of the reconnect backoff.
const (
	DefaultBackoffInitial       = 250 * time.Millisecond
	DefaultBackoffMax           = 30 * time.Second
	DefaultBackoffResetAfter    = 60 * time.Second
	DefaultBackoffRestartWindow = 30 * time.Second
	DefaultBackoffRestartMax    = 500 * time.Millisecond
)

// maxQuickRestarts bounds the announced restarts in a row that are retried on
// the short RestartMax delays while no session in between became healthy: a
// server that accepts and at once announces going away, over and over, is
// broken rather than restarting, and from the next one on gets the exponential
// backoff. Five back-to-back restarts of a server (or a rolling update hopping
// across replicas) stay well inside it.
const maxQuickRestarts = 10

// Backoff paces reconnects. Failures get a capped exponential backoff with
// full jitter: the n-th delay (n from 1) is uniform in
// [0, min(Max, Initial·2^(n-1))). A server announcing that it goes away
// (tunnel.ReasonGoingAway) is not a failure: the counter starts over and, for
// RestartWindow, a server that is not reachable yet is retried every
// [0, RestartMax).
type Backoff struct {
	// Initial is the upper bound of the first delay. Default 250 ms.
	Initial time.Duration
	// Max caps every delay. Default 30 s.
	Max time.Duration
	// ResetAfter is how long a session must stay up to count as healthy even
	// if no keepalive ping was answered. A healthy session's end starts the
	// counter again from Initial; a session answering a ping (the first goes
	// out after Keepalive.Interval, 5 s) is healthy from then on. Default 60 s.
	ResetAfter time.Duration
	// RestartWindow is how long after the server announced going away
	// (tunnel.ReasonGoingAway) attempts that find no server (connection
	// refused, reset or unreachable, or HTTP 502/503/504 from the server or a
	// proxy in front of it) are retried on RestartMax instead of the
	// exponential bound, and do not grow it. Refusals of a server that answers
	// (401, 403, 409, handshake errors) and an open circuit breaker still back
	// off exponentially. Default 30 s; negative disables it.
	RestartWindow time.Duration
	// RestartMax bounds the jittered delays within RestartWindow, and the
	// delay right after the server announced going away. Default 500 ms.
	RestartMax time.Duration
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
	if b.RestartWindow == 0 {
		b.RestartWindow = DefaultBackoffRestartWindow
	}
	if b.RestartMax <= 0 {
		b.RestartMax = DefaultBackoffRestartMax
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

// pacer decides the delay before each connection attempt of one client. It is
// used by Run's goroutine only.
type pacer struct {
	b   Backoff // with defaults
	rnd func() float64
	// attempt counts failures (failed attempts, ends of unhealthy sessions) since
	// the last healthy session or announced restart.
	attempt int
	// restartUntil ends the window after an announced restart in which an absent
	// server is retried on RestartMax; zero when there is none.
	restartUntil time.Time
	// quickRestarts counts announced restarts in a row with no healthy session.
	quickRestarts int
}

// failed returns the delay after a failed attempt, and its bound.
func (p *pacer) failed(now time.Time, err error) (time.Duration, time.Duration) {
	if now.Before(p.restartUntil) && serverAway(err) {
		return p.restart()
	}
	p.attempt++
	return p.b.Delay(p.attempt, p.rnd), p.b.Bound(p.attempt)
}

// ended returns the delay after a session ended, and its bound. healthy: the
// server answered a keepalive ping on it, or it stayed up ResetAfter.
func (p *pacer) ended(now time.Time, reason tunnel.Reason, healthy bool) (time.Duration, time.Duration) {
	p.restartUntil = time.Time{}
	if healthy {
		p.attempt = 0
		p.quickRestarts = 0
	}
	if reason == tunnel.ReasonGoingAway && p.b.RestartWindow > 0 && p.quickRestarts < maxQuickRestarts {
		if !healthy {
			p.quickRestarts++
		}
		p.attempt = 0
		p.restartUntil = now.Add(p.b.RestartWindow)
		return p.restart()
	}
	p.attempt++
	return p.b.Delay(p.attempt, p.rnd), p.b.Bound(p.attempt)
}

func (p *pacer) restart() (time.Duration, time.Duration) {
	rnd := p.rnd
	if rnd == nil {
		rnd = rand.Float64
	}
	return time.Duration(rnd() * float64(p.b.RestartMax)), p.b.RestartMax
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
