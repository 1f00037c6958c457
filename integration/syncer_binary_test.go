package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

func syncerBinary(t *testing.T) string {
	t.Helper()
	return framework.SyncerBinary(t, framework.Shared(t).Root)
}

func startSyncerBinary(t *testing.T, args ...string) *framework.SyncerProcess {
	t.Helper()
	return framework.StartSyncer(t, syncerBinary(t), nil, args...)
}

func createSyncTarget(t *testing.T, env *framework.Environment, name string) *unstructured.Unstructured {
	t.Helper()
	sts := env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource)
	st, err := sts.Create(context.Background(), &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": map[string]any{"name": name},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sts.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return st
}

// scrapeMetrics returns the /metrics text at addr, or "" while it does not answer.
func scrapeMetrics(addr string) string {
	body, _ := framework.HTTPGet(context.Background(), "http://"+addr+"/metrics")
	return body
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := framework.FreeAddr()
	require.NoError(t, err)
	return addr
}

func syncerArgs(env *framework.Environment, name string, uid string, extra ...string) []string {
	return append([]string{
		"--from-kubeconfig=" + env.KCP.Kubeconfig, "--to-kubeconfig=" + env.Physical.Kubeconfig,
		"--sync-target-name=" + name, "--sync-target-uid=" + uid,
		"--health-bind-address=127.0.0.1:0", "--metrics-bind-address=127.0.0.1:0",
	}, extra...)
}

// TestSyncerBinarySyncsAndStopsCleanlyOnSIGTERM runs the real binary: a ConfigMap
// labelled for its SyncTarget appears in the physical cluster, and SIGTERM ends the
// process with exit code 0.
func TestSyncerBinarySyncsAndStopsCleanlyOnSIGTERM(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	st := createSyncTarget(t, env, "binary")
	target := identity.NewTarget("root", "binary", st.GetUID())
	metricsAddr := freeAddr(t)
	p := startSyncerBinary(t, append(syncerArgs(env, "binary", string(st.GetUID())), "--metrics-bind-address="+metricsAddr)...)

	ns := env.KCP.CreateNamespace(t, "binary")
	_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "app-config", Labels: map[string]string{target.StateLabel(): "Sync"}},
		Data:       map[string]string{"greeting": "hello"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "binary", UID: string(st.GetUID())},
		Cluster:    "root", Namespace: ns,
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cm, err := env.Physical.Kube(t).CoreV1().ConfigMaps(downNS).Get(ctx, "app-config", metav1.GetOptions{})
		return err == nil && cm.Data["greeting"] == "hello"
	}, 60*time.Second, 100*time.Millisecond, "the ConfigMap reaches %s downstream; syncer output:\n%s", downNS, p.Output)

	// After N objects, the scrape shows N synced and their sync latencies.
	const n = 5
	for i := 1; i < n; i++ {
		_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("more-%d", i), Labels: map[string]string{target.StateLabel(): "Sync"}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	var scrape string
	require.Eventually(t, func() bool {
		scrape = scrapeMetrics(metricsAddr)
		return framework.MetricSum(scrape, "tmc_syncer_informer_objects", `resource="configmaps"`, `side="downstream"`) == n &&
			framework.MetricSum(scrape, "tmc_syncer_sync_latency_seconds_count", `controller="downstream-spec"`, `resource="configmaps"`) >= n
	}, 30*time.Second, 200*time.Millisecond, "the scrape shows %d synced ConfigMaps and their sync latencies; got:\n%s", n, grepLines(scrape, "configmaps"))

	signalled := time.Now()
	require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
	// The syncer gives its components 20 s to drain; a few more for a loaded machine.
	assert.Equal(t, 0, p.ExitCode(t, 25*time.Second), "SIGTERM drains and exits 0 within the drain bound; output:\n%s", p.Output)
	t.Logf("exited %s after SIGTERM", time.Since(signalled).Round(time.Millisecond))
}

// TestSyncerBinaryBadInputExitCodes checks that each bad input ends the process at
// once with one clear line and its own exit code.
func TestSyncerBinaryBadInputExitCodes(t *testing.T) {
	env := framework.Shared(t)
	st := createSyncTarget(t, env, "badinput")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"SyncTarget not found", syncerArgs(env, "does-not-exist", ""), 5, `SyncTarget "does-not-exist" not found`},
		{"UID mismatch", syncerArgs(env, "badinput", "0000-wrong"), 5, "but --sync-target-uid is 0000-wrong"},
		{"port in use", syncerArgs(env, "badinput", string(st.GetUID()), "--metrics-bind-address="+busy.Addr().String()), 7, "--metrics-bind-address"},
		{"unknown resource", syncerArgs(env, "badinput", string(st.GetUID()), "--resources=deployments.apps,widgets.nope.example.com"), 6, "--resources: the control plane serves no widgets.nope.example.com"},
		{"missing kubeconfig", []string{"--from-kubeconfig=/nonexistent", "--sync-target-name=x"}, 4, "--from-kubeconfig /nonexistent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startSyncerBinary(t, tt.args...)
			code := p.ExitCode(t, 60*time.Second)
			assert.Equal(t, tt.code, code, p.Output.String())
			assert.Contains(t, p.Output.String(), tt.want)
			assert.NotContains(t, p.Output.String(), "goroutine ", "no stack trace")
		})
	}
	_, err = env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), "badinput", metav1.GetOptions{})
	assert.False(t, apierrors.IsNotFound(err))
}
