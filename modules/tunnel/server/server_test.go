package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func httpClient(pki *tunneltest.PKI) *http.Client {
	tr := &http.Transport{}
	if pki != nil {
		tr.TLSClientConfig = pki.ClientTLS()
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestHandshakeErrorsAreClearHTTPStatuses(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	srv := tunneltest.NewServer(t, pki, "127.0.0.1:1", nil)
	hc := httpClient(pki)
	defer hc.CloseIdleConnections()
	wsHeaders := func(h http.Header) {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", "websocket")
		h.Set("Sec-WebSocket-Version", "13")
		h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		h.Set("Sec-WebSocket-Protocol", tunnel.Subprotocol)
	}
	for _, tc := range []struct {
		name     string
		path     string
		token    string
		headers  func(http.Header)
		deny     bool
		wantCode int
		wantBody string
	}{
		{name: "wrong prefix", path: "/tunnel/v2/x", token: tunneltest.SyncerToken, headers: wsHeaders, wantCode: 404, wantBody: "does not start with"},
		{name: "wrong shape", path: "/tunnel/v1/clusters/c/workspaces/n", token: tunneltest.SyncerToken, headers: wsHeaders, wantCode: 404},
		{name: "unknown endpoint", path: tunneltest.Target.Path() + "/status", token: tunneltest.SyncerToken, headers: wsHeaders, wantCode: 404},
		{name: "not an upgrade", path: tunneltest.Target.Path(), token: tunneltest.SyncerToken, wantCode: 400, wantBody: "expected a WebSocket upgrade"},
		{name: "no subprotocol", path: tunneltest.Target.Path(), token: tunneltest.SyncerToken, headers: func(h http.Header) {
			wsHeaders(h)
			h.Del("Sec-WebSocket-Protocol")
		}, wantCode: 400, wantBody: "unsupported tunnel protocol"},
		{name: "malformed handshake", path: tunneltest.Target.Path(), token: tunneltest.SyncerToken, headers: func(h http.Header) {
			wsHeaders(h)
			h.Del("Sec-WebSocket-Key")
		}, wantCode: 400},
		{name: "no token", path: tunneltest.Target.Path(), headers: wsHeaders, wantCode: 401, wantBody: "missing bearer token"},
		{name: "bad token", path: tunneltest.Target.Path(), token: "nope", headers: wsHeaders, wantCode: 401, wantBody: "invalid bearer token"},
		{name: "token review down", path: tunneltest.Target.Path(), token: tunneltest.BrokenToken, headers: wsHeaders, wantCode: 503},
		{name: "SAR denied", path: tunneltest.Target.Path(), token: tunneltest.SyncerToken, headers: wsHeaders, deny: true, wantCode: 403,
			wantBody: "may not update synctargets/tunnel.workload.kcp.io cluster-1 in cluster root:org:ws"},
		{name: "other target", path: tunnel.Target{Cluster: "root:org:ws", Name: "other"}.Path(), token: tunneltest.SyncerToken, headers: wsHeaders, wantCode: 403},
		{name: "user without rights", path: tunneltest.Target.Path(), token: tunneltest.OtherToken, headers: wsHeaders, wantCode: 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.Auth.SetDenied(tc.deny)
			req := tunneltest.BearerRequest(context.Background(), t, http.MethodGet, srv.URL+tc.path, tc.token)
			if tc.headers != nil {
				tc.headers(req.Header)
			}
			resp, err := hc.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, tc.wantCode, resp.StatusCode, string(body))
			assert.Contains(t, string(body), tc.wantBody)
			if tc.wantCode == 401 {
				assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
			}
		})
	}
	assert.Empty(t, srv.Registry().List())
}

func TestNewerConnectionReplacesTheOlderOne(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func() *websocket.Conn {
		ws, resp, err := websocket.Dial(ctx, srv.URL+tunneltest.Target.Path(), &websocket.DialOptions{
			HTTPHeader:   http.Header{"Authorization": {"Bearer " + tunneltest.SyncerToken}},
			Subprotocols: []string{tunnel.Subprotocol},
		})
		require.NoError(t, err)
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
		return ws
	}
	first := dial()
	defer func() { _ = first.CloseNow() }()
	tunneltest.Eventually(t, 5*time.Second, "first registered", func() bool { return srv.Registry().Connected(tunneltest.Target) })
	old := srv.Registry().Get(tunneltest.Target)

	second := dial()
	defer func() { _ = second.CloseNow() }()
	tunneltest.Eventually(t, 5*time.Second, "second replaces first", func() bool {
		s := srv.Registry().Get(tunneltest.Target)
		return s != nil && s != old
	})
	// The first connection is closed by the server with reason "replaced".
	var err error
	for err == nil {
		_, _, err = first.Read(ctx) // yamux frames (go away) may come first
	}
	assert.Equal(t, "replaced", closeReason(err))
	<-old.Done()
	assert.Equal(t, tunnel.ReasonReplaced, old.Reason())
	assert.True(t, srv.Registry().Connected(tunneltest.Target), "removing the old session keeps the new one")
	require.Len(t, srv.Registry().List(), 1)
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}

func TestNewRequiresTLSUnlessInsecure(t *testing.T) {
	auth := &tunneltest.Auth{}
	base := server.Options{UpstreamAddress: "127.0.0.1:6443", Authenticator: auth, Authorizer: auth}
	_, err := server.New(base)
	require.ErrorContains(t, err, "TLS is required")

	insecure := base
	insecure.Insecure = true
	s, err := server.New(insecure)
	require.NoError(t, err)
	assert.Nil(t, s.TLSConfig())
	s.Close()

	pki := tunneltest.NewPKI(t)
	ca, cert, key := pki.WriteFiles(t)
	files := base
	files.CertFile, files.KeyFile, files.ClientCAFile = cert, key, ca
	s, err = server.New(files)
	require.NoError(t, err)
	require.NotNil(t, s.TLSConfig())
	assert.NotNil(t, s.TLSConfig().ClientCAs)
	s.Close()

	for name, mutate := range map[string]func(*server.Options){
		"no upstream":     func(o *server.Options) { o.UpstreamAddress = "" },
		"bad upstream":    func(o *server.Options) { o.UpstreamAddress = "no-port" },
		"no auth":         func(o *server.Options) { o.Authenticator = nil },
		"missing cert":    func(o *server.Options) { o.CertFile = cert + ".missing" },
		"missing CA":      func(o *server.Options) { o.ClientCAFile = ca + ".missing" },
		"CA without cert": func(o *server.Options) { o.ClientCAFile = key },
	} {
		t.Run(name, func(t *testing.T) {
			o := files
			mutate(&o)
			_, err := server.New(o)
			require.Error(t, err)
		})
	}
}

func TestListenAndServeWithCertificateFiles(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	ca, cert, key := pki.WriteFiles(t)
	auth := &tunneltest.Auth{}
	s, err := server.New(server.Options{
		UpstreamAddress: tunneltest.EchoServer(t), Authenticator: auth, Authorizer: auth,
		CertFile: cert, KeyFile: key, ClientCAFile: ca, Addr: "127.0.0.1:0",
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, s.ListenAndServe(ctx))

	bad, err := server.New(server.Options{UpstreamAddress: "127.0.0.1:1", Authenticator: auth, Authorizer: auth, Insecure: true, Addr: "256.0.0.1:0"})
	require.NoError(t, err)
	require.Error(t, bad.ListenAndServe(context.Background()))
}

// fakeAPI is a downstream kube-apiserver stand-in: a pod, a following log
// stream and a WebSocket exec that echoes.
func fakeAPI(t *testing.T, release <-chan struct{}) *httptest.Server {
	t.Helper()
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer downstream-token" {
			http.Error(w, "wrong credentials "+got, http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/v1/namespaces/kcp-team/pods/web":
			_, _ = fmt.Fprintf(w, `{"kind":"Pod","metadata":{"name":"web","namespace":"kcp-team"}}`)
		case "/api/v1/namespaces/kcp-team/pods/web/log":
			if r.URL.Query().Get("follow") != "true" {
				_, _ = io.WriteString(w, "line 0\n")
				return
			}
			// Line 0 now; the rest only once the test has read line 0, which
			// it can only do if line 0 was streamed through the tunnel.
			_, _ = io.WriteString(w, "line 0\n")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-release:
			case <-time.After(10 * time.Second):
				return
			}
			_, _ = io.WriteString(w, "line 1\nline 2\n")
		case "/api/v1/namespaces/kcp-team/pods/web/exec":
			ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"v5.channel.k8s.io"}})
			if err != nil {
				return
			}
			defer func() { _ = ws.CloseNow() }()
			for {
				typ, msg, err := ws.Read(r.Context())
				if err != nil {
					return
				}
				if err := ws.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(api.Close)
	return api
}

// connectedPair starts a tunnel server and a client whose handler serves the fake API.
// The server counts proxied requests (server.RequestObserver), so every
// proxy test also runs through the status-recording response writer.
func connectedPair(t *testing.T, release <-chan struct{}) (*tunneltest.Server, *tunneltest.PKI, *tunnel.Stats) {
	srv, pki, stats, _ := connectedPairWithCodes(t, release)
	return srv, pki, stats
}

// proxiedCodes is a tunnel.Observer that also records proxied request codes.
type proxiedCodes struct {
	tunnel.NopObserver
	mu    sync.Mutex
	codes []int
}

func (p *proxiedCodes) ProxiedRequest(_ tunnel.Target, code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.codes = append(p.codes, code)
}

func (p *proxiedCodes) get() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.codes...)
}

func connectedPairWithCodes(t *testing.T, release <-chan struct{}) (*tunneltest.Server, *tunneltest.PKI, *tunnel.Stats, *proxiedCodes) {
	t.Helper()
	api := fakeAPI(t, release)
	pki := tunneltest.NewPKI(t)
	codes := &proxiedCodes{}
	srv := tunneltest.NewServer(t, pki, "127.0.0.1:1", func(o *server.Options) { o.Observer = tunnel.Observers(tunnel.NopObserver{}, codes) })
	cfg := &rest.Config{
		Host:            api.URL,
		BearerToken:     "downstream-token",
		TLSClientConfig: rest.TLSClientConfig{CAData: certPEM(api)},
	}
	h, err := client.NewDownstreamHandler(cfg, func(ns string) bool { return ns == "kcp-team" }, logr.Discard())
	require.NoError(t, err)
	stats := &tunnel.Stats{}
	c, err := client.New(client.Options{
		ServerURL: srv.URL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		TLSConfig: pki.ClientTLS(), Handler: h, Observer: stats,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	tunneltest.Eventually(t, 10*time.Second, "tunnel up", func() bool { return srv.Registry().Connected(tunneltest.Target) })
	return srv, pki, stats, codes
}

func certPEM(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

func proxyURL(srv *tunneltest.Server, apiPath string) string {
	return srv.URL + tunneltest.Target.ProxyPath() + apiPath
}

func TestControlPlaneRequestsReachThePhysicalCluster(t *testing.T) {
	srv, pki, stats := connectedPair(t, nil)
	hc := httpClient(pki)
	defer hc.CloseIdleConnections()
	certClient := httpClient(pki)
	certClient.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pki.Client}
	defer certClient.CloseIdleConnections()

	for _, tc := range []struct {
		name     string
		hc       *http.Client
		method   string
		path     string
		token    string
		wantCode int
		wantBody string
	}{
		{name: "get pod", path: "/api/v1/namespaces/team/pods/web", token: tunneltest.UserToken, wantCode: 200, wantBody: `"namespace":"kcp-team"`},
		{name: "client certificate user", hc: certClient, path: "/api/v1/namespaces/team/pods/web", wantCode: 200},
		{name: "logs", path: "/api/v1/namespaces/team/pods/web/log", token: tunneltest.UserToken, wantCode: 200, wantBody: "line 0"},
		{name: "no token", path: "/api/v1/namespaces/team/pods/web/log", wantCode: 401},
		{name: "bad token", path: "/api/v1/namespaces/team/pods/web/log", token: "nope", wantCode: 401},
		{name: "no RBAC", path: "/api/v1/namespaces/team/pods/web/log", token: tunneltest.OtherToken, wantCode: 403, wantBody: `user "mallory" may not get pods/log web in namespace team`},
		{name: "namespace not managed by the syncer", path: "/api/v1/namespaces/team2/pods/web/log", token: tunneltest.UserToken, wantCode: 403, wantBody: "not managed by this syncer"},
		{name: "namespace not synced", path: "/api/v1/namespaces/elsewhere/pods/web", token: tunneltest.UserToken, wantCode: 403},
		{name: "mapping fails", path: "/api/v1/namespaces/team-gone/pods/web", token: tunneltest.UserToken, wantCode: 404, wantBody: "has no downstream namespace"},
		{name: "write refused", method: http.MethodDelete, path: "/api/v1/namespaces/team/pods/web", token: tunneltest.UserToken, wantCode: 405},
		{name: "other subresource refused", path: "/api/v1/namespaces/team/pods/web/proxy", token: tunneltest.UserToken, wantCode: 404},
		{name: "cluster scoped refused", path: "/api/v1/nodes/n1", token: tunneltest.UserToken, wantCode: 404},
		{name: "unclean path refused", path: "/api/v1/namespaces/team/pods/../secrets", token: tunneltest.UserToken, wantCode: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hc
			if tc.hc != nil {
				c = tc.hc
			}
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := tunneltest.BearerRequest(context.Background(), t, method, proxyURL(srv, tc.path), tc.token)
			if strings.Contains(tc.path, "..") {
				req.URL.Opaque = tunneltest.Target.ProxyPath() + tc.path
			}
			resp, err := c.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, tc.wantCode, resp.StatusCode, string(body))
			assert.Contains(t, string(body), tc.wantBody)
		})
	}
	assert.Positive(t, stats.Snapshot().TotalStreams[tunnel.StreamDownstream])
}

func TestFollowedLogsStreamThroughTheTunnel(t *testing.T) {
	release := make(chan struct{})
	srv, pki, _ := connectedPair(t, release)
	hc := httpClient(pki)
	defer hc.CloseIdleConnections()
	req := tunneltest.BearerRequest(context.Background(), t, http.MethodGet, proxyURL(srv, "/api/v1/namespaces/team/pods/web/log?follow=true"), tunneltest.UserToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	// The downstream handler is still blocked: line 0 was streamed, not buffered.
	assert.Equal(t, "line 0\n", line)
	close(release)
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, "line 1\nline 2\n", string(rest))
}

func TestUpgradedExecStreamsBothWaysThroughTheTunnel(t *testing.T) {
	srv, pki, _, codes := connectedPairWithCodes(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := httpClient(pki)
	defer hc.CloseIdleConnections()
	u := strings.Replace(proxyURL(srv, "/api/v1/namespaces/team/pods/web/exec?command=cat&stdin=true"), "https://", "wss://", 1)
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + tunneltest.UserToken}},
		Subprotocols: []string{"v5.channel.k8s.io"},
	})
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	defer func() { _ = ws.CloseNow() }()
	assert.Equal(t, "v5.channel.k8s.io", ws.Subprotocol())
	for i := range 3 {
		msg := fmt.Sprintf("stdin %d", i)
		require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte(msg)))
		_, got, err := ws.Read(ctx)
		require.NoError(t, err)
		assert.Equal(t, "echo: "+msg, string(got))
	}
	require.NoError(t, ws.Close(websocket.StatusNormalClosure, ""))
	tunneltest.Eventually(t, 5*time.Second, "the upgrade is counted as 101", func() bool {
		got := codes.get()
		return len(got) == 1 && got[0] == http.StatusSwitchingProtocols
	})
}

func TestExtraHandlerServesPathsOutsideTheTunnel(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, "127.0.0.1:1", func(o *server.Options) {
		o.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "extra "+r.URL.Path) })
	})
	for path, want := range map[string]string{"/status": "extra /status", "/metrics": "extra /metrics"} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, want, string(body))
	}
	resp, err := http.Get(srv.URL + tunnel.PathPrefix + "x")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "tunnel paths are not handed to the extra handler")
}

func TestRequestsForADisconnectedTargetGet503(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	srv := tunneltest.NewServer(t, pki, "127.0.0.1:1", nil)
	hc := httpClient(pki)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(tunneltest.BearerRequest(context.Background(), t, http.MethodGet, proxyURL(srv, "/api/v1/namespaces/team/pods/web/log"), tunneltest.UserToken))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, string(body), "is not connected")
}

func TestProxyDisabledWithoutNamespaceMapper(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, "127.0.0.1:1", func(o *server.Options) { o.NamespaceMapper = nil })
	resp, err := http.Get(proxyURL(srv, "/api/v1/namespaces/team/pods/web/log"))
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}
