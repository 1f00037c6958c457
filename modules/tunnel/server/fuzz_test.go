package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// FuzzServerHandshakeAndProxyRequest sends arbitrary paths, methods and handshake headers to
// the tunnel server (no SyncTarget connected). It never panics, never answers 2xx (nothing is
// connected, so nothing may be served), and every question it asks the Authorizer is one the
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
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], "watch=true")
	}
	auth := &tunneltest.Auth{}
	srv, err := server.New(server.Options{
		UpstreamAddress: "127.0.0.1:1", Authenticator: auth, Authorizer: auth,
		NamespaceMapper: tunneltest.MapNamespace, Insecure: true, Logger: logr.Discard(),
	})
	require.NoError(f, err)
	f.Cleanup(srv.Close)

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
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, r)
		require.GreaterOrEqual(t, rec.Code, 400, "nothing is connected, so nothing may succeed: %d %s", rec.Code, rec.Body)
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
