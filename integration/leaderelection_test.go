package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// TestSyncerReplicasElectOneLeaderAndFailOver runs two replicas of the real binary
// with --leader-elect: one holds the Lease and syncs; killed with SIGKILL, the other
// takes over within the lease duration and keeps syncing. Only the leader writes: the
// standby applies nothing, and no downstream object is written twice in conflicting ways.
func TestSyncerReplicasElectOneLeaderAndFailOver(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	st := createSyncTarget(t, env, "replicated")
	target := identity.NewTarget("root", "replicated", st.GetUID())
	syncerNS := env.Physical.CreateNamespace(t, "syncer")
	t.Setenv("NAMESPACE", syncerNS)
	const leaseDuration, retryPeriod = 4 * time.Second, 500 * time.Millisecond
	args := append(syncerArgs(env, "replicated", string(st.GetUID())), "--leader-elect",
		"--leader-elect-lease-duration="+leaseDuration.String(), "--leader-elect-renew-deadline=3s",
		"--leader-elect-retry-period="+retryPeriod.String())
	metricsAddrs := []string{freeAddr(t), freeAddr(t)}
	replicas := []*framework.SyncerProcess{
		startSyncerBinary(t, append(args, "--metrics-bind-address="+metricsAddrs[0])...),
		startSyncerBinary(t, append(args, "--metrics-bind-address="+metricsAddrs[1])...),
	}
	applies := func(r *framework.SyncerProcess) float64 {
		for i := range replicas {
			if replicas[i] == r {
				body := scrapeMetrics(metricsAddrs[i])
				require.Contains(t, body, "process_start_time_seconds", "replica %d serves its metrics", i)
				return framework.MetricSum(body, "tmc_syncer_downstream_applies_total")
			}
		}
		return -1
	}

	// The replicas' Lease is the only one in their namespace.
	holder := func() string {
		leases, err := env.Physical.Kube(t).CoordinationV1().Leases(syncerNS).List(ctx, metav1.ListOptions{})
		if err != nil || len(leases.Items) != 1 || leases.Items[0].Spec.HolderIdentity == nil {
			return ""
		}
		return *leases.Items[0].Spec.HolderIdentity
	}
	leader := func() *framework.SyncerProcess {
		h := holder()
		for _, r := range replicas {
			if h != "" && strings.HasSuffix(h, "_"+strconv.Itoa(r.Cmd.Process.Pid)) {
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
	// Every write to the downstream ConfigMaps, from before the first one.
	w, err := env.Physical.Kube(t).CoreV1().ConfigMaps(downNS).Watch(ctx, metav1.ListOptions{
		LabelSelector: identity.DownstreamClusterLabel + "=" + target.Key,
	})
	require.NoError(t, err)
	defer w.Stop()
	syncs := func(name string) {
		_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{target.StateLabel(): "Sync"}},
			Data:       map[string]string{"written-by": "upstream", "name": name},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			_, err := env.Physical.Kube(t).CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
			return err == nil
		}, 60*time.Second, 100*time.Millisecond, "%s syncs", name)
	}
	syncs("before-failover")
	var standby *framework.SyncerProcess
	for _, r := range replicas {
		if r != first {
			standby = r
		}
	}
	// The object is visible downstream as soon as the API server has stored it, a moment
	// before the leader has read the response and counted the apply.
	require.Eventually(t, func() bool { return applies(first) > 0 }, 10*time.Second, 50*time.Millisecond, "the leader applies")
	require.Contains(t, []float64{-1, 0}, applies(standby), "the standby applies nothing while it is not the leader")

	killed := time.Now()
	require.NoError(t, first.Cmd.Process.Kill())
	require.Eventually(t, func() bool { return leader() == standby }, 30*time.Second, 50*time.Millisecond,
		"the other replica takes over the lease")
	lease, err := env.Physical.Kube(t).CoordinationV1().Leases(syncerNS).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, lease.Items, 1)
	require.NotNil(t, lease.Items[0].Spec.AcquireTime)
	// The Lease's acquire time (microseconds) is written by the new leader.
	failover := lease.Items[0].Spec.AcquireTime.Sub(killed)
	t.Logf("failover took %s (lease duration %s, retry period %s)", failover, leaseDuration, retryPeriod)
	// The lease expires leaseDuration after the standby last observed a renewal, which
	// it does on its tries: every retry period plus client-go's jitter of up to 1.2×
	// (2.2 × retryPeriod at worst). Then it acquires it at its next try. Three seconds
	// more for a loaded machine.
	worstTry := 22 * retryPeriod / 10
	assert.LessOrEqual(t, failover, leaseDuration+2*worstTry+3*time.Second, "failover within the lease duration")
	syncs("after-failover")

	// No object was written twice in conflicting ways: each downstream ConfigMap was
	// created once, and any later write left the content the first one wrote.
	first1 := map[string]*corev1.ConfigMap{}
	deadline := time.After(2 * time.Second)
	for done := false; !done; {
		select {
		case ev := <-w.ResultChan():
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			switch ev.Type {
			case watch.Added:
				assert.NotContains(t, first1, cm.Name, "%s created twice", cm.Name)
				first1[cm.Name] = cm
			case watch.Modified:
				if orig, ok := first1[cm.Name]; assert.True(t, ok, "%s modified before it was created", cm.Name) {
					assert.Equal(t, orig.Data, cm.Data, "%s rewritten with other data", cm.Name)
					assert.Equal(t, orig.Labels, cm.Labels, "%s rewritten with other labels", cm.Name)
				}
			case watch.Deleted:
				t.Errorf("%s deleted during failover", cm.Name)
			}
		case <-deadline:
			done = true
		}
	}
	assert.Len(t, first1, 2, "both ConfigMaps were seen being created")
	assert.Equal(t, "before-failover", first1["before-failover"].Data["name"])
}
