package client_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
)

func TestBackoffBoundsDoubleUpToTheCap(t *testing.T) {
	b := client.Backoff{}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second,
		4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		assert.Equal(t, w, b.Bound(i+1), "attempt %d", i+1)
	}
	assert.Equal(t, 30*time.Second, b.Bound(1000))
	assert.Equal(t, 125*time.Millisecond, b.Delay(1, func() float64 { return 0.5 }))
	assert.Equal(t, time.Duration(0), b.Delay(5, func() float64 { return 0 }))
	for range 100 {
		d := b.Delay(3, nil)
		assert.True(t, d >= 0 && d < time.Second, "full jitter within [0, bound): %s", d)
	}
}

// fakeClock hands every requested wait to the test, which fires it.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
}

type fakeWait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_800_000_000, 0), waits: make(chan fakeWait, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	w := fakeWait{d: d, fire: make(chan time.Time, 1)}
	c.waits <- w
	return w.fire
}

// next waits for the client's next backoff wait, advances the clock by it and fires it.
func (c *fakeClock) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case w := <-c.waits:
		c.Advance(w.d)
		w.fire <- c.Now()
		return w.d
	case <-time.After(10 * time.Second):
		t.Fatal("no backoff wait requested")
		return 0
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func runWithClock(t *testing.T, serverURL string, clock *fakeClock) (*client.Client, *tunnel.Stats) {
	t.Helper()
	stats := &tunnel.Stats{}
	c, err := client.New(client.Options{
		ServerURL: serverURL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		Clock: clock, Observer: stats, Breaker: client.Breaker{FailureThreshold: 1000},
	})
	require.NoError(t, err)
	client.SetRand(c, func() float64 { return 0.5 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return c, stats
}

func TestBackoffTimingWithFakeClock(t *testing.T) {
	clock := newFakeClock()
	runWithClock(t, "http://"+closedPort(t), clock)
	// Half of each bound (rand = 0.5): 125 ms, 250 ms, 500 ms, … capped at 15 s.
	want := []time.Duration{125, 250, 500, 1000, 2000, 4000, 8000, 15000, 15000}
	for i, w := range want {
		assert.Equal(t, w*time.Millisecond, clock.next(t), "wait %d", i+1)
	}
}

func TestBackoffResetsOnlyAfterSixtySecondsConnected(t *testing.T) {
	for _, tc := range []struct {
		name      string
		connected time.Duration
		want      time.Duration
	}{
		{"short connection keeps growing", time.Second, 1000 * time.Millisecond},
		{"long connection resets", 61 * time.Second, 125 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
			srv.Stop()
			clock := newFakeClock()
			c, _ := runWithClock(t, srv.URL, clock)
			assert.Equal(t, 125*time.Millisecond, clock.next(t))
			assert.Equal(t, 250*time.Millisecond, clock.next(t))
			// The third attempt must find the server up: restart before firing.
			w := <-clock.waits
			assert.Equal(t, 500*time.Millisecond, w.d)
			srv.Restart()
			w.fire <- clock.Now()
			tunneltest.Eventually(t, 10*time.Second, "connected", func() bool { return c.State() == tunnel.StateConnected })
			clock.Advance(tc.connected)
			srv.Stop()
			assert.Equal(t, tc.want, clock.next(t))
		})
	}
}
