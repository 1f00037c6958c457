package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// tunnelReplica is one `syncer tunnel-server` process of several.
type tunnelReplica struct {
	*tunnelServerProcess
	addr, peer string
}

// startTunnelReplicas runs n tunnel-server processes sharing the session Leases in
// leaseNS and one replica CA.
func startTunnelReplicas(t *testing.T, env *framework.Environment, n int, leaseNS string) []*tunnelReplica {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := env.KCP.IssueServingCert(dir, "tunnel-server")
	require.NoError(t, err)
	peerCA, peerCert, peerKey, err := framework.WriteReplicaPKI(dir, server.DefaultPeerServerName)
	require.NoError(t, err)
	out := make([]*tunnelReplica, n)
	for i := range out {
		addr, internal, peer := freeAddr(t), freeAddr(t), freeAddr(t)
		p := startSyncerBinary(t, "tunnel-server", "--bind-address="+addr, "--internal-bind-address="+internal,
			"--kubeconfig="+env.KCP.Kubeconfig, "--tls-cert-file="+cert, "--tls-private-key-file="+key,
			"--advertise-address="+peer, "--peer-bind-address="+peer, "--peer-tls-cert-file="+peerCert,
			"--peer-tls-private-key-file="+peerKey, "--peer-ca-file="+peerCA,
			"--lease-namespace="+leaseNS, "--lease-duration=6s")
		out[i] = &tunnelReplica{addr: addr, peer: peer, tunnelServerProcess: &tunnelServerProcess{
			SyncerProcess: p, url: "https://" + addr, caFile: env.KCP.CAFile(), internal: "http://" + internal}}
	}
	for _, r := range out {
		hc := r.httpClient(t)
		require.Eventually(t, func() bool {
			resp, err := hc.Get(r.url + "/readyz") //nolint:noctx // readiness poll
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, 60*time.Second, 100*time.Millisecond, "tunnel-server replica %s becomes ready; output:\n%s", r.addr, r.Output)
	}
	return out
}

// TestTunnelServerReplicas runs three tunnel-server processes behind a round-robin TCP
// front with one syncer: pod logs answer through every replica (the others forward to
// the holder); the holder is killed with SIGKILL: the syncer is connected again through
// the front within 2 s, the Lease names the new holder, pod logs answer through both
// remaining replicas, and no upstream write made around the kill is lost.
func TestTunnelServerReplicas(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	const stName = "replicas"
	const lines = 4
	st := createSyncTarget(t, env, stName)
	target := identity.NewTarget("root", stName, st.GetUID())
	tt := tunnel.Target{Cluster: "root", Name: stName}
	node := "stub-node-" + strings.ToLower(string(st.GetUID())[:8])
	env.Physical.StartStubKubelet(t, node, func(_, _, container string) ([]string, bool) {
		return podLogLines(lines), container == "app"
	}, 10*time.Millisecond)

	leaseNS := env.KCP.CreateNamespace(t, "tunnel-leases")
	replicas := startTunnelReplicas(t, env, 3, leaseNS)
	front, err := framework.StartRoundRobin(replicas[0].addr, replicas[1].addr, replicas[2].addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = front.Close() })
	p := startSyncerBinary(t,
		"--from-kubeconfig="+syncerIdentity(t, env, stName), "--to-kubeconfig="+env.Physical.Kubeconfig,
		"--sync-target-name="+stName, "--sync-target-uid="+string(st.GetUID()),
		"--resources=pods", "--health-bind-address=", "--metrics-bind-address=",
		"--tunnel-url=https://"+front.Addr(), "--tunnel-ca-file="+env.KCP.CAFile())

	ns := env.KCP.CreateNamespace(t, "replicas")
	users := env.KCP.CreateNamespace(t, "replicas-users")
	reader := upstreamUserToken(t, env, users, "log-reader", ns)
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: stName, UID: string(st.GetUID())}, Cluster: "root", Namespace: ns,
	})
	require.NoError(t, err)
	sync := map[string]string{target.StateLabel(): "Sync"}
	up, down := env.KCP.Kube(t), env.Physical.Kube(t)
	_, err = up.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: sync},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	leases := up.CoordinationV1().Leases(leaseNS)
	holder := func() string {
		l, err := leases.Get(ctx, server.LeaseName(tt), metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return ptr.Deref(l.Spec.HolderIdentity, "")
	}
	byPeer := func(peer string) *tunnelReplica {
		for _, r := range replicas {
			if r.peer == peer {
				return r
			}
		}
		return nil
	}
	require.Eventually(t, func() bool { h := byPeer(holder()); return h != nil && h.srvConnected(t, "root", stName) },
		60*time.Second, 100*time.Millisecond, "a replica holds the session and says so in the Lease; syncer output:\n%s", p.Output)

	logsThrough := func(r *tunnelReplica) (int, string) {
		hc := r.httpClient(t)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url+tt.ProxyPath()+"/api/v1/namespaces/"+ns+"/pods/web/log?container=app", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+reader)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	want := strings.Join(podLogLines(lines), "\n") + "\n"
	checkLogs := func(rs []*tunnelReplica) {
		t.Helper()
		for _, r := range rs {
			var code int
			var body string
			require.Eventually(t, func() bool {
				code, body = logsThrough(r)
				return code == http.StatusOK
			}, 30*time.Second, 200*time.Millisecond, "pod logs through replica %s (holder %s): last %d %s", r.addr, holder(), code, body)
			assert.Equal(t, want, body, "pod logs through replica %s", r.addr)
			// /status of every replica lists the session.
			assert.True(t, r.srvConnected(t, "root", stName), "/status of replica %s shows the session", r.addr)
		}
	}
	checkLogs(replicas)

	// Writes around the kill: none may be lost.
	const before, after = 10, 10
	write := func(i int) {
		_, err := up.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%02d", i), Labels: sync}, Data: map[string]string{"i": fmt.Sprint(i)},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	for i := range before {
		write(i)
	}
	dead := byPeer(holder())
	require.NotNil(t, dead)
	killed := time.Now()
	dead.Stop() // SIGKILL: no goodbye, the Lease stays behind until taken over
	for i := before; i < before+after; i++ {
		write(i)
	}
	var newHolder string
	require.Eventually(t, func() bool {
		newHolder = holder()
		h := byPeer(newHolder)
		return h != nil && h != dead && h.srvConnected(t, "root", stName)
	}, 30*time.Second, 20*time.Millisecond, "another replica takes the session; syncer output:\n%s", p.Output)
	reconnect := time.Since(killed)
	t.Logf("reconnected to replica %s %s after the holder was killed", newHolder, reconnect.Round(time.Millisecond))
	assert.LessOrEqual(t, reconnect, 2*time.Second, "P7: the syncer is connected again within 2 s while another replica is up")

	var alive []*tunnelReplica
	for _, r := range replicas {
		if r != dead {
			alive = append(alive, r)
		}
	}
	checkLogs(alive)
	require.Eventually(t, func() bool {
		for i := range before + after {
			if _, err := down.CoreV1().ConfigMaps(downNS).Get(ctx, fmt.Sprintf("cm-%02d", i), metav1.GetOptions{}); err != nil {
				return false
			}
		}
		return true
	}, 60*time.Second, 200*time.Millisecond, "every ConfigMap written around the kill arrives downstream")
}
