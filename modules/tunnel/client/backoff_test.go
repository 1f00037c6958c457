package client_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
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

func runWithClock(t *testing.T, serverURL string, clock *fakeClock, mutate ...func(*client.Options)) (*client.Client, *tunnel.Stats) {
	t.Helper()
	stats := &tunnel.Stats{}
	opts := client.Options{
		ServerURL: serverURL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		Clock: clock, Observer: stats, Breaker: client.Breaker{FailureThreshold: 1000},
	}
	for _, m := range mutate {
		m(&opts)
	}
	c, err := client.New(opts)
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

// restartDelay is the delay right after an announced restart and between
// attempts within the restart window: half of RestartMax (rand = 0.5).
const restartDelay = client.DefaultBackoffRestartMax / 2

func waitConnectedNoWait(t *testing.T, c *client.Client, clock *fakeClock) {
	t.Helper()
	tunneltest.Eventually(t, 10*time.Second, "connected", func() bool { return c.State() == tunnel.StateConnected })
	assert.Empty(t, clock.waits, "connected without another wait")
}

// TestAnnouncedRestartsBackToBackReconnectOnTheShortCap is bench row P7 with a
// fake clock: the real tunnel server shuts down (every session gets yamux
// GoAway and close 1001), stays down 1 s and comes back on the same address,
// five times in a row with no healthy session in between. Every wait is within
// RestartMax (500 ms), so the client is back within 500 ms of the server.
func TestAnnouncedRestartsBackToBackReconnectOnTheShortCap(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	clock := newFakeClock()
	c, stats := runWithClock(t, srv.URL, clock)
	waitConnectedNoWait(t, c, clock)
	for i := 1; i <= 5; i++ {
		srv.Stop()
		var down time.Duration
		for down < time.Second {
			d := clock.next(t)
			assert.LessOrEqual(t, d, client.DefaultBackoffRestartMax, "restart %d: wait while the server is down", i)
			down += d
		}
		w := <-clock.waits
		assert.LessOrEqual(t, w.d, client.DefaultBackoffRestartMax, "restart %d: wait before the attempt that finds the server back", i)
		srv.Restart()
		clock.Advance(w.d)
		w.fire <- clock.Now()
		waitConnectedNoWait(t, c, clock)

		snap := stats.Snapshot()
		assert.EqualValues(t, i, snap.Disconnects[tunnel.ReasonGoingAway], "restart %d: the server's shutdown is seen as going away", i)
		assert.EqualValues(t, i+1, snap.Connects)
		assert.Equal(t, down+w.d, snap.LastReconnect, "restart %d: reconnected on the first attempt after the server is back", i)
		assert.Equal(t, "closed", c.BreakerState())
	}
	snap := stats.Snapshot()
	assert.Positive(t, snap.ConnectFailures[tunnel.ReasonDial])
	assert.Len(t, snap.ConnectFailures, 1, "only refused connections: %v", snap.ConnectFailures)
}

// TestRestartWindowEndsInTheExponentialBackoff: a server that does not come back
// within RestartWindow is retried with the exponential backoff from Initial on.
func TestRestartWindowEndsInTheExponentialBackoff(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	clock := newFakeClock()
	c, _ := runWithClock(t, srv.URL, clock, func(o *client.Options) { o.Backoff.RestartWindow = 2 * time.Second })
	waitConnectedNoWait(t, c, clock)
	srv.Stop()
	var waits []time.Duration
	for range 12 {
		waits = append(waits, clock.next(t))
	}
	r, ms := restartDelay, time.Millisecond
	// 250 ms × 8 = 2 s of window (the attempt at 2 s is out of it), then 125 ms, 250 ms, …
	assert.Equal(t, []time.Duration{r, r, r, r, r, r, r, r, 125 * ms, 250 * ms, 500 * ms, 1000 * ms}, waits)
}

// dropServer accepts tunnel handshakes without a tunnel server behind them and
// ends each session the way the test says: accepted connections go to conns,
// or end is applied at once.
type dropServer struct {
	url   string
	conns chan *websocket.Conn
}

func newDropServer(t *testing.T, answerPings bool, end func(*websocket.Conn)) *dropServer {
	t.Helper()
	d := &dropServer{conns: make(chan *websocket.Conn, 16)}
	var wg sync.WaitGroup
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1) // before the hijack, so hs.Close waits for it
		defer wg.Done()
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{tunnel.Subprotocol}})
		if err != nil {
			return
		}
		if answerPings {
			ws.CloseRead(context.Background())
		}
		if end != nil {
			end(ws)
			return
		}
		d.conns <- ws
	}))
	t.Cleanup(func() {
		hs.Close()
		wg.Wait()
		for {
			select {
			case ws := <-d.conns:
				_ = ws.CloseNow()
			default:
				return
			}
		}
	})
	d.url = hs.URL
	return d
}

func goAway(ws *websocket.Conn)  { _ = ws.Close(websocket.StatusGoingAway, "shutdown") }
func dropNow(ws *websocket.Conn) { _ = ws.CloseNow() }

// TestSessionEndsPaceTheReconnect: how a session ended decides the next delay.
// A server that accepts and drops without announcing going away (flapping)
// escalates exactly like failed attempts; so does one that announces going away
// on every connection once maxQuickRestarts (10) are used up; a session that
// proved healthy starts over.
func TestSessionEndsPaceTheReconnect(t *testing.T) {
	r, ms := restartDelay, time.Millisecond
	for _, tc := range []struct {
		name        string
		answerPings bool
		end         func(*websocket.Conn)
		atOnce      bool          // the server ends each session right after accepting it
		up          time.Duration // otherwise: fake time the session stays up
		want        []time.Duration
	}{
		{name: "flapping: accepted, then dropped", end: dropNow, atOnce: true,
			want: []time.Duration{125 * ms, 250 * ms, 500 * ms, 1000 * ms, 2000 * ms, 4000 * ms, 8000 * ms, 15000 * ms, 15000 * ms}},
		{name: "flapping: accepted, then closed normally", end: func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusNormalClosure, "") }, atOnce: true,
			want: []time.Duration{125 * ms, 250 * ms, 500 * ms, 1000 * ms, 2000 * ms}},
		{name: "going away on every connection: quick 10 times, then escalates", end: goAway, atOnce: true,
			want: []time.Duration{r, r, r, r, r, r, r, r, r, r, 125 * ms, 250 * ms, 500 * ms, 1000 * ms}},
		{name: "healthy (answered pings), then dropped: starts over", answerPings: true, end: dropNow,
			want: []time.Duration{125 * ms, 125 * ms, 125 * ms}},
		{name: "healthy (answered pings), then going away: quick every time", answerPings: true,
			end: goAway, want: []time.Duration{r, r, r, r, r, r, r, r, r, r, r, r}},
		{name: "up for ResetAfter without a ping, then dropped: starts over", up: client.DefaultBackoffResetAfter, end: dropNow,
			want: []time.Duration{125 * ms, 125 * ms, 125 * ms}},
		{name: "up just under ResetAfter without a ping, then dropped: grows", up: client.DefaultBackoffResetAfter - time.Second, end: dropNow,
			want: []time.Duration{125 * ms, 250 * ms, 500 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var atAccept func(*websocket.Conn)
			if tc.atOnce {
				atAccept = tc.end
			}
			srv := newDropServer(t, tc.answerPings, atAccept)
			clock := newFakeClock()
			c, stats := runWithClock(t, srv.url, clock, func(o *client.Options) {
				o.Keepalive = tunnel.Keepalive{Interval: 10 * time.Millisecond, MaxMissed: 1000}
			})
			var got []time.Duration
			for i := range tc.want {
				if !tc.atOnce {
					ws := <-srv.conns
					tunneltest.Eventually(t, 10*time.Second, "connected", func() bool { return c.State() == tunnel.StateConnected })
					if tc.answerPings {
						tunneltest.Eventually(t, 10*time.Second, "a ping answered", func() bool {
							s := c.Session()
							return s != nil && s.Healthy()
						})
					}
					clock.Advance(tc.up)
					tc.end(ws)
				}
				got = append(got, clock.next(t))
				assert.GreaterOrEqual(t, stats.Snapshot().Connects, int64(i+1), "every attempt connects")
			}
			assert.Equal(t, tc.want, got)
			assert.Empty(t, stats.Snapshot().ConnectFailures)
		})
	}
}

// TestRefusalsWithinTheRestartWindowBackOffAndOpenTheBreaker: after an announced
// restart, a server that is back but refuses the syncer (403 here) gets the
// exponential backoff, and the circuit breaker opens as it always does.
func TestRefusalsWithinTheRestartWindowBackOffAndOpenTheBreaker(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	clock := newFakeClock()
	c, stats := runWithClock(t, srv.URL, clock, func(o *client.Options) {
		o.Breaker = client.Breaker{FailureThreshold: 3, OpenTimeout: time.Hour}
	})
	waitConnectedNoWait(t, c, clock)
	srv.Stop()
	srv.Auth.SetDenied(true)
	srv.Restart()
	var waits []time.Duration
	for range 6 {
		waits = append(waits, clock.next(t))
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{restartDelay, 125 * ms, 250 * ms, 500 * ms, 1000 * ms, 2000 * ms}, waits)
	snap := stats.Snapshot()
	assert.EqualValues(t, 3, snap.ConnectFailures[tunnel.ReasonForbidden], "three refusals open the breaker")
	assert.EqualValues(t, 2, snap.ConnectFailures[tunnel.ReasonBreakerOpen], "then attempts are skipped")
	assert.Equal(t, "open", c.BreakerState())
}
