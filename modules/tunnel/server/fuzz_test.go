package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// FuzzServerHandshakeAndProxyRequest sends arbitrary paths, methods and handshake headers to
// the tunnel server (no SyncTarget connected), observed by the real Prometheus metrics. It
// never panics, never answers 2xx (nothing is connected, so nothing may be served), refuses an
// invalid cluster or SyncTarget name with 400 before any review, grows no metric series, and every question it asks the Authorizer is one the
// tunnel may legitimately forward: the syncer's tunnel update, a read-only verb on a plain
// resource or a pod subresource.
func FuzzServerHandshakeAndProxyRequest(f *testing.F) {
	ep := tunneltest.Target.Path()
	for _, s := range [][6]string{
		{ep, "GET", "Upgrade", "websocket", tunnel.Subprotocol, "Bearer " + tunneltest.SyncerToken},
		{ep, "GET", "keep-alive, Upgrade", "WebSocket", "x, " + tunnel.Subprotocol, "Bearer " + tunneltest.OtherToken},
		{ep, "POST", "Upgrade", "websocket", "", "Bearer"},
		{ep + "/proxy/api/v1/namespaces/team-a/pods/web/log", "GET", "", "", "", "Bearer " + tunneltest.UserToken},
		{ep + "/proxy/api/v1/namespaces/team-a/pods/web/exec", "POST", "Upgrade", "SPDY/3.1", "", "Bearer " + tunneltest.UserToken},
		{ep + "/proxy/apis/apps/v1/namespaces/team-a/deployments", "DELETE", "", "", "", "Bearer " + tunneltest.UserToken},
		{ep + "/proxy/api/v1/namespaces/team-a/secrets/../../../nodes", "GET", "", "", "", "Bearer " + tunneltest.BrokenToken},
		{"/tunnel/v1/clusters/root:org:ws/synctargets/cluster-1/other", "GET", "", "", "", ""},
		// Hostile names (issue 17, item 1): refused with 400 before any review or metric.
		{"/tunnel/v1/clusters/root/synctargets/\xff\xfe", "GET", "Upgrade", "websocket", tunnel.Subprotocol, "Bearer " + tunneltest.SyncerToken},
		{"/tunnel/v1/clusters/root:\xc3\x28/synctargets/c/proxy/api/v1/namespaces/team-a/pods/web/log", "GET", "", "", "", "Bearer " + tunneltest.UserToken},
		{"/tunnel/v1/clusters/root/synctargets/%FF/proxy/api/v1/namespaces/team-a/configmaps", "GET", "", "", "", "Bearer x"},
		{"/tunnel/v1/clusters/*/synctargets/*", "GET", "Upgrade", "websocket", tunnel.Subprotocol, "Bearer " + tunneltest.SyncerToken},
		{"/tunnel/v1/clusters/root/synctargets/" + strings.Repeat("n", 30<<10), "GET", "", "", "", "Bearer " + tunneltest.UserToken},
		{"/tunnel/v1/clusters/" + strings.Repeat("c", 30<<10) + "/synctargets/c1/proxy/api/v1/namespaces/team-a/pods", "GET", "", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], "watch=true")
	}
	h := newHostileServer(f, nil)
	auth, srv := h.auth, h.srv
	baseline := h.series(f)

	f.Fuzz(func(t *testing.T, p, method, connection, upgrade, proto, authz, rawQuery string) {
		r := (&http.Request{
			Method: method, URL: &url.URL{Path: p, RawQuery: rawQuery}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{
				"Connection": {connection}, "Upgrade": {upgrade}, "Sec-Websocket-Protocol": {proto},
				"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
				"Authorization": {authz},
			},
			Host: "tunnel.test", RemoteAddr: "192.0.2.1:1234",
		}).WithContext(context.Background())
		auth.Asked = nil
		auth.Reviews = 0
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, r) // with the Prometheus observer: a refused label value would panic here
		require.GreaterOrEqual(t, rec.Code, 400, "nothing is connected, so nothing may succeed: %d %s", rec.Code, rec.Body)
		if _, _, err := tunnel.ParsePath(p); errors.Is(err, tunnel.ErrInvalidTarget) {
			require.Equal(t, http.StatusBadRequest, rec.Code, "an invalid target is refused with 400")
			require.Zero(t, auth.Reviews, "an invalid target is refused before any TokenReview")
			require.Empty(t, auth.Asked, "an invalid target is refused before any SubjectAccessReview")
		}
		require.Equal(t, baseline, h.series(t), "nothing connected: no metric series appears")
		for _, a := range auth.Asked {
			switch {
			case a.Resource == "synctargets":
				require.Equal(t, server.Attributes{User: a.User, Cluster: a.Cluster, Verb: "update", Group: "workload.kcp.io",
					Resource: "synctargets", Subresource: "tunnel", Name: a.Name}, a)
			case a.Subresource != "":
				require.Equal(t, "pods", a.Resource)
				require.Empty(t, a.Group)
				require.NotEmpty(t, a.Namespace)
			default:
				require.Contains(t, []string{"get", "list", "watch"}, a.Verb, "plain resources: read-only verbs only")
				require.NotEmpty(t, a.Namespace)
				require.NotContains(t, a.Namespace, "/")
			}
		}
	})
}
