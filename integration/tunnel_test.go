package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// syncerIdentity returns a kubeconfig of a ServiceAccount upstream allowed to sync
// and to open the tunnel: the syncer's upstream identity.
func syncerIdentity(t *testing.T, env *framework.Environment, name string) string {
	t.Helper()
	path, err := framework.ServiceAccountKubeconfig(context.Background(), env.KCP, "syncer-identities", name, "cluster-admin", t.TempDir())
	require.NoError(t, err)
	return path
}

// tunnelServer runs the tunnel server in-process on a fixed loopback address, so
// that it can be stopped and started again at the same place.
type tunnelServer struct {
	t      *testing.T
	env    *framework.Environment
	addr   string
	cancel context.CancelFunc
	done   chan error
	srv    *server.Server
}

func startTunnelServer(t *testing.T, env *framework.Environment, addr string) *tunnelServer {
	t.Helper()
	if addr == "" {
		addr = freeAddr(t)
	}
	upstream, err := url.Parse(env.KCP.Config.Host)
	require.NoError(t, err)
	clients := server.SingleCluster(env.KCP.Kube(t))
	srv, err := server.New(server.Options{
		UpstreamAddress: upstream.Host,
		Authenticator:   server.NewTokenReviewAuthenticator(clients),
		// The syncer shows a token bound to the tunnel's audience (its default).
		SyncerAuthenticator: server.NewTokenReviewAuthenticator(clients, client.DefaultTunnelAudience),
		Authorizer:          server.NewSubjectAccessReviewAuthorizer(clients),
		Insecure:            true,
	})
	require.NoError(t, err)
	var ln net.Listener
	require.Eventually(t, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "listen on %s again", addr)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &tunnelServer{t: t, env: env, addr: addr, cancel: cancel, done: make(chan error, 1), srv: srv}
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *tunnelServer) stop() {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.srv.Close()
	<-ts.done
	ts.cancel = nil
}

func (ts *tunnelServer) connected(cluster, name string) bool {
	return ts.srv.Registry().Connected(tunnel.Target{Cluster: cluster, Name: name})
}

// TestTunnelCarriesAllUpstreamTrafficAndSurvivesServerRestart runs the real syncer
// with every upstream request going through the tunnel: objects sync; while the
// tunnel server is down nothing reaches the physical cluster; when it returns the
// syncer reconnects and the 20 objects created meanwhile all arrive.
func TestTunnelCarriesAllUpstreamTrafficAndSurvivesServerRestart(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	st := createSyncTarget(t, env, "tunnelled")
	target := identity.NewTarget("root", "tunnelled", st.GetUID())
	kubeconfig := syncerIdentity(t, env, "tunnelled")
	ts := startTunnelServer(t, env, "")
	p := startSyncerBinary(t,
		"--from-kubeconfig="+kubeconfig, "--to-kubeconfig="+env.Physical.Kubeconfig,
		"--sync-target-name=tunnelled", "--sync-target-uid="+string(st.GetUID()),
		"--health-bind-address=", "--metrics-bind-address=",
		"--tunnel-url=http://"+ts.addr, "--tunnel-insecure")

	ns := env.KCP.CreateNamespace(t, "tunnelled")
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "tunnelled", UID: string(st.GetUID())},
		Cluster:    "root", Namespace: ns,
	})
	require.NoError(t, err)
	create := func(name string) {
		_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{target.StateLabel(): "Sync"}},
			Data:       map[string]string{"name": name},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	arrived := func(names ...string) bool {
		for _, n := range names {
			if _, err := env.Physical.Kube(t).CoreV1().ConfigMaps(downNS).Get(ctx, n, metav1.GetOptions{}); err != nil {
				return false
			}
		}
		return true
	}

	require.Eventually(t, func() bool { return ts.connected("root", "tunnelled") }, 60*time.Second, 50*time.Millisecond,
		"the syncer connects to the tunnel server; output:\n%s", p.Output)
	create("first")
	require.Eventually(t, func() bool { return arrived("first") }, 60*time.Second, 100*time.Millisecond,
		"an object syncs with upstream traffic through the tunnel; output:\n%s", p.Output)

	ts.stop()
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("during-outage-%02d", i))
		create(names[i])
	}
	require.Never(t, func() bool { return arrived(names[0]) }, 2*time.Second, 100*time.Millisecond,
		"with the tunnel down the syncer cannot see upstream, so nothing new arrives")

	restarted := time.Now()
	ts = startTunnelServer(t, env, ts.addr)
	require.Eventually(t, func() bool { return ts.connected("root", "tunnelled") }, 40*time.Second, 20*time.Millisecond,
		"the syncer reconnects; output:\n%s", p.Output)
	reconnect := time.Since(restarted)
	require.Eventually(t, func() bool { return arrived(names...) }, 60*time.Second, 100*time.Millisecond,
		"all 20 objects created during the outage arrive; output:\n%s", p.Output)
	t.Logf("reconnected %s after the tunnel server came back; all 20 objects arrived %s after it", reconnect.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	if os.Getenv("TMC_TEST_VERBOSE") != "" {
		t.Logf("syncer output:\n%s", p.Output)
	}
}
