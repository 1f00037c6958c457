package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// logBuffer is a logr sink that keeps everything, at every verbosity.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.buf.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: 10})
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pair is a TLS tunnel server and a connected client whose downstream handler is h.
type pair struct {
	srv  *tunneltest.Server
	pki  *tunneltest.PKI
	hc   *http.Client
	c    *client.Client
	logs *logBuffer
}

func newPair(t *testing.T, upstream string, h http.Handler, mutate func(*server.Options)) *pair {
	t.Helper()
	p := &pair{pki: tunneltest.NewPKI(t), logs: &logBuffer{}}
	p.srv = tunneltest.NewServer(t, p.pki, upstream, func(o *server.Options) {
		o.Logger = p.logs.logger().WithName("server")
		if mutate != nil {
			mutate(o)
		}
	})
	var err error
	p.c, err = client.New(client.Options{
		ServerURL: p.srv.URL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		TLSConfig: p.pki.ClientTLS(), Handler: h, Logger: p.logs.logger().WithName("client"),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.c.Run(ctx) }()
	p.hc = httpClient(p.pki)
	t.Cleanup(func() {
		p.hc.CloseIdleConnections()
		cancel()
		require.NoError(t, <-done)
	})
	tunneltest.Eventually(t, 10*time.Second, "tunnel up", func() bool { return p.srv.Registry().Connected(tunneltest.Target) })
	return p
}

func (p *pair) do(t *testing.T, method, apiPath, token string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, proxyURL(p.srv, apiPath), body)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := p.hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTLSIsAtLeast12WithVerifiedCertificatesByDefault(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	// A caller's TLS config without MinVersion still gets TLS 1.2 at least.
	srv := tunneltest.NewServer(t, pki, "127.0.0.1:1", func(o *server.Options) {
		o.TLSConfig = pki.ServerTLS()
		o.TLSConfig.MinVersion = 0
	})
	assert.GreaterOrEqual(t, srv.Server().TLSConfig().MinVersion, uint16(tls.VersionTLS12))

	dial := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", srv.Addr, cfg)
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	require.NoError(t, dial(&tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}), "TLS 1.2 with the CA works")
	require.Error(t, dial(&tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}), "TLS 1.1 is refused") //nolint:gosec // the point of the test

	// The client verifies the server: without the CA (system roots only) it never connects.
	stats := &tunnel.Stats{}
	c, err := client.New(client.Options{
		ServerURL: srv.URL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken), Observer: stats,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tunneltest.Eventually(t, 10*time.Second, "a failed attempt", func() bool { return stats.Snapshot().ConnectFailures[tunnel.ReasonDial] > 0 })
	assert.False(t, srv.Registry().Connected(tunneltest.Target), "never connected to an unverified server")
	cancel()
	require.NoError(t, <-done)

	// The client refuses a server that offers only TLS 1.1.
	old := &tls.Config{Certificates: []tls.Certificate{pki.Server}, MaxVersion: tls.VersionTLS11} //nolint:gosec // the point of the test
	ln, err := tls.Listen("tcp", "127.0.0.1:0", old)
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	}()
	stats = &tunnel.Stats{}
	c, err = client.New(client.Options{
		ServerURL: "https://" + ln.Addr().String(), Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		TLSConfig: &tls.Config{RootCAs: pki.Pool}, Observer: stats,
	})
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- c.Run(ctx) }()
	tunneltest.Eventually(t, 10*time.Second, "a failed attempt", func() bool { return stats.Snapshot().ConnectFailures[tunnel.ReasonDial] > 0 })
	cancel()
	require.NoError(t, <-done)
}

func TestTokensNeverAppearInLogs(t *testing.T) {
	const badToken = "bad-token-7f3a9c-never-log-me"
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	p := newPair(t, tunneltest.EchoServer(t), h, nil)
	for _, tok := range []string{tunneltest.UserToken, tunneltest.OtherToken, badToken, tunneltest.BrokenToken} {
		p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/x", tok, nil)
	}
	// A syncer with a wrong token tries to connect.
	stats := &tunnel.Stats{}
	bad, err := client.New(client.Options{
		ServerURL: p.srv.URL, Target: tunneltest.Target, Token: client.StaticToken(badToken),
		TLSConfig: p.pki.ClientTLS(), Logger: p.logs.logger().WithName("bad-client"), Observer: stats,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bad.Run(ctx) }()
	tunneltest.Eventually(t, 10*time.Second, "refused", func() bool { return stats.Snapshot().ConnectFailures[tunnel.ReasonUnauthorized] > 0 })
	cancel()
	require.NoError(t, <-done)

	logs := p.logs.String()
	require.NotEmpty(t, logs)
	assert.Contains(t, logs, "tunnel refused", "the refusal is logged")
	for _, tok := range []string{tunneltest.SyncerToken, tunneltest.UserToken, tunneltest.OtherToken, badToken, tunneltest.BrokenToken} {
		assert.NotContains(t, logs, tok, "a token in the logs")
	}
}

func TestUpstreamStreamsGoOnlyToTheConfiguredAddress(t *testing.T) {
	decoy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var reached atomic.Int32
	go func() {
		for {
			c, err := decoy.Accept()
			if err != nil {
				return
			}
			reached.Add(1)
			_ = c.Close()
		}
	}()
	defer func() { _ = decoy.Close() }()
	p := newPair(t, tunneltest.EchoServer(t), nil, nil)
	for _, addr := range []string{decoy.Addr().String(), "169.254.169.254:80", "localhost:22"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := p.c.DialContext(ctx, "tcp", addr)
		require.NoError(t, err)
		_, err = c.Write([]byte("ping " + addr))
		require.NoError(t, err)
		buf := make([]byte, len("ping "+addr))
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		assert.Equal(t, "ping "+addr, string(buf), "the configured upstream (an echo server) answered, whatever the address asked for")
		_ = c.Close()
		cancel()
	}
	assert.Zero(t, reached.Load(), "the decoy address was never dialled")
}

// TestProxyServesOnlyPodSubresourcesAndReadsAfterAReview: every request the server refuses
// never reaches the physical cluster; every request that reaches it was reviewed for the
// calling user in the upstream namespace first.
func TestProxyServesOnlyPodSubresourcesAndReadsAfterAReview(t *testing.T) {
	var (
		mu   sync.Mutex
		hits []string
	)
	var srvAuth *tunneltest.Auth
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		reviewed := false
		for _, a := range srvAuth.AskedSoFar() {
			reviewed = reviewed || (a.User.Name == "alice" && strings.Contains(r.URL.Path, "/namespaces/kcp-"+a.Namespace+"/"))
		}
		if !reviewed {
			http.Error(w, "not reviewed", http.StatusTeapot)
		}
		hits = append(hits, r.Method+" "+r.URL.Path)
	})
	p := newPair(t, "127.0.0.1:1", h, nil)
	srvAuth = p.srv.Auth
	for _, tc := range []struct {
		name, method, path, token string
		want                      int
	}{
		{"get", http.MethodGet, "/api/v1/namespaces/team/configmaps/x", tunneltest.UserToken, 200},
		{"list", http.MethodGet, "/apis/apps/v1/namespaces/team/deployments", tunneltest.UserToken, 200},
		{"logs", http.MethodGet, "/api/v1/namespaces/team/pods/web/log", tunneltest.UserToken, 200},
		{"exec", http.MethodPost, "/api/v1/namespaces/team/pods/web/exec", tunneltest.UserToken, 200},
		{"create", http.MethodPost, "/api/v1/namespaces/team/configmaps", tunneltest.UserToken, 405},
		{"update", http.MethodPut, "/api/v1/namespaces/team/configmaps/x", tunneltest.UserToken, 405},
		{"patch", http.MethodPatch, "/api/v1/namespaces/team/configmaps/x", tunneltest.UserToken, 405},
		{"delete", http.MethodDelete, "/api/v1/namespaces/team/configmaps/x", tunneltest.UserToken, 405},
		{"delete log", http.MethodDelete, "/api/v1/namespaces/team/pods/web/log", tunneltest.UserToken, 405},
		{"scale", http.MethodGet, "/apis/apps/v1/namespaces/team/deployments/web/scale", tunneltest.UserToken, 404},
		{"status", http.MethodGet, "/api/v1/namespaces/team/pods/web/status", tunneltest.UserToken, 404},
		{"pod proxy", http.MethodGet, "/api/v1/namespaces/team/pods/web/proxy", tunneltest.UserToken, 404},
		{"secret subresource", http.MethodGet, "/api/v1/namespaces/team/secrets/s/log", tunneltest.UserToken, 404},
		{"cluster scoped", http.MethodGet, "/api/v1/nodes/n1", tunneltest.UserToken, 404},
		{"namespaces", http.MethodGet, "/api/v1/namespaces/team", tunneltest.UserToken, 404},
		{"no token", http.MethodGet, "/api/v1/namespaces/team/configmaps/x", "", 401},
		{"review denied", http.MethodGet, "/api/v1/namespaces/team/configmaps/x", tunneltest.OtherToken, 403},
		{"other namespace denied", http.MethodGet, "/api/v1/namespaces/kube-system/secrets/x", tunneltest.UserToken, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			before := len(hits)
			mu.Unlock()
			code, body := p.do(t, tc.method, tc.path, tc.token, nil)
			assert.Equal(t, tc.want, code, body)
			mu.Lock()
			defer mu.Unlock()
			if tc.want == 200 {
				assert.Len(t, hits, before+1, "served by the physical cluster")
			} else {
				assert.Len(t, hits, before, "a refused request never reaches the physical cluster")
			}
		})
	}
}
