package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

func TestConcurrentUpstreamStreamsAreLimitedPerSession(t *testing.T) {
	p := newPair(t, tunneltest.EchoServer(t), nil, func(o *server.Options) { o.Limits.MaxUpstreamStreams = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	echoes := func(c net.Conn) bool {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			return false
		}
		buf := make([]byte, 2)
		_, err := io.ReadFull(c, buf)
		return err == nil && string(buf) == "hi"
	}
	var open []net.Conn
	for range 2 {
		c, err := p.c.DialContext(ctx, "tcp", "ignored:443")
		require.NoError(t, err)
		require.True(t, echoes(c), "a stream within the limit works")
		open = append(open, c)
	}
	over, err := p.c.DialContext(ctx, "tcp", "ignored:443")
	require.NoError(t, err, "the stream opens; the server closes it at once")
	assert.False(t, echoes(over), "a third concurrent stream is refused")
	_ = over.Close()
	assert.Contains(t, p.logs.String(), "session at its stream limit")

	_ = open[0].Close()
	tunneltest.Eventually(t, 10*time.Second, "a freed slot is usable again", func() bool {
		c, err := p.c.DialContext(ctx, "tcp", "ignored:443")
		if err != nil {
			return false
		}
		defer func() { _ = c.Close() }()
		return echoes(c)
	})
	_ = open[1].Close()
}

func TestConcurrentProxyRequestsAreLimitedPerSession(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) { o.Limits.MaxProxyRequests = 1 })
	var wg sync.WaitGroup
	wg.Go(func() {
		code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/slow", tunneltest.UserToken, nil)
		assert.Equal(t, 200, code, body)
	})
	<-entered
	code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/fast", tunneltest.UserToken, nil)
	assert.Equal(t, http.StatusTooManyRequests, code, body)
	assert.Contains(t, body, "too many requests in flight")
	close(release)
	wg.Wait()
	code, body = p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/fast", tunneltest.UserToken, nil)
	assert.Equal(t, 200, code, body, "the slot is free again")
}

func TestRequestBodiesAreLimited(t *testing.T) {
	var (
		mu   sync.Mutex
		hits int
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) { o.Limits.MaxRequestBodyBytes = 1024 })
	const exec = "/api/v1/namespaces/team/pods/web/exec"

	code, body := p.do(t, http.MethodPost, exec, tunneltest.UserToken, strings.NewReader(strings.Repeat("a", 1000)))
	assert.Equal(t, 200, code, body, "under the limit")

	code, body = p.do(t, http.MethodPost, exec, tunneltest.UserToken, strings.NewReader(strings.Repeat("a", 4096)))
	assert.Equal(t, http.StatusRequestEntityTooLarge, code, body, "declared length over the limit")

	// No Content-Length: the body is cut at the limit while it streams.
	code, body = p.do(t, http.MethodPost, exec, tunneltest.UserToken, io.MultiReader(strings.NewReader(strings.Repeat("a", 64<<10))))
	assert.Contains(t, []int{http.StatusRequestEntityTooLarge, http.StatusBadGateway}, code, body)
	assert.NotEqual(t, 200, code, "a streamed body over the limit is not served")

	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, hits, 2, "the declared oversize body never reached the physical cluster")

	// Oversized headers are refused by the HTTP server itself.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, proxyURL(p.srv, "/api/v1/namespaces/team/configmaps/x"), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tunneltest.UserToken)
	req.Header.Set("X-Big", strings.Repeat("b", server.DefaultMaxHeaderBytes+4096))
	resp, err := p.hc.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}

func TestOneUserCannotTakeAllOfATargetsRequestSlots(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) {
		o.Limits.MaxProxyRequests, o.Limits.MaxProxyRequestsPerUser = 4, 2
	})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/slow", tunneltest.UserToken, nil)
			assert.Equal(t, 200, code, body)
		})
		<-entered
	}
	code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/fast", tunneltest.UserToken, nil)
	assert.Equal(t, http.StatusTooManyRequests, code, body)
	assert.Contains(t, body, `for user "alice"`)
	assert.Contains(t, body, "limit 2 per user")

	code, body = p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/fast", tunneltest.BobToken, nil)
	assert.Equal(t, 200, code, "another user of the same target still has slots: %s", body)
	close(release)
	wg.Wait()
	code, body = p.do(t, http.MethodGet, "/api/v1/namespaces/team/configmaps/fast", tunneltest.UserToken, nil)
	assert.Equal(t, 200, code, body, "the user's slots are free again")
}

func TestFollowedStreamsEndAtTheMaximumRequestDuration(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A followed log that never ends by itself.
		for {
			if _, err := io.WriteString(w, "line\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) { o.Limits.MaxRequestDuration = 300 * time.Millisecond })
	start := time.Now()
	code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/pods/web/log", tunneltest.UserToken, nil)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "line")
	assert.Less(t, time.Since(start), 5*time.Second, "the stream was ended by the server")
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
}

func TestExecSessionsEndAtTheMaximumRequestDuration(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer func() { _ = ws.CloseNow() }()
		for { // an exec session that never ends by itself
			typ, msg, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			_ = ws.Write(context.Background(), typ, msg)
		}
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) { o.Limits.MaxRequestDuration = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(proxyURL(p.srv, "/api/v1/namespaces/team/pods/web/exec?command=sh"), "https://", "wss://", 1)
	start := time.Now()
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: p.hc, HTTPHeader: http.Header{"Authorization": {"Bearer " + tunneltest.UserToken}},
	})
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	defer func() { _ = ws.CloseNow() }()
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte("echo")))
	_, got, err := ws.Read(ctx)
	require.NoError(t, err)
	assert.Equal(t, "echo", string(got))
	_, _, err = ws.Read(ctx) // nothing more comes: the server ends the session
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "ended by the server, not by the test's deadline")
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, "127.0.0.1:1", func(o *server.Options) { o.IdleTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", srv.Addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	_, err = io.WriteString(c, "GET "+tunneltest.Target.Path()+" HTTP/1.1\r\nHost: tunnel.test\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	start := time.Now()
	_, err = io.ReadAll(c) // the response, then EOF once the server closes the idle connection
	require.NoError(t, err, "closed by the server before the test's deadline")
	assert.Less(t, time.Since(start), 3*time.Second)
}
