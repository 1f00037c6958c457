package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// chaosConfig is what a chaos run is made of; TMC_CHAOS_SEED and TMC_CHAOS_DURATION
// override the defaults (a random seed, a run that fits `make test`).
type chaosConfig struct {
	seed     uint64
	duration time.Duration
	settle   time.Duration
}

func chaosConfigFromEnv(t *testing.T) chaosConfig {
	t.Helper()
	// `make test` sets TMC_CHAOS_SEED (the Makefile's CHAOS_TEST_SEED), `make chaos` sets
	// TMC_CHAOS; a bare `go test` skips it.
	if os.Getenv("TMC_CHAOS") == "" && os.Getenv("TMC_CHAOS_SEED") == "" && os.Getenv("TMC_CHAOS_DURATION") == "" {
		t.Skip("chaos convergence test: run it with `make chaos` (or TMC_CHAOS=1)")
	}
	cfg := chaosConfig{seed: rand.Uint64() % 1_000_000_000, duration: 90 * time.Second}
	if s := os.Getenv("TMC_CHAOS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "TMC_CHAOS_SEED")
		cfg.seed = seed
	}
	if s := os.Getenv("TMC_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "TMC_CHAOS_DURATION")
		cfg.duration = d
	}
	// Convergence after the last fault: restarts, backoffs and the namespace clean delay.
	cfg.settle = max(3*time.Minute, cfg.duration/5)
	return cfg
}

// TestChaosConvergence runs a random workload upstream while faults hit every part of
// the system (syncers killed, API servers restarted, the tunnel cut, stalled and
// slowed, a second syncer joining), then checks that once quiet the physical cluster
// holds exactly the transformed upstream objects, nothing else of ours, foreign objects
// untouched, no stuck finalizer and no duplicated Event. Reproduce a run with
// `make chaos SEED=<seed> DURATION=<duration>`.
func TestChaosConvergence(t *testing.T) {
	cfg := chaosConfigFromEnv(t)
	t.Logf("chaos seed %d, duration %s (reproduce: make chaos SEED=%d DURATION=%s)", cfg.seed, cfg.duration, cfg.seed, cfg.duration)
	ctx := context.Background()
	bin := syncerBinary(t)

	// Its own bed: it restarts API servers, which the shared one must not see.
	env, err := framework.Start(ctx)
	require.NoError(t, err, "start the chaos test bed")
	t.Cleanup(func() {
		env.Stop()
		if left := env.Leaked(); len(left) > 0 {
			t.Errorf("chaos bed processes left running: %s", strings.Join(left, ", "))
		}
	})
	for _, c := range []*framework.Cluster{env.KCP, env.Physical} {
		require.NoError(t, framework.ApplyCRD(ctx, c.Dynamic(t), widgetCRD(chaosWidgets.Group)))
	}
	var targets []identity.Target
	for _, name := range []string{"chaos-a", "chaos-b"} {
		st := createSyncTarget(t, env, name)
		targets = append(targets, identity.NewTarget("root", name, st.GetUID()))
	}
	// The syncers' logs stay for a post-mortem when the run fails (or TMC_TEST_KEEP_DIR).
	logDir, err := os.MkdirTemp("", "tmc-chaos-logs-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("TMC_TEST_KEEP_DIR") != "" {
			t.Logf("syncer logs kept in %s", logDir)
			return
		}
		_ = os.RemoveAll(logDir)
	})

	seeds := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))
	work := newChaosWorkload(rand.New(rand.NewPCG(seeds.Uint64(), seeds.Uint64())), env.KCP.Dynamic(t), targets)
	for range 4 {
		require.NoError(t, work.createNamespace(ctx, work.newNamespaceName()))
	}
	foreign := createForeignObjects(t, env, targets[0], work.namespaces[:2], work.names)

	// Syncer A talks upstream only through the tunnel, behind the fault proxy.
	ts := startTunnelServer(t, env, "")
	proxy, err := framework.StartFaultProxy(ts.addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.SetSlow(200*time.Millisecond, 32<<10)
	common := []string{
		"--to-kubeconfig=" + env.Physical.Kubeconfig,
		"--resources=deployments.apps,services," + chaosWidgets.Resource + "." + chaosWidgets.Group,
		"--downstream-namespace-clean-delay=5s",
		// For a post-mortem: why a namespace was kept (a 20-minute run once ended with one).
		"--vmodule=namespaces_reconcile=4",
		"--health-bind-address=", "--metrics-bind-address=",
	}
	argsOf := func(tg identity.Target, kubeconfig string, extra ...string) []string {
		return append(append([]string{"--from-kubeconfig=" + kubeconfig, "--sync-target-name=" + tg.Name, "--sync-target-uid=" + string(tg.UID)}, common...), extra...)
	}
	syncerA := startSupervisedSyncer(t, "syncer-a", bin, logDir, argsOf(targets[0], syncerIdentity(t, env, "chaos-a"), "--tunnel-url=http://"+proxy.Addr(), "--tunnel-insecure"))
	syncers := []*supervisedSyncer{syncerA}
	var syncersMu sync.Mutex
	faults := &chaosFaults{
		t: t, env: env, proxy: proxy, syncerA: syncerA,
		rnd:    rand.New(rand.NewPCG(seeds.Uint64(), seeds.Uint64())),
		counts: map[string]int{},
		startB: func() *supervisedSyncer {
			s := startSupervisedSyncer(t, "syncer-b", bin, logDir, argsOf(targets[1], env.KCP.Kubeconfig))
			syncersMu.Lock()
			syncers = append(syncers, s)
			syncersMu.Unlock()
			return s
		},
	}
	t.Cleanup(func() {
		if t.Failed() {
			syncersMu.Lock()
			defer syncersMu.Unlock()
			for _, s := range syncers {
				t.Logf("last lines of %s (before its goroutine dump):\n%s", s.logPath, s.logTail(40))
				s.dumpGoroutines()
			}
		}
	})

	start := time.Now()
	chaosCtx, stop := context.WithTimeout(ctx, cfg.duration)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { work.run(chaosCtx) })
	wg.Go(func() { faults.run(chaosCtx, start) })
	wg.Wait()
	chaosEnd := time.Now()

	checker := newChaosChecker(env.KCP.Dynamic(t), env.Physical.Dynamic(t), targets, foreign)
	var violations []string
	converged := false
	deadline := time.Now().Add(cfg.settle)
	for !converged && time.Now().Before(deadline) {
		sleepCtx(ctx, 5*time.Second)
		checkCtx, cancel := context.WithTimeout(ctx, time.Minute)
		violations = checker.run(checkCtx)
		cancel()
		converged = len(violations) == 0
	}
	settled := time.Since(chaosEnd)
	if converged {
		// Stable, not a passing moment: the same checks a little later.
		sleepCtx(ctx, 10*time.Second)
		violations = checker.run(ctx)
	}

	t.Log(chaosSummary(cfg, work, faults, syncers, checker, violations, chaosEnd.Sub(start), settled, converged))
	if len(violations) > 0 {
		t.Fatalf("chaos seed %d: %d violations:\n  %s", cfg.seed, len(violations), strings.Join(violations, "\n  "))
	}
}

// createForeignObjects puts, before any syncer runs, objects of someone else with the
// names the workload will use into the downstream namespaces of target for upstream
// namespaces nss. The namespaces themselves are pre-created with the right locator but
// without our label: the syncer uses them and must never delete them.
func createForeignObjects(t *testing.T, env *framework.Environment, target identity.Target, nss []string, names int) []foreignObject {
	t.Helper()
	ctx := context.Background()
	down := env.Physical.Dynamic(t)
	var out []foreignObject
	for _, ns := range nss {
		loc := transformContext(target).Locator(&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"namespace": ns}}})
		nsObj, err := namespace.DownstreamNamespace(loc, target.Key)
		require.NoError(t, err)
		nsObj.SetLabels(map[string]string{"owner": "someone-else"})
		_, err = down.Resource(namespacesResource).Create(ctx, nsObj, metav1.CreateOptions{})
		require.NoError(t, err)
		for _, gvr := range chaosGVRs {
			if gvr.Resource == "deployments" {
				continue
			}
			for i := range min(2, names) {
				obj := chaosManifest(chaosObject{ns: nsObj.GetName(), gvr: gvr, name: fmt.Sprintf("o-%02d", i)}, 999)
				obj.SetLabels(map[string]string{"owner": "someone-else"})
				created, err := down.Resource(gvr).Namespace(nsObj.GetName()).Create(ctx, obj, metav1.CreateOptions{})
				require.NoError(t, err)
				out = append(out, foreignObject{gvr: gvr, ns: created.GetNamespace(), name: created.GetName(),
					resourceVersion: created.GetResourceVersion(), uid: string(created.GetUID())})
			}
		}
	}
	return out
}

func chaosSummary(cfg chaosConfig, w *chaosWorkload, f *chaosFaults, syncers []*supervisedSyncer, c *chaosChecker,
	violations []string, chaos, settled time.Duration, converged bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos summary: seed %d, chaos %s, ", cfg.seed, chaos.Round(time.Second))
	if converged {
		fmt.Fprintf(&b, "converged %s after the chaos\n", settled.Round(time.Second))
	} else {
		fmt.Fprintf(&b, "NOT converged within %s\n", settled.Round(time.Second))
	}
	writeCounts := func(title string, m map[string]int) {
		keys := make([]string, 0, len(m))
		total := 0
		for k, v := range m {
			keys = append(keys, k)
			total += v
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "  %s: %d\n", title, total)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %-34s %d\n", k, m[k])
		}
	}
	writeCounts("operations", w.counts)
	writeCounts("operations refused (API server down)", w.errors)
	writeCounts("faults", f.counts)
	for _, l := range f.log {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	for _, e := range f.failures {
		fmt.Fprintf(&b, "  fault error: %s\n", e)
	}
	for _, s := range syncers {
		starts, exits := s.stats()
		fmt.Fprintf(&b, "  %s: %d starts, exits of its own: %v\n", s.name, starts, exits)
	}
	fmt.Fprintf(&b, "  checks: %d, violations: %d", c.checks, len(violations))
	return b.String()
}
