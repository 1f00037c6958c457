package client_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startClient runs a client until the test ends.
func startClient(t *testing.T, opts client.Options) (*client.Client, *tunnel.Stats) {
	t.Helper()
	stats := &tunnel.Stats{}
	if opts.Observer == nil {
		opts.Observer = stats
	}
	if opts.Target == (tunnel.Target{}) {
		opts.Target = tunneltest.Target
	}
	if opts.Token == nil {
		opts.Token = client.StaticToken(tunneltest.SyncerToken)
	}
	c, err := client.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		assert.Equal(t, tunnel.StateDisconnected, c.State())
	})
	return c, stats
}

func waitConnected(t *testing.T, c *client.Client) {
	t.Helper()
	tunneltest.Eventually(t, 10*time.Second, "client connects", func() bool { return c.State() == tunnel.StateConnected })
}

func echo(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	_, err := conn.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, msg, string(buf))
}

func TestDialThroughTunnelReachesTheUpstreamAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"tls", true}, {"insecure", false}} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := tunneltest.EchoServer(t)
			var pki *tunneltest.PKI
			var clientTLS *tls.Config
			if tc.tls {
				pki = tunneltest.NewPKI(t)
				clientTLS = pki.ClientTLS()
			}
			srv := tunneltest.NewServer(t, pki, upstream, nil)
			c, stats := startClient(t, client.Options{ServerURL: srv.URL, TLSConfig: clientTLS})
			waitConnected(t, c)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// addr is ignored: the server connects to its configured upstream only.
			conn, err := c.DialContext(ctx, "tcp", "ignored.example:443")
			require.NoError(t, err)
			echo(t, conn, "hello through the tunnel")
			require.NoError(t, conn.Close())

			_, err = c.DialContext(ctx, "udp", "x:1")
			require.Error(t, err)

			snap := stats.Snapshot()
			assert.EqualValues(t, 1, snap.Connects)
			assert.EqualValues(t, 1, snap.TotalStreams[tunnel.StreamUpstream])
			assert.Positive(t, snap.BytesSent)
			assert.Positive(t, snap.BytesReceived)
			require.NotNil(t, srv.Registry().Get(tunneltest.Target))
			infos := srv.Registry().List()
			require.Len(t, infos, 1)
			assert.Equal(t, "system:serviceaccount:default:syncer", infos[0].User)
			assert.NotNil(t, c.Session())
		})
	}
}

func TestUpstreamTLSStaysEndToEnd(t *testing.T) {
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "upstream says hi to "+r.URL.Path)
	}))
	defer api.Close()
	pki := tunneltest.NewPKI(t)
	srv := tunneltest.NewServer(t, pki, api.Listener.Addr().String(), nil)
	c, _ := startClient(t, client.Options{ServerURL: srv.URL, TLSConfig: pki.ClientTLS()})
	waitConnected(t, c)

	cfg := c.UpstreamConfig(&rest.Config{
		Host:            api.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})},
		Timeout:         10 * time.Second,
	})
	hc, err := rest.HTTPClientFor(cfg)
	require.NoError(t, err)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(api.URL + "/version")
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "upstream says hi to /version", string(body))
	// The certificate seen is the API server's own: the tunnel did not terminate TLS.
	require.NotNil(t, resp.TLS)
	assert.True(t, resp.TLS.PeerCertificates[0].Equal(api.Certificate()))
}

func TestDialWaitsWhileDownAndSucceedsAfterServerReturns(t *testing.T) {
	upstream := tunneltest.EchoServer(t)
	srv := tunneltest.NewServer(t, nil, upstream, nil)
	c, stats := startClient(t, client.Options{
		ServerURL: srv.URL,
		Backoff:   client.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		Breaker:   client.Breaker{OpenTimeout: 50 * time.Millisecond},
	})
	waitConnected(t, c)

	srv.Stop()
	tunneltest.Eventually(t, 10*time.Second, "client notices the server is gone", func() bool { return c.State() != tunnel.StateConnected })

	type result struct {
		conn net.Conn
		err  error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := c.DialContext(ctx, "tcp", "upstream:443")
		res <- result{conn, err}
	}()
	select {
	case r := <-res:
		t.Fatalf("dial returned while the tunnel was down: %v", r.err)
	case <-time.After(200 * time.Millisecond):
	}

	srv.Restart()
	var r result
	select {
	case r = <-res:
	case <-time.After(15 * time.Second):
		t.Fatal("waiting dial did not succeed after the server came back")
	}
	require.NoError(t, r.err)
	echo(t, r.conn, "after restart")
	require.NoError(t, r.conn.Close())

	snap := stats.Snapshot()
	assert.EqualValues(t, 2, snap.Connects)
	assert.Positive(t, snap.LastReconnect)
	assert.Positive(t, snap.Disconnects[tunnel.ReasonGoingAway], "the server announced its shutdown")
	assert.Contains(t, snap.StateTransitions, tunnel.StateBackoff)
}

func TestDialWhileDownIsBoundedByContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c, stats := startClient(t, client.Options{ServerURL: "http://" + addr})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.DialContext(ctx, "tcp", "x:443")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
	tunneltest.Eventually(t, 5*time.Second, "dial failure observed", func() bool {
		return stats.Snapshot().ConnectFailures[tunnel.ReasonDial] > 0
	})
}

func TestDialAfterStopFails(t *testing.T) {
	c, err := client.New(client.Options{ServerURL: "http://127.0.0.1:1", Target: tunneltest.Target, Token: client.StaticToken("x")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, c.Run(ctx))
	require.Error(t, c.Run(ctx), "Run twice")
	_, err = c.DialContext(context.Background(), "tcp", "x:1")
	require.ErrorIs(t, err, client.ErrStopped)
}

func TestBadTokenIsRefusedAndRetriedUntilTheBreakerOpens(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	c, stats := startClient(t, client.Options{
		ServerURL: srv.URL,
		Token:     client.StaticToken("wrong"),
		Backoff:   client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		Breaker:   client.Breaker{FailureThreshold: 3, OpenTimeout: time.Second},
	})
	tunneltest.Eventually(t, 5*time.Second, "breaker opens after 3 refusals", func() bool { return c.BreakerState() == "open" })
	snap := stats.Snapshot()
	assert.EqualValues(t, 3, snap.ConnectFailures[tunnel.ReasonUnauthorized])
	tunneltest.Eventually(t, 5*time.Second, "attempts are skipped while open", func() bool {
		return stats.Snapshot().ConnectFailures[tunnel.ReasonBreakerOpen] > 0
	})
	assert.EqualValues(t, 3, stats.Snapshot().ConnectFailures[tunnel.ReasonUnauthorized], "no network attempt while open")
	// After OpenTimeout one half-open probe goes out, fails, and re-opens the breaker.
	tunneltest.Eventually(t, 5*time.Second, "half-open probe", func() bool {
		return stats.Snapshot().ConnectFailures[tunnel.ReasonUnauthorized] >= 4
	})
	assert.Nil(t, srv.Registry().Get(tunneltest.Target))
}

func TestBreakerClosesAfterASuccessfulProbe(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	srv.Auth.SetDenied(true)
	c, stats := startClient(t, client.Options{
		ServerURL: srv.URL,
		Backoff:   client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		Breaker:   client.Breaker{FailureThreshold: 2, OpenTimeout: 200 * time.Millisecond},
	})
	tunneltest.Eventually(t, 5*time.Second, "breaker opens", func() bool { return c.BreakerState() == "open" })
	assert.EqualValues(t, 2, stats.Snapshot().ConnectFailures[tunnel.ReasonForbidden])
	srv.Auth.SetDenied(false)
	waitConnected(t, c)
	assert.Equal(t, "closed", c.BreakerState())
}

// TestServerNotListeningDoesNotOpenTheBreaker: while the server restarts, refused
// connections are retried with backoff only, so the client reconnects as soon as the
// server listens again instead of after the breaker's open timeout.
func TestServerNotListeningDoesNotOpenTheBreaker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	c, stats := startClient(t, client.Options{
		ServerURL: "http://" + addr,
		Backoff:   client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		Breaker:   client.Breaker{FailureThreshold: 2, OpenTimeout: time.Hour},
	})
	tunneltest.Eventually(t, 5*time.Second, "many refused connections", func() bool {
		return stats.Snapshot().ConnectFailures[tunnel.ReasonDial] >= 10
	})
	assert.Equal(t, "closed", c.BreakerState())
	assert.Zero(t, stats.Snapshot().ConnectFailures[tunnel.ReasonBreakerOpen])
}

func TestUntrustedServerCertificateIsRefused(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	srv := tunneltest.NewServer(t, pki, tunneltest.EchoServer(t), nil)
	_, stats := startClient(t, client.Options{
		ServerURL: srv.URL,
		TLSConfig: tunneltest.NewPKI(t).ClientTLS(), // another CA
		Backoff:   client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		Breaker:   client.Breaker{FailureThreshold: 100},
	})
	tunneltest.Eventually(t, 5*time.Second, "several refused attempts", func() bool {
		return stats.Snapshot().ConnectFailures[tunnel.ReasonDial] >= 3
	})
	assert.Nil(t, srv.Registry().Get(tunneltest.Target))
}

func TestDeadPeerIsDetectedByMissedPongs(t *testing.T) {
	// A server that completes the handshake and then never reads: pongs never come.
	var wg sync.WaitGroup
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		defer wg.Done()
		ws, err := acceptRaw(w, r)
		if err != nil {
			return
		}
		<-release
		_ = ws.CloseNow()
	}))
	defer func() {
		close(release)
		wg.Wait()
		hs.Close()
	}()
	c, stats := startClient(t, client.Options{
		ServerURL: hs.URL,
		Keepalive: tunnel.Keepalive{Interval: 50 * time.Millisecond, MaxMissed: 3},
		Backoff:   client.Backoff{Initial: time.Second, Max: time.Second},
	})
	_ = c
	tunneltest.Eventually(t, 5*time.Second, "ping timeout detected", func() bool {
		return stats.Snapshot().Disconnects[tunnel.ReasonPingTimeout] > 0
	})
}

func TestNewValidatesOptions(t *testing.T) {
	good := client.Options{ServerURL: "https://x", Target: tunneltest.Target, Token: client.StaticToken("t")}
	for name, mutate := range map[string]func(*client.Options){
		"no url":     func(o *client.Options) { o.ServerURL = "" },
		"bad scheme": func(o *client.Options) { o.ServerURL = "ftp://x" },
		"no target":  func(o *client.Options) { o.Target = tunnel.Target{} },
		"no token":   func(o *client.Options) { o.Token = nil },
	} {
		t.Run(name, func(t *testing.T) {
			o := good
			mutate(&o)
			_, err := client.New(o)
			require.Error(t, err)
		})
	}
}

func TestFileTokenIsReadOnEveryAttempt(t *testing.T) {
	_, err := client.FileToken(t.TempDir() + "/missing")(context.Background())
	require.Error(t, err)
}

func acceptRaw(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	return websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{tunnel.Subprotocol}})
}

// TestServerShutdownUnderTrafficIsSeenAsGoingAway: the server shuts down while
// the syncer's streams carry data, right after each reconnect. The client must
// read the close frame (status 1001) every time: before, the server's session
// ended its context while its close handshake was in flight, which aborted the
// connection, and the client saw a broken one (closed) and backed off.
func TestServerShutdownUnderTrafficIsSeenAsGoingAway(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	// Max: past 10 quick restarts in a row the backoff grows; keep it small.
	c, stats := startClient(t, client.Options{ServerURL: srv.URL, Backoff: client.Backoff{Max: 200 * time.Millisecond}})
	waitConnected(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	var traffic sync.WaitGroup
	defer func() {
		cancel()
		traffic.Wait()
	}()
	for range 4 {
		traffic.Go(func() {
			buf := make([]byte, 64<<10)
			for ctx.Err() == nil {
				dctx, dcancel := context.WithTimeout(ctx, time.Second)
				conn, err := c.DialContext(dctx, "tcp", "x:1")
				dcancel()
				if err != nil {
					continue
				}
				_ = conn.SetDeadline(time.Now().Add(time.Second))
				_, _ = conn.Write(buf)
				_, _ = conn.Read(buf)
				_ = conn.Close()
			}
		})
	}
	const restarts = 20
	for i := range restarts {
		time.Sleep(time.Duration(i%4) * 5 * time.Millisecond) // vary where the traffic is
		srv.Stop()
		srv.Restart()
		tunneltest.Eventually(t, 10*time.Second, "reconnected", func() bool { return srv.Registry().Get(tunneltest.Target) != nil })
	}
	snap := stats.Snapshot()
	assert.EqualValues(t, restarts, snap.Disconnects[tunnel.ReasonGoingAway], "disconnects: %v", snap.Disconnects)
	assert.Zero(t, snap.Disconnects[tunnel.ReasonClosed])
}
