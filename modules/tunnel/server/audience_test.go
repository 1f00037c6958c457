package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// tunnelAudience accepts only tokens bound to the tunnel: what a TokenReview with the
// tunnel's audience does with a token meant for the API server.
type tunnelAudience struct{}

const boundToken = "tunnel-bound-token"

func (tunnelAudience) AuthenticateToken(_ context.Context, _, token string) (server.UserInfo, bool, error) {
	if token == boundToken {
		return server.UserInfo{Name: tunneltest.SyncerUser, UID: "uid-syncer"}, true, nil
	}
	return server.UserInfo{}, false, nil
}

func TestSyncerHandshakesAreAuthenticatedWithTheTunnelAudienceOnly(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	srv := tunneltest.NewServer(t, pki, "127.0.0.1:1", func(o *server.Options) { o.SyncerAuthenticator = tunnelAudience{} })
	hc := httpClient(pki)
	defer hc.CloseIdleConnections()

	code := handshake(t, hc, srv.URL+tunneltest.Target.Path(), tunneltest.SyncerToken)
	assert.Equal(t, http.StatusUnauthorized, code, "the syncer's API token (the one the API server accepts) does not open a tunnel")

	c, err := client.New(client.Options{
		ServerURL: srv.URL, Target: tunneltest.Target, Token: client.StaticToken(boundToken), TLSConfig: pki.ClientTLS(),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	tunneltest.Eventually(t, 10*time.Second, "a token bound to the tunnel's audience opens the tunnel", func() bool {
		return srv.Registry().Connected(tunneltest.Target)
	})

	// Users keep their API tokens: the proxy authenticates them with the Authenticator.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, proxyURL(srv, "/api/v1/namespaces/team/pods/web/log"), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tunneltest.UserToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.NotEqual(t, http.StatusUnauthorized, resp.StatusCode, "a user's API token is accepted for pod requests")
	req.Header.Set("Authorization", "Bearer "+boundToken)
	resp, err = hc.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the tunnel token is not a user credential")
}

// handshake sends a tunnel handshake with token and returns the status code.
func handshake(t *testing.T, hc *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", tunnel.Subprotocol)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}
