package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// Config sizes the run. Quick is CI's smoke run; Full is the sizes.
type Config struct {
	Mode      string `json:"mode"`
	SyncerBin string `json:"-"`
	// WorkDir receives the syncer logs and pprof profiles.
	WorkDir string `json:"-"`
	// Root is the repository root (for P6, the tunnel module's benchmark).
	Root string `json:"-"`

	// The syncer's client budget (--qps, --burst per cluster, --workers), given to
	// the P1 reference too.
	QPS     int `json:"qps"`
	Burst   int `json:"burst"`
	Workers int `json:"workers"`

	P1Objects      int           `json:"p1_objects"`
	P2Objects      int           `json:"p2_objects"`
	P2Rate         int           `json:"p2_updates_per_second"`
	P2Duration     time.Duration `json:"p2_duration"`
	RefDuration    time.Duration `json:"reference_duration"`
	StatusUpdates  int           `json:"p3_updates"`
	DriftEdits     int           `json:"p4_edits"`
	IdleObjects    int           `json:"p5_objects"`
	IdleWindow     time.Duration `json:"p10_window"`
	Reconnects     int           `json:"p7_reconnects"`
	TunnelBenchN   int           `json:"p6_iterations"`
	Sessions       int           `json:"p8_sessions"`
	P9Objects      int           `json:"p9_objects"`
	P9Duration     time.Duration `json:"p9_duration"`
	SessionHold    time.Duration `json:"p8_hold"`
	CPUProfileSecs int           `json:"cpu_profile_seconds"`
	// KCPObjects, KCPDuration and KCPSettle size the real-kcp rows K1/K2/K5 (K2 runs
	// at P2Rate over min(P2Objects, KCPObjects) objects; K5 reads memory KCPSettle
	// after K2).
	KCPObjects  int           `json:"k1_objects"`
	KCPDuration time.Duration `json:"k2_duration"`
	KCPSettle   time.Duration `json:"k5_settle"`
	// SkipKCP leaves out the real-kcp rows, with the reason printed.
	SkipKCP string `json:"skip_kcp,omitempty"`
	// SkipP6 leaves out the tunnel module's own benchmarks (quick mode: they
	// compile a test binary and stream 512 MiB, and `make test` covers them).
	SkipP6 bool `json:"skip_p6"`
	// Only runs just the scenarios whose step name starts with one of these (e.g. "P8");
	// empty runs all.
	Only []string `json:"only,omitempty"`
}

// Quick is `make bench-quick`: seconds per scenario, for CI.
func Quick() Config {
	return Config{
		Mode: "quick", QPS: 500, Burst: 1000, Workers: 8,
		P1Objects: 200, P2Objects: 50, P2Rate: 20, P2Duration: 5 * time.Second, RefDuration: 3 * time.Second,
		StatusUpdates: 30, DriftEdits: 20, IdleObjects: 300, IdleWindow: 3 * time.Second,
		Reconnects: 1, TunnelBenchN: 1, Sessions: 50, SessionHold: 6 * time.Second, P9Objects: 200, P9Duration: 3 * time.Second,
		CPUProfileSecs: 2, SkipP6: true,
		KCPObjects: 30, KCPDuration: 3 * time.Second, KCPSettle: 2 * time.Second,
	}
}

// Full is `make bench`: the sizes, except P9's initial sync through the tunnel
// (2,000 objects instead of 5,000, compared with P1's time scaled to 2,000) so that a
// run stays within about 20 minutes on the shared 2-core machine.
func Full() Config {
	return Config{
		Mode: "full", QPS: 500, Burst: 1000, Workers: 8,
		P1Objects: 5000, P2Objects: 500, P2Rate: 50, P2Duration: 60 * time.Second, RefDuration: 20 * time.Second,
		StatusUpdates: 300, DriftEdits: 200, IdleObjects: 10000, IdleWindow: 30 * time.Second,
		Reconnects: 5, TunnelBenchN: 3, Sessions: 1000, SessionHold: 12 * time.Second, P9Objects: 2000, P9Duration: 20 * time.Second,
		CPUProfileSecs: 10,
		KCPObjects:     2000, KCPDuration: 20 * time.Second, KCPSettle: 10 * time.Second,
	}
}

// Row is one line of the results table.
type Row struct {
	ID        string `json:"id"`
	What      string `json:"what"`
	Measured  string `json:"measured"`
	Reference string `json:"reference"`
	Ratio     string `json:"ratio"`
	Goal      string `json:"goal"`
	Met       string `json:"met"`
	Notes     string `json:"notes,omitempty"`
}

// Report is a whole run.
type Report struct {
	Started  time.Time      `json:"started"`
	Duration string         `json:"duration"`
	Machine  Machine        `json:"machine"`
	Config   Config         `json:"config"`
	Rows     []Row          `json:"rows"`
	Skipped  []string       `json:"skipped,omitempty"`
	Raw      map[string]any `json:"raw"`
}

var (
	configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	widgetsGVR    = schema.GroupVersionResource{Group: "test.tmc.dev", Version: "v1", Resource: "widgets"}
)

const payloadSize = 1024

type runner struct {
	cfg              Config
	env              *framework.Environment
	log              io.Writer
	upKube, downKube kubernetes.Interface
	upDyn, downDyn   dynamic.Interface
	rep              *Report
	payload          string
	mu               sync.Mutex
	// p1Time and p2Result are P1 and P2 without tunnel, P9's reference.
	p1Time time.Duration
	// minimalCPU is the CPU per object of each process during the minimal-work reference.
	minimalCPU string
	p2Result   Percentiles
}

// Run runs every scenario on env and returns the report; a scenario's failure is
// an error (a broken harness or a crashed syncer), never a missed goal.
func Run(ctx context.Context, env *framework.Environment, cfg Config, log io.Writer) (*Report, error) {
	ctx, cancel := context.WithCancel(ctx) // ends the harness's watches before the bed stops
	defer cancel()
	r := &runner{cfg: cfg, env: env, log: log, payload: strings.Repeat("x", payloadSize),
		rep: &Report{Started: time.Now().UTC(), Machine: describeMachine(), Config: cfg, Raw: map[string]any{}}}
	var err error
	unlimited := func(c *rest.Config) *rest.Config {
		c = rest.CopyConfig(c)
		c.QPS, c.Burst = -1, 0
		return c
	}
	if r.upKube, err = kubernetes.NewForConfig(unlimited(env.KCP.Config)); err != nil {
		return nil, err
	}
	if r.downKube, err = kubernetes.NewForConfig(unlimited(env.Physical.Config)); err != nil {
		return nil, err
	}
	if r.upDyn, err = dynamic.NewForConfig(unlimited(env.KCP.Config)); err != nil {
		return nil, err
	}
	if r.downDyn, err = dynamic.NewForConfig(unlimited(env.Physical.Config)); err != nil {
		return nil, err
	}
	for _, c := range []dynamic.Interface{r.upDyn, r.downDyn} {
		if err := framework.ApplyCRD(ctx, c, widgetCRD()); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.WorkDir, "profiles"), 0o755); err != nil {
		return nil, err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"P6 tunnel throughput and latency", r.p6},
		{"P1/P11/P2/P3/P4/P10/P5 direct", r.direct},
		{"P9/P7 through the tunnel", r.tunnelled},
		{"P8 tunnel sessions", r.p8},
		{"K1/K2/K5 real kcp: ours vs kcp's syncer", r.kcpRows},
	}
	for _, s := range steps {
		if (cfg.SkipP6 && strings.HasPrefix(s.name, "P6")) || !selected(cfg.Only, s.name) {
			r.rep.Skipped = append(r.rep.Skipped, s.name)
			continue
		}
		if cfg.SkipKCP != "" && strings.HasPrefix(s.name, "K") {
			r.logf("== %s: skipped: %s", s.name, cfg.SkipKCP)
			r.rep.Skipped = append(r.rep.Skipped, s.name+" ("+cfg.SkipKCP+")")
			continue
		}
		r.logf("== %s", s.name)
		start := time.Now()
		if err := s.fn(ctx); err != nil {
			return r.rep, fmt.Errorf("%s: %w", s.name, err)
		}
		r.logf("   %s done in %s", s.name, time.Since(start).Round(time.Millisecond))
	}
	r.rep.Duration = time.Since(r.rep.Started).Round(time.Second).String()
	r.rep.Machine.LoadAvgEnd = loadAvg()
	return r.rep, nil
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

func (r *runner) add(row Row, raw any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Rows = append(r.rep.Rows, row)
	if raw != nil {
		r.rep.Raw[row.ID+" "+row.What] = raw
	}
	r.logf("   %s %s: %s (reference %s, %s) goal %s: %s", row.ID, row.What, row.Measured, row.Reference, row.Ratio, row.Goal, row.Met)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// target is a SyncTarget of the run.
type target struct {
	id  identity.Target
	uid string
}

func (r *runner) newTarget(ctx context.Context, name string) (target, error) {
	st, err := r.upDyn.Resource(workloadv1alpha1.SyncTargetsResource).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": map[string]any{"name": name},
	}}, metav1.CreateOptions{})
	if err != nil {
		return target{}, fmt.Errorf("create SyncTarget %s: %w", name, err)
	}
	return target{id: identity.NewTarget("root", name, st.GetUID()), uid: string(st.GetUID())}, nil
}

func (t target) downNS(upNS string) string {
	name, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: t.id.Name, UID: t.uid},
		Cluster:    "root", Namespace: upNS,
	})
	if err != nil {
		panic(err) // a Locator of plain strings always marshals
	}
	return name
}

func (r *runner) syncerArgs(t target, kubeconfig string, extra ...string) []string {
	if kubeconfig == "" {
		kubeconfig = r.env.KCP.Kubeconfig
	}
	return append([]string{
		"--from-kubeconfig=" + kubeconfig, "--to-kubeconfig=" + r.env.Physical.Kubeconfig,
		"--sync-target-name=" + t.id.Name, "--sync-target-uid=" + t.uid,
		"--resources=widgets.test.tmc.dev",
		fmt.Sprintf("--qps=%d", r.cfg.QPS), fmt.Sprintf("--burst=%d", r.cfg.Burst), fmt.Sprintf("--workers=%d", r.cfg.Workers),
		"--downstream-namespace-clean-delay=1h",
	}, extra...)
}

func (r *runner) createNamespace(ctx context.Context, kube kubernetes.Interface, name string) error {
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// objectSet is n ConfigMaps of 1 KiB spread over namespaces of at most 1,000.
type objectSet struct {
	namespaces []string
	perNS      int
	n          int
}

func (s objectSet) at(i int) (ns, name string) {
	return s.namespaces[i/s.perNS], fmt.Sprintf("cm-%05d", i)
}

// createUpstream creates n ConfigMaps labelled for t in fresh upstream namespaces prefix-0, prefix-1, …
func (r *runner) createUpstream(ctx context.Context, t target, prefix string, n int) (objectSet, error) {
	s := objectSet{perNS: 1000, n: n}
	for i := 0; i*s.perNS < n; i++ {
		ns := fmt.Sprintf("%s-%d", prefix, i)
		if err := r.createNamespace(ctx, r.upKube, ns); err != nil {
			return s, err
		}
		s.namespaces = append(s.namespaces, ns)
	}
	err := parallel(ctx, n, 16, func(ctx context.Context, i int) error {
		ns, name := s.at(i)
		_, err := r.upKube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{t.id.StateLabel(): "Sync"}},
			Data:       map[string]string{"payload": r.payload, "seq": "0"},
		}, metav1.CreateOptions{})
		return err
	})
	return s, err
}

// watcher follows one resource in one cluster (all namespaces or one) with a
// label selector, across watch timeouts, and hands every event to fn.
func watchAll(ctx context.Context, c dynamic.Interface, gvr schema.GroupVersionResource, ns, selector string, fn func(watch.EventType, *unstructured.Unstructured)) error {
	res := c.Resource(gvr).Namespace(ns)
	list, err := res.List(ctx, metav1.ListOptions{LabelSelector: selector, Limit: 1})
	if err != nil {
		return err
	}
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.LabelSelector = selector
		return res.Watch(ctx, o)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.GetResourceVersion(), lw)
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if u, isU := ev.Object.(*unstructured.Unstructured); isU {
					fn(ev.Type, u)
				}
			}
		}
	}()
	return nil
}

// counter counts distinct objects seen ADDED by a watch.
type counter struct {
	mu   sync.Mutex
	seen map[types.UID]bool
	n    atomic.Int64
	// first and last are when the first and the latest new object were seen.
	first, last time.Time
}

// times returns when the first and the latest new object were seen.
func (c *counter) times() (first, last time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first, c.last
}

func (c *counter) observe(t watch.EventType, u *unstructured.Unstructured) {
	if t != watch.Added {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.seen[u.GetUID()] {
		c.seen[u.GetUID()] = true
		now := time.Now()
		if c.first.IsZero() {
			c.first = now
		}
		c.last = now
		c.n.Add(1)
	}
}

// waitFor polls cond every 50 ms until it holds, the syncer exits, or timeout.
func waitFor(ctx context.Context, timeout time.Duration, p *syncerProcess, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if p != nil {
			if err := p.exited(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.Canceled {
				return fmt.Errorf("%s: %w", what, ctx.Err())
			}
			if p != nil {
				return fmt.Errorf("%s: not within %s; syncer log %s:\n%s", what, timeout, p.log, tail(p.log, 15))
			}
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-tick.C:
		}
	}
	return nil
}

func widgetCRD() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.test.tmc.dev"},
		"spec": map[string]any{
			"group": "test.tmc.dev", "scope": "Namespaced",
			"names": map[string]any{"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
				"subresources": map[string]any{"status": map[string]any{}},
			}},
		},
	}}
}

// selected reports whether the step name is among only (prefixes); empty selects all.
func selected(only []string, name string) bool {
	if len(only) == 0 {
		return true
	}
	for _, o := range only {
		if o != "" && strings.HasPrefix(name, o) {
			return true
		}
	}
	return false
}
