package server_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/metrics"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// hostileServer is a tunnel server whose observer is the real Prometheus one, so that a
// label value Prometheus refuses (invalid UTF-8) would panic the handler.
type hostileServer struct {
	srv  *server.Server
	auth *tunneltest.Auth
	reg  *prometheus.Registry
}

func newHostileServer(t testing.TB, mutate func(*server.Options)) *hostileServer {
	t.Helper()
	h := &hostileServer{auth: &tunneltest.Auth{}, reg: prometheus.NewRegistry()}
	tm, err := metrics.NewTunnel(h.reg)
	require.NoError(t, err)
	registry := server.NewRegistry()
	_, err = metrics.NewServer(h.reg, registry)
	require.NoError(t, err)
	opts := server.Options{
		UpstreamAddress: "127.0.0.1:1", Authenticator: h.auth, Authorizer: h.auth, Registry: registry,
		NamespaceMapper: tunneltest.MapNamespace, Insecure: true, Logger: logr.Discard(), Observer: tm,
	}
	if mutate != nil {
		mutate(&opts)
	}
	h.srv, err = server.New(opts)
	require.NoError(t, err)
	t.Cleanup(h.srv.Close)
	return h
}

// series counts every time series the registry exposes.
func (h *hostileServer) series(t testing.TB) int {
	t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n
}

// serve sends r straight to the handler: a panic fails the test instead of being swallowed
// by net/http's recovery.
func (h *hostileServer) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, r)
	return rec
}

func tunnelRequest(rawPath, token string, upgrade bool) *http.Request {
	r := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "http://tunnel.test/", nil)
	// Set the path after parsing, so that bytes no URL parser would let through reach the
	// handler as well (a raw HTTP/1.1 request line can carry them).
	r.URL = &url.URL{Path: rawPath}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if upgrade {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		r.Header.Set("Sec-WebSocket-Protocol", tunnel.Subprotocol)
	}
	return r
}

func TestInvalidTargetNamesAreRefusedWith400BeforeAnythingElse(t *testing.T) {
	long := strings.Repeat("a", 30<<10)
	decoded, err := url.PathUnescape("%FF")
	require.NoError(t, err)
	for _, tc := range []struct {
		name            string
		cluster, stName string
	}{
		{name: "invalid UTF-8 name", cluster: "root:org:ws", stName: "\xff\xfe"},
		{name: "invalid UTF-8 cluster", cluster: "root:\xc3\x28", stName: "cluster-1"},
		{name: "%FF decoded", cluster: "root", stName: decoded},
		{name: "%FF literal", cluster: "root", stName: "%FF"},
		{name: "wildcard name", cluster: "root", stName: "*"},
		{name: "wildcard cluster", cluster: "*", stName: "cluster-1"},
		{name: "30 KB name", cluster: "root", stName: long},
		{name: "30 KB cluster", cluster: long, stName: "cluster-1"},
		{name: "upper case", cluster: "root", stName: "Cluster-1"},
		{name: "empty cluster segment", cluster: "root::ws", stName: "cluster-1"},
		{name: "dot dot", cluster: "root", stName: ".."},
		{name: "NUL", cluster: "root", stName: "a\x00b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileServer(t, nil)
			before := h.series(t)
			base := tunnel.PathPrefix + tc.cluster + "/synctargets/" + tc.stName
			for _, r := range []*http.Request{
				tunnelRequest(base, tunneltest.SyncerToken, true),
				tunnelRequest(base+"/proxy/api/v1/namespaces/team-a/pods/web/log", tunneltest.UserToken, false),
				tunnelRequest(base+"/proxy/api/v1/namespaces/team-a/configmaps", "garbage", false),
			} {
				var rec *httptest.ResponseRecorder
				require.NotPanics(t, func() { rec = h.serve(r) })
				assert.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
				assert.Contains(t, rec.Body.String(), "invalid sync target")
				assert.LessOrEqual(t, rec.Body.Len(), 1024, "the error does not echo a huge name")
			}
			assert.Zero(t, h.auth.Reviews, "no TokenReview for an invalid target")
			assert.Empty(t, h.auth.AskedSoFar(), "no SubjectAccessReview for an invalid target")
			assert.Equal(t, before, h.series(t), "no metric series for an invalid target")
		})
	}
}

func TestProxyAuthorizesVerbsAsKubeAPIServerParsesThem(t *testing.T) {
	proxy := tunneltest.Target.ProxyPath()
	for _, tc := range []struct {
		name, path, query string
		wantVerb          string // "" = refused before any SubjectAccessReview
		wantResource      string
	}{
		{name: "watch=yes", path: "/api/v1/namespaces/team-a/configmaps", query: "watch=yes", wantVerb: "watch", wantResource: "configmaps"},
		{name: "watch=True", path: "/api/v1/namespaces/team-a/configmaps", query: "watch=True", wantVerb: "watch", wantResource: "configmaps"},
		{name: "watch empty", path: "/api/v1/namespaces/team-a/configmaps", query: "watch=", wantVerb: "watch", wantResource: "configmaps"},
		{name: "watch bare", path: "/api/v1/namespaces/team-a/configmaps", query: "watch", wantVerb: "watch", wantResource: "configmaps"},
		{name: "watch=false", path: "/api/v1/namespaces/team-a/configmaps", query: "watch=false", wantVerb: "list", wantResource: "configmaps"},
		{name: "named watch is get", path: "/api/v1/namespaces/team-a/configmaps/c", query: "watch=true", wantVerb: "get", wantResource: "configmaps"},
		{name: "namespace status", path: "/api/v1/namespaces/team-a/status"},
		{name: "namespace finalize", path: "/api/v1/namespaces/team-a/finalize"},
		{name: "namespace status with name", path: "/api/v1/namespaces/team-a/status/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileServer(t, nil)
			r := tunnelRequest(proxy+tc.path, tunneltest.UserToken, false)
			r.URL.RawQuery = tc.query
			rec := h.serve(r)
			asked := h.auth.AskedSoFar()
			if tc.wantVerb == "" {
				assert.Equal(t, http.StatusNotFound, rec.Code, rec.Body.String())
				assert.Empty(t, asked)
				return
			}
			require.Len(t, asked, 1, rec.Body.String())
			assert.Equal(t, tc.wantVerb, asked[0].Verb)
			assert.Equal(t, tc.wantResource, asked[0].Resource)
			assert.Equal(t, "team-a", asked[0].Namespace)
		})
	}
}

// allowAll authorises everything and keeps nothing (tunneltest.Auth records every question,
// which would grow the heap this test measures).
type allowAll struct{}

func (allowAll) Authorize(context.Context, server.Attributes) (bool, string, error) {
	return true, "", nil
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestRandomNamesFromAnyoneLeaveTheMetricSeriesFlat: 20,000 requests with random names,
// random garbage tokens and valid ones (all authorised, none connected) leave the metric
// series count unchanged and the heap within 1 MiB of where it was after the first 2,000
// (the token cache is bounded at 1,000 entries here).
func TestRandomNamesFromAnyoneLeaveTheMetricSeriesFlat(t *testing.T) {
	h := newHostileServer(t, func(o *server.Options) {
		o.Authenticator = server.NewCachedAuthenticator(o.Authenticator, server.TokenCacheOptions{MaxEntries: 1000})
		o.Authorizer = allowAll{}
	})
	before := h.series(t)
	rng := rand.New(rand.NewPCG(17, 3))
	name := func() string {
		b := make([]byte, 1+rng.IntN(40))
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rng.IntN(36)]
		}
		return string(b)
	}
	tokens := []string{"", "garbage", tunneltest.UserToken, tunneltest.OtherToken, tunneltest.SyncerToken}
	send := func(i int) {
		target := tunnel.Target{Cluster: "root:" + name(), Name: name()}
		token := tokens[i%len(tokens)]
		if token == "garbage" {
			token += name() // a new garbage token every time
		}
		var r *http.Request
		switch i % 3 {
		case 0:
			r = tunnelRequest(target.Path(), token, true) // handshake for a target the caller may not hold
		case 1:
			r = tunnelRequest(target.ProxyPath()+"/api/v1/namespaces/team-a/pods/"+name()+"/log", token, false)
		default:
			r = tunnelRequest(target.ProxyPath()+"/api/v1/namespaces/team-"+name()+"/configmaps", token, false)
		}
		rec := h.serve(r)
		require.GreaterOrEqual(t, rec.Code, 400, rec.Body.String())
	}
	for i := range 2000 {
		send(i)
	}
	heap := heapAfterGC()
	for i := range 18000 {
		send(i)
	}
	grown := int64(heapAfterGC()) - int64(heap)
	assert.Equal(t, before, h.series(t), "no series for a target without a session, whoever asks")
	assert.Less(t, grown, int64(1<<20), "the heap stays flat: grew %d bytes over 18,000 requests", grown)
	t.Logf("heap grew %d bytes over 18,000 requests", grown)
}
