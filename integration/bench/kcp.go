package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

var errExitedCleanly = errors.New("exit status 0")

// kcpFlavour is one syncer of the real-kcp rows: ours or kcp's own.
type kcpFlavour struct {
	name   string // SyncTarget and workspace names derive from it
	label  string // for the table
	image  string // the plugin's --syncer-image (the bed maps its command to bin)
	bin    string
	extra  []string // arguments added to the plugin's
	budget string
	// metricsAddr is where the syncer serves /metrics and pprof ("" for none): the
	// harness saves a CPU profile and a goroutine dump of its initial sync there.
	metricsAddr string
}

// kcpResult is what one flavour measured.
type kcpResult struct {
	InitialSync  time.Duration `json:"initial_sync"`
	Latency      Percentiles   `json:"latency"`
	Missing      int           `json:"missing"`
	PeakSync     procStat      `json:"after_initial_sync"`
	Idle         procStat      `json:"idle"`
	Budget       string        `json:"budget"`
	DownstreamNS string        `json:"downstream_namespace"`
	// CPUPerObject is the CPU per object of each process during K1.
	CPUPerObject string `json:"cpu_per_object"`
	// Downstream are the physical cluster's API requests during K1 (WATCH excluded).
	Downstream requestCounts `json:"downstream_requests"`
}

// kcpRows runs K1 (initial sync), K2 (spec latency) and K5 (memory) on a real kcp
// v0.11.0 (upstream = kcp's syncer virtual workspace) next to a physical
// kube-apiserver: first with kcp's own syncer, then with ours, each with a fresh
// location workspace, SyncTarget (kcp's plugin) and placed user workspace holding the
// same ConfigMaps, and the same --qps/--burst (plugin flags).
func (r *runner) kcpRows(ctx context.Context) error {
	r.logf("   starting the kcp bed (kcp %s and a physical cluster)", framework.KCPVersion)
	start := time.Now()
	env, err := framework.StartKCPEnvironment(ctx)
	if err != nil {
		return fmt.Errorf("kcp bed: %w", err)
	}
	defer func() {
		env.Stop()
		if left := env.Leaked(); len(left) > 0 {
			r.logf("   kcp bed processes left running: %s", strings.Join(left, ", "))
		}
	}()
	r.logf("   kcp bed up in %s", time.Since(start).Round(time.Millisecond))
	if err := env.EnsureKubernetesEndpoints(ctx); err != nil {
		return err
	}
	metricsAddr, err := framework.FreeAddr()
	if err != nil {
		return err
	}
	plugin := fmt.Sprintf("--qps %d --burst %d (plugin flags, in the Deployment's arguments)", r.cfg.QPS, r.cfg.Burst)
	flavours := []kcpFlavour{
		{name: "kcps", label: "kcp's syncer " + framework.KCPVersion, image: "ghcr.io/kcp-dev/kcp/syncer:" + framework.KCPVersion, bin: env.Bins.Syncer,
			budget: plugin + "; 2 workers per controller (fixed in kcp's syncer, no flag)"},
		{name: "ours", label: "TMC Syncer", image: "ghcr.io/tmc-syncer/syncer:bench", bin: r.cfg.SyncerBin, metricsAddr: metricsAddr,
			extra: []string{"--health-bind-address=", "--metrics-bind-address=" + metricsAddr, "--profiling",
				fmt.Sprintf("--workers=%d", r.cfg.Workers)},
			budget: plugin + fmt.Sprintf("; --workers %d", r.cfg.Workers)},
	}
	res := map[string]kcpResult{}
	for _, f := range flavours {
		r.logf("   %s", f.label)
		got, err := r.kcpRun(ctx, env, f)
		if err != nil {
			return fmt.Errorf("%s: %w", f.label, err)
		}
		res[f.name] = got
	}
	ours, theirs := res["ours"], res["kcps"]
	n := r.cfg.KCPObjects
	speedup := ratio(theirs.InitialSync.Seconds(), ours.InitialSync.Seconds())
	budgets := fmt.Sprintf("budget: ours %s; kcp's %s", ours.Budget, theirs.Budget)
	r.add(Row{
		ID: "K1", What: fmt.Sprintf("real kcp: initial sync of %d ConfigMaps (1 KiB) through kcp's syncer virtual workspace, from syncer start", n),
		Measured: "ours " + ours.InitialSync.Round(time.Millisecond).String(), Reference: "kcp's syncer " + theirs.InitialSync.Round(time.Millisecond).String(),
		Ratio: fmt.Sprintf("kcp's time / ours: %.2f×", speedup), Goal: "ours ≥ 2× faster", Met: met(speedup >= 2),
		Notes: budgets + ". Same objects for both: ConfigMaps in one namespace of a workspace placed on the flavour's own SyncTarget by a Placement " +
			"(kcp's syncer cannot make kcp's compute export Accepted against a v1.37 cluster, so `bind compute` never schedules for it); the plugin ran with " +
			"--resources configmaps --apiexports= so that both sync exactly ConfigMaps. Each syncer is started once until its SyncTarget is Ready and the " +
			"namespace scheduled, stopped (the harness heartbeats meanwhile), and started again once kcp has labelled every object; kcp's syncer runs first. " +
			"CPU per object during K1 (the machine's 2 cores are the limit): ours: " + ours.CPUPerObject + "; kcp's syncer: " + theirs.CPUPerObject +
			". Physical cluster's requests during K1: ours " + ours.Downstream.top(5) + "; kcp's syncer " + theirs.Downstream.top(5),
	}, map[string]any{"ours": ours, "kcps": theirs, "objects": n})
	r.add(Row{
		ID: "K2", What: fmt.Sprintf("real kcp: spec latency, workspace write → downstream watch, %d updates/s over %d objects for %s", r.cfg.P2Rate, min(r.cfg.P2Objects, n), r.cfg.KCPDuration),
		Measured:  fmt.Sprintf("ours p50 %.1f ms, p99 %.1f ms; %d of %d never seen", ours.Latency.P50, ours.Latency.P99, ours.Missing, ours.Latency.N+ours.Missing),
		Reference: fmt.Sprintf("kcp's syncer p50 %.1f ms, p99 %.1f ms; %d of %d never seen", theirs.Latency.P50, theirs.Latency.P99, theirs.Missing, theirs.Latency.N+theirs.Missing),
		Ratio:     fmt.Sprintf("ours/kcp's p50 %.2f×, p99 %.2f×", ratio(ours.Latency.P50, theirs.Latency.P50), ratio(ours.Latency.P99, theirs.Latency.P99)),
		Goal:      "ours lower p99", Met: met(ours.Latency.N > 0 && ours.Missing == 0 && ours.Latency.P99 < theirs.Latency.P99),
	}, nil)
	r.add(Row{
		ID: "K5", What: fmt.Sprintf("real kcp: syncer RSS with %d synced objects, idle after K2, and the peak (VmHWM) of the run", n),
		Measured:  fmt.Sprintf("ours idle %.0f MiB, peak %.0f MiB", ours.Idle.RSSMiB, ours.Idle.HWMMiB),
		Reference: fmt.Sprintf("kcp's syncer idle %.0f MiB, peak %.0f MiB", theirs.Idle.RSSMiB, theirs.Idle.HWMMiB),
		Ratio:     fmt.Sprintf("ours/kcp's idle %.2f×, peak %.2f×", ratio(ours.Idle.RSSMiB, theirs.Idle.RSSMiB), ratio(ours.Idle.HWMMiB, theirs.Idle.HWMMiB)),
		Goal:      "— (comparison)", Met: "—",
	}, nil)
	return nil
}

// kcpRun measures one flavour: K1, K2 and K5's figures.
func (r *runner) kcpRun(ctx context.Context, env *framework.KCPEnvironment, f kcpFlavour) (kcpResult, error) {
	res := kcpResult{Budget: f.budget}
	// --apiexports= leaves kcp's compute export (root:compute:kubernetes) out: the
	// SyncTarget supports the plugin's local export of the --resources alone, so
	// both syncers sync exactly ConfigMaps.
	st, err := env.InstallSyncTarget(ctx, "bench-"+f.name, f.image, "--resources", "configmaps", "--apiexports=",
		fmt.Sprintf("--qps=%d", r.cfg.QPS), fmt.Sprintf("--burst=%d", r.cfg.Burst))
	if err != nil {
		return res, err
	}
	dep := st.Deployment.DeepCopy()
	ctr := &dep.Spec.Template.Spec.Containers[0]
	ctr.Args = append(ctr.Args, f.extra...)
	commands := map[string]string{ctr.Command[0]: f.bin}
	run := 0
	startSyncer := func() (*framework.SyncerProcess, error) {
		run++
		dir := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("kcp-%s-%d", f.name, run))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		return framework.StartDeployment(ctx, env.Physical, dep, commands, dir)
	}
	stop := func(p *framework.SyncerProcess) {
		p.Stop()
		log := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("kcp-%s-%d.log", f.name, run))
		_ = os.WriteFile(log, []byte(p.Output.String()), 0o600)
	}
	alive := func(p *framework.SyncerProcess) error {
		if done, err := p.Exited(); done {
			if err == nil {
				err = errExitedCleanly
			}
			return fmt.Errorf("%s exited: %w; output:\n%s", f.label, err, lastLines(p.Output.String(), 20))
		}
		return nil
	}
	stClient := dynamic.NewForConfigOrDie(st.Location.Config).Resource(workloadv1alpha1.SyncTargetsResource)

	// Set-up run: the SyncTarget becomes Ready, the user's namespace is scheduled.
	p, err := startSyncer()
	if err != nil {
		return res, err
	}
	err = pollUntil(ctx, 3*time.Minute, alive, p, "the SyncTarget is Ready", func() bool {
		got, err := stClient.Get(ctx, st.Name, metav1.GetOptions{})
		return err == nil && readyCondition(got)
	})
	if err != nil {
		stop(p)
		return res, err
	}
	ws, err := env.PlacedWorkspace(ctx, "bench-"+f.name, st)
	if err != nil {
		stop(p)
		return res, err
	}
	unlimited := rest.CopyConfig(ws.Config)
	unlimited.QPS, unlimited.Burst = -1, 0
	wsKube, err := kubernetes.NewForConfig(unlimited)
	if err != nil {
		stop(p)
		return res, err
	}
	const ns = "bench"
	stateLabel := identity.StateLabel(st.Key)
	err = pollUntil(ctx, 2*time.Minute, alive, p, "namespace "+ns+" is scheduled on the SyncTarget", func() bool {
		got, err := wsKube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, _ = wsKube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			return false
		}
		return err == nil && got.Labels[stateLabel] == string(identity.ResourceStateSync)
	})
	stop(p)
	if err != nil {
		return res, err
	}

	// The objects, created while no syncer runs; the harness heartbeats for the syncer
	// meanwhile so that kcp keeps the SyncTarget Ready.
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	var hb sync.WaitGroup
	hb.Go(func() { heartbeat(hbCtx, stClient, st.Name) })
	defer func() { stopHeartbeat(); hb.Wait() }()
	n := r.cfg.KCPObjects
	r.logf("   creating %d ConfigMaps in %s, namespace %s", n, ws.Path, ns)
	err = parallel(ctx, n, 16, func(ctx context.Context, i int) error {
		_, err := wsKube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%05d", i)},
			Data:       map[string]string{"payload": r.payload, "seq": "0"},
		}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return res, err
	}
	err = pollUntil(ctx, 5*time.Minute, nil, nil, "kcp labels every ConfigMap for the SyncTarget", func() bool {
		l, err := wsKube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: stateLabel + "=" + string(identity.ResourceStateSync)})
		if err != nil {
			return false
		}
		c := 0
		for _, cm := range l.Items {
			if strings.HasPrefix(cm.Name, "cm-") {
				c++
			}
		}
		return c >= n
	})
	if err != nil {
		return res, err
	}

	// K1: from the syncer's start until every object is seen downstream.
	physDyn, err := dynamic.NewForConfig(env.Physical.Config)
	if err != nil {
		return res, err
	}
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	seen := &kcpSeen{uids: map[types.UID]bool{}}
	selector := identity.DownstreamClusterLabel + "=" + st.Key
	if err := watchAll(wctx, physDyn, configMapsGVR, "", selector, seen.observe); err != nil {
		return res, err
	}
	stopHeartbeat()
	hb.Wait()
	pids := map[string]int{"harness": os.Getpid()}
	maps.Copy(pids, env.KCP.Processes())
	for name, pid := range env.Physical.Processes() {
		pids["downstream "+name] = pid
	}
	physKube, err := kubernetes.NewForConfig(env.Physical.Config)
	if err != nil {
		return res, err
	}
	downBefore, err := scrapeRequests(ctx, physKube)
	if err != nil {
		return res, err
	}
	cpuBefore := readCPU(pids)
	began := time.Now()
	p, err = startSyncer()
	if err != nil {
		return res, err
	}
	defer func() { stop(p) }()
	if f.metricsAddr != "" {
		go r.profileAt(ctx, f.metricsAddr, "k1-"+f.name)
	}
	err = pollUntil(ctx, 4*time.Minute+59*time.Second, alive, p, "K1: every ConfigMap downstream", func() bool { return seen.count() >= n })
	if err != nil {
		return res, err
	}
	res.InitialSync = time.Since(began)
	res.DownstreamNS = seen.namespace()
	pid := p.Cmd.Process.Pid
	pids["syncer"] = pid
	res.CPUPerObject = readCPU(pids).perObject(cpuBefore, n)
	downAfter, err := scrapeRequests(ctx, physKube)
	if err != nil {
		return res, err
	}
	res.Downstream = downAfter.delta(downBefore)
	r.logf("   K1 %s CPU per object: %s; downstream requests: %s", f.label, res.CPUPerObject, res.Downstream.top(5))
	if res.PeakSync, err = readProc(pid); err != nil {
		return res, err
	}
	r.logf("   K1 %s: %s", f.label, res.InitialSync.Round(time.Millisecond))

	// K2: workspace writes at P2's rate, seen by a downstream watch.
	objects := min(r.cfg.P2Objects, n)
	lat := newLatencies()
	if err := watchAll(wctx, physDyn, configMapsGVR, res.DownstreamNS, selector, lat.observe); err != nil {
		return res, err
	}
	s, missing, err := r.specUpdates(ctx, wsKube, func(i int) (string, string) { return ns, fmt.Sprintf("cm-%05d", i) }, objects, r.cfg.P2Rate, r.cfg.KCPDuration, lat)
	if err != nil {
		return res, err
	}
	if err := alive(p); err != nil {
		return res, err
	}
	res.Latency, res.Missing = percentiles(s), missing
	r.logf("   K2 %s: p50 %.1f ms, p99 %.1f ms, %d never seen", f.label, res.Latency.P50, res.Latency.P99, missing)

	// K5: memory once idle.
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(r.cfg.KCPSettle):
	}
	if res.Idle, err = readProc(pid); err != nil {
		return res, err
	}
	return res, alive(p)
}

// profileAt saves a CPU profile of the syncer serving pprof at addr, and a goroutine
// dump taken meanwhile, both under profiles/ in the work directory.
func (r *runner) profileAt(ctx context.Context, addr, name string) {
	dir := filepath.Join(r.cfg.WorkDir, "profiles")
	go func() {
		time.Sleep(time.Second + time.Duration(r.cfg.CPUProfileSecs)*time.Second/2)
		if body, err := framework.HTTPGet(ctx, "http://"+addr+"/debug/pprof/goroutine?debug=1"); err == nil {
			_ = os.WriteFile(filepath.Join(dir, name+".goroutines.txt"), []byte(body), 0o600)
		}
	}()
	time.Sleep(time.Second) // the listener binds early, but give the process a moment
	body, err := framework.HTTPGet(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, r.cfg.CPUProfileSecs))
	if err != nil {
		r.logf("   profile %s: %v", name, err)
		return
	}
	_ = os.WriteFile(filepath.Join(dir, name+".cpu.pprof"), []byte(body), 0o600)
}

// kcpSeen counts the distinct bench ConfigMaps (cm-*) a downstream watch saw added,
// and remembers their namespace.
type kcpSeen struct {
	mu   sync.Mutex
	uids map[types.UID]bool
	ns   string
}

func (s *kcpSeen) observe(t watch.EventType, u *unstructured.Unstructured) {
	if t != watch.Added || !strings.HasPrefix(u.GetName(), "cm-") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uids[u.GetUID()] = true
	s.ns = u.GetNamespace()
}

func (s *kcpSeen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.uids)
}

func (s *kcpSeen) namespace() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// heartbeat sets the SyncTarget's lastSyncerHeartbeatTime every 10 s until ctx ends,
// standing in for a syncer that is stopped on purpose.
func heartbeat(ctx context.Context, c dynamic.ResourceInterface, name string) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		patch := fmt.Sprintf(`{"status":{"lastSyncerHeartbeatTime":%q}}`, time.Now().UTC().Format(time.RFC3339))
		_, _ = c.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func readyCondition(obj *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Ready" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// pollUntil polls cond every 100 ms (every second for timeouts of 5 minutes or more:
// long waits list many objects) for up to timeout; alive(p), when given, ends it
// early with the process's exit.
func pollUntil(ctx context.Context, timeout time.Duration, alive func(*framework.SyncerProcess) error, p *framework.SyncerProcess, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	every := 100 * time.Millisecond
	if timeout >= 5*time.Minute {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		if alive != nil {
			if err := alive(p); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if p != nil {
				return fmt.Errorf("%s: not within %s; output:\n%s", what, timeout, lastLines(p.Output.String(), 15))
			}
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-tick.C:
		}
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
