package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// dialTunnel opens a raw tunnel WebSocket with token; it returns the connection or the
// HTTP status of the refusal.
func dialTunnel(ctx context.Context, t *testing.T, srv *tunneltest.Server, token string) (*websocket.Conn, int) {
	t.Helper()
	ws, resp, err := websocket.Dial(ctx, srv.URL+tunneltest.Target.Path(), &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{tunnel.Subprotocol},
	})
	code := 0
	if resp != nil {
		code = resp.StatusCode
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
	}
	if err != nil {
		return nil, code
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws, code
}

func TestAnotherIdentityCannotTakeOverAConnectedTarget(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ws, _ := dialTunnel(ctx, t, srv, tunneltest.SyncerToken)
	require.NotNil(t, ws)
	tunneltest.Eventually(t, 5*time.Second, "syncer registered", func() bool { return srv.Registry().Connected(tunneltest.Target) })
	held := srv.Registry().Get(tunneltest.Target)

	// The intruder may update the target's tunnel by RBAC, but another identity holds it.
	intruder, code := dialTunnel(ctx, t, srv, tunneltest.IntruderToken)
	if intruder != nil {
		t.Error("the intruder got a tunnel")
	}
	assert.Equal(t, http.StatusConflict, code)
	assert.Same(t, held, srv.Registry().Get(tunneltest.Target), "the holder's session is untouched")
	assert.Equal(t, tunneltest.SyncerUser, srv.Registry().List()[0].User)

	// The same identity replaces its own session (a restarted syncer).
	again, _ := dialTunnel(ctx, t, srv, tunneltest.SyncerToken)
	require.NotNil(t, again)
	tunneltest.Eventually(t, 5*time.Second, "the syncer's new session replaces its old one", func() bool {
		s := srv.Registry().Get(tunneltest.Target)
		return s != nil && s != held
	})
	<-held.Done()
	assert.Equal(t, tunnel.ReasonReplaced, held.Reason())

	// Once the holder is gone, another authorised identity may connect.
	_ = again.CloseNow()
	tunneltest.Eventually(t, 10*time.Second, "the syncer's session ends", func() bool { return !srv.Registry().Connected(tunneltest.Target) })
	other, _ := dialTunnel(ctx, t, srv, tunneltest.IntruderToken)
	require.NotNil(t, other)
}

func TestSessionIsClosedOnceItsTokenOrRBACIsRevoked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(a *tunneltest.Auth)
	}{
		{name: "token revoked", revoke: func(a *tunneltest.Auth) { a.Revoke(tunneltest.SyncerToken) }},
		{name: "RBAC revoked", revoke: func(a *tunneltest.Auth) { a.SetDenied(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), func(o *server.Options) {
				o.ReauthorizePeriod = 100 * time.Millisecond
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, _ := dialTunnel(ctx, t, srv, tunneltest.SyncerToken)
			require.NotNil(t, ws)
			go func() { // read, so that pings are answered and the close frame arrives
				for {
					if _, _, err := ws.Read(ctx); err != nil {
						return
					}
				}
			}()
			tunneltest.Eventually(t, 5*time.Second, "registered", func() bool { return srv.Registry().Connected(tunneltest.Target) })
			sess := srv.Registry().Get(tunneltest.Target)

			// A backend that cannot decide keeps the session.
			srv.Auth.SetBroken(true)
			time.Sleep(350 * time.Millisecond)
			assert.True(t, srv.Registry().Connected(tunneltest.Target), "undecided re-checks keep the session")
			srv.Auth.SetBroken(false)

			tc.revoke(srv.Auth)
			select {
			case <-sess.Done():
			case <-time.After(2 * time.Second):
				t.Fatal("the session outlived its revocation by more than the re-check period")
			}
			assert.Equal(t, tunnel.ReasonRevoked, sess.Reason())
			tunneltest.Eventually(t, 5*time.Second, "unregistered", func() bool { return !srv.Registry().Connected(tunneltest.Target) })
		})
	}
}
