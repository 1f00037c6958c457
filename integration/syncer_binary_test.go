package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// syncerBuild holds the syncer binary, built once per test process from cmd/syncer.
var syncerBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func syncerBinary(t *testing.T) string {
	t.Helper()
	env := framework.Shared(t)
	syncerBuild.once.Do(func() {
		syncerBuild.dir, syncerBuild.err = os.MkdirTemp("", "tmc-syncer-bin-")
		if syncerBuild.err != nil {
			return
		}
		syncerBuild.path = filepath.Join(syncerBuild.dir, "syncer")
		cmd := exec.Command("go", "build", "-o", syncerBuild.path, ".")
		cmd.Dir = filepath.Join(env.Root, "cmd", "syncer")
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			syncerBuild.err = fmt.Errorf("build syncer: %w\n%s", err, b)
		}
	})
	require.NoError(t, syncerBuild.err)
	return syncerBuild.path
}

// removeSyncerBinary deletes the binary built for the tests, if any.
func removeSyncerBinary() {
	if syncerBuild.dir != "" {
		_ = os.RemoveAll(syncerBuild.dir)
	}
}

// syncerProcess is the real syncer binary running against the test bed.
// lockedBuffer collects a child process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type syncerProcess struct {
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
	err    error
}

func startSyncerBinary(t *testing.T, args ...string) *syncerProcess {
	t.Helper()
	bin := syncerBinary(t)
	p := &syncerProcess{output: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("syncer output:\n%s", p.output.String())
		}
	})
	return p
}

func (p *syncerProcess) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("syncer did not exit within %s; output:\n%s", within, p.output.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
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
	}, 60*time.Second, 100*time.Millisecond, "the ConfigMap reaches %s downstream; syncer output:\n%s", downNS, p.output)

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
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	// The syncer gives its components 20 s to drain; a few more for a loaded machine.
	assert.Equal(t, 0, p.exitCode(t, 25*time.Second), "SIGTERM drains and exits 0 within the drain bound; output:\n%s", p.output)
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
			code := p.exitCode(t, 60*time.Second)
			assert.Equal(t, tt.code, code, p.output.String())
			assert.Contains(t, p.output.String(), tt.want)
			assert.NotContains(t, p.output.String(), "goroutine ", "no stack trace")
		})
	}
	_, err = env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), "badinput", metav1.GetOptions{})
	assert.False(t, apierrors.IsNotFound(err))
}
