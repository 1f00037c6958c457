package integration

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// recordingAuthenticator keeps every token a syncer showed at a handshake: what a
// malicious tunnel server would keep.
type recordingAuthenticator struct {
	server.Authenticator
	mu     sync.Mutex
	tokens []string
}

func (a *recordingAuthenticator) AuthenticateToken(ctx context.Context, cluster, token string) (server.UserInfo, bool, error) {
	a.mu.Lock()
	a.tokens = append(a.tokens, token)
	a.mu.Unlock()
	return a.Authenticator.AuthenticateToken(ctx, cluster, token) //nolint:wrapcheck // passed through as is
}

func (a *recordingAuthenticator) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.tokens...)
}

// TestTheTunnelServerNeverHoldsATokenTheAPIServerAccepts runs the real syncer binary with
// its defaults against a tunnel server that records what it is shown: the syncer connects
// with a token it requested for its own ServiceAccount bound to the tunnel's audience;
// that token, replayed against the control plane's API server, is refused (401); and the
// syncer's upstream token itself does not open a tunnel (the review asks for the tunnel's
// audience, which the API server does not confirm for it).
func TestTheTunnelServerNeverHoldsATokenTheAPIServerAccepts(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	const name = "bound-token"
	st := createSyncTarget(t, env, name)
	kubeconfig := syncerIdentity(t, env, name)

	upstream, err := url.Parse(env.KCP.Config.Host)
	require.NoError(t, err)
	clients := server.SingleCluster(env.KCP.Kube(t))
	rec := &recordingAuthenticator{Authenticator: server.NewTokenReviewAuthenticator(clients, client.DefaultTunnelAudience)}
	srv, err := server.New(server.Options{
		UpstreamAddress:     upstream.Host,
		Authenticator:       server.NewTokenReviewAuthenticator(clients),
		SyncerAuthenticator: rec,
		Authorizer:          server.NewSubjectAccessReviewAuthorizer(clients),
		Insecure:            true,
	})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		<-done
	})

	p := startSyncerBinary(t,
		"--from-kubeconfig="+kubeconfig, "--to-kubeconfig="+env.Physical.Kubeconfig,
		"--sync-target-name="+name, "--sync-target-uid="+string(st.GetUID()),
		"--health-bind-address=", "--metrics-bind-address=",
		"--tunnel-url=http://"+ln.Addr().String(), "--tunnel-insecure")
	target := tunnel.Target{Cluster: "root", Name: name}
	require.Eventually(t, func() bool { return srv.Registry().Connected(target) }, 60*time.Second, 50*time.Millisecond,
		"the syncer connects with a token bound to the tunnel's audience; output:\n%s", p.Output)

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	apiStatus := func(token string) int {
		c := rest.AnonymousClientConfig(cfg)
		c.BearerToken = token
		hc, err := rest.HTTPClientFor(c)
		require.NoError(t, err)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/api/v1/namespaces/default/configmaps", nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, apiStatus(cfg.BearerToken), "the syncer's upstream token works against the API server")
	seen := rec.seen()
	require.NotEmpty(t, seen)
	for _, tok := range seen {
		assert.NotEqual(t, cfg.BearerToken, tok, "the tunnel server is never shown the upstream token")
		assert.Equal(t, http.StatusUnauthorized, apiStatus(tok), "a token the tunnel server was shown is useless against the API server")
	}

	// The upstream token itself does not open a tunnel.
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	ws, resp, err := websocket.Dial(hctx, "ws://"+ln.Addr().String()+target.Path(), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + cfg.BearerToken}}, Subprotocols: []string{tunnel.Subprotocol},
	})
	if ws != nil {
		_ = ws.CloseNow()
	}
	require.Error(t, err)
	require.NotNil(t, resp)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the API token is refused at the handshake")
}
