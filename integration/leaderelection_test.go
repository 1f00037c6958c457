package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// TestSyncerReplicasElectOneLeaderAndFailOver runs two replicas of the real binary
// with --leader-elect: one holds the Lease and syncs; killed with SIGKILL, the other
// takes over within the lease duration and keeps syncing.
func TestSyncerReplicasElectOneLeaderAndFailOver(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	st := createSyncTarget(t, env, "replicated")
	target := identity.NewTarget("root", "replicated", st.GetUID())
	syncerNS := env.Physical.CreateNamespace(t, "syncer")
	t.Setenv("NAMESPACE", syncerNS)
	args := append(syncerArgs(env, "replicated", string(st.GetUID())), "--leader-elect",
		"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms")
	replicas := []*syncerProcess{startSyncerBinary(t, args...), startSyncerBinary(t, args...)}

	// The replicas' Lease is the only one in their namespace.
	holder := func() string {
		leases, err := env.Physical.Kube(t).CoordinationV1().Leases(syncerNS).List(ctx, metav1.ListOptions{})
		if err != nil || len(leases.Items) != 1 || leases.Items[0].Spec.HolderIdentity == nil {
			return ""
		}
		return *leases.Items[0].Spec.HolderIdentity
	}
	leader := func() *syncerProcess {
		h := holder()
		for _, r := range replicas {
			if h != "" && strings.HasSuffix(h, "_"+strconv.Itoa(r.cmd.Process.Pid)) {
				return r
			}
		}
		return nil
	}
	require.Eventually(t, func() bool { return leader() != nil }, 30*time.Second, 100*time.Millisecond, "one replica takes the lease")
	first := leader()

	ns := env.KCP.CreateNamespace(t, "replicated")
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "replicated", UID: string(st.GetUID())},
		Cluster:    "root", Namespace: ns,
	})
	require.NoError(t, err)
	syncs := func(name string) {
		_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{target.StateLabel(): "Sync"}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			_, err := env.Physical.Kube(t).CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
			return err == nil
		}, 60*time.Second, 100*time.Millisecond, "%s syncs", name)
	}
	syncs("before-failover")

	killed := time.Now()
	require.NoError(t, first.cmd.Process.Kill())
	require.Eventually(t, func() bool { l := leader(); return l != nil && l != first }, 30*time.Second, 100*time.Millisecond,
		"the other replica takes over the lease")
	t.Logf("failover took %s (lease duration 4s)", time.Since(killed).Round(time.Millisecond))
	syncs("after-failover")
}
