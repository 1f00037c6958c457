package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

const refNS = "bench-reference"

// direct runs the scenarios on a syncer without tunnel: P1 and P11 (initial sync),
// P2 (spec latency), P3 (status latency), P4 (drift revert), P10 (idle requests)
// and P5 (memory and CPU idle and during a full resync).
func (r *runner) direct(ctx context.Context) error {
	t, err := r.newTarget(ctx, "bench-direct")
	if err != nil {
		return err
	}
	n := r.cfg.P1Objects
	r.logf("   creating %d ConfigMaps upstream", n)
	objs, err := r.createUpstream(ctx, t, "p1", n)
	if err != nil {
		return err
	}
	const widgets = 10
	for i := range widgets {
		w := widget(fmt.Sprintf("w-%d", i), map[string]string{t.id.StateLabel(): "Sync"})
		if _, err := r.upDyn.Resource(widgetsGVR).Namespace(objs.namespaces[0]).Create(ctx, w, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if err := r.createNamespace(ctx, r.downKube, refNS); err != nil {
		return err
	}
	refTime, err := r.applyReference(ctx, n)
	if err != nil {
		return err
	}
	minTime, err := r.minimalWorkReference(ctx, t, n)
	if err != nil {
		return err
	}

	cnt := &counter{seen: map[types.UID]bool{}}
	if err := watchAll(ctx, r.downDyn, configMapsGVR, "", t.id.DownstreamSelector().String(), cnt.observe); err != nil {
		return err
	}
	// A physical cluster serves its CRDs before a syncer starts; this bed's widgets CRD was
	// made seconds ago and kube-apiserver builds a CRD's watch cache at its first request,
	// answering a labelled LIST 429 (Retry-After: 1 s) until it is ready (KEP-4568). One
	// labelled LIST (retried by client-go) warms it, so P1 does not count that second.
	if _, err := r.downDyn.Resource(widgetsGVR).List(ctx, metav1.ListOptions{LabelSelector: t.id.DownstreamSelector().String()}); err != nil {
		return fmt.Errorf("warm the downstream widgets cache: %w", err)
	}
	upBefore, downBefore, err := r.scrapeBoth(ctx)
	if err != nil {
		return err
	}
	cpuBefore := readCPU(r.bedPids())
	start := time.Now()
	p, err := startSyncer(r.cfg.SyncerBin, r.cfg.WorkDir, "syncer-direct", r.syncerArgs(t, "")...)
	if err != nil {
		return err
	}
	defer func() { p.stop() }()
	go r.profile(ctx, p, "p1-initial-sync")
	if err := waitFor(ctx, 30*time.Minute, p, "P1: all ConfigMaps downstream", func() bool { return int(cnt.n.Load()) >= n }); err != nil {
		return err
	}
	// From the syncer's start to the last object seen (not to the poll that noticed it);
	// the first object seen tells the fixed start-up cost apart from the writes.
	firstSeen, lastSeen := cnt.times()
	syncTime, startup := lastSeen.Sub(start), firstSeen.Sub(start)
	r.logf("   P1 timeline: first object downstream after %s, last after %s", startup.Round(time.Millisecond), syncTime.Round(time.Millisecond))
	pids := r.bedPids()
	pids["syncer"] = p.cmd.Process.Pid
	syncerCPU := readCPU(pids).perObject(cpuBefore, n)
	r.logf("   P1 CPU per object: syncer run: %s; minimal work: %s", syncerCPU, r.minimalCPU)
	upAfter, downAfter, err := r.scrapeBoth(ctx)
	if err != nil {
		return err
	}
	rt, rtSSA := ratio(syncTime.Seconds(), minTime.Seconds()), ratio(syncTime.Seconds(), refTime.Seconds())
	r.p1Time = syncTime
	budget := fmt.Sprintf("--qps %d --burst %d (per cluster) and %d concurrent workers", r.cfg.QPS, r.cfg.Burst, r.cfg.Workers)
	r.add(Row{
		ID: "P1", What: fmt.Sprintf("initial sync of %d ConfigMaps (1 KiB), from syncer start", n),
		Measured:  syncTime.Round(time.Millisecond).String(),
		Reference: minTime.Round(time.Millisecond).String() + " (minimal work: per object the downstream apply and the upstream finalizer patch, concurrently, same budget)",
		Ratio:     fmt.Sprintf("%.2f×", rt), Goal: "≤ 1.10× minimal work", Met: met(rt <= 1.10),
		Notes: "budget: " + budget + " for the syncer and both references; the minimal-work reference patches a finalizer of the syncer's form " +
			"(workload.kcp.io/syncer-<key> of another SyncTarget key) onto separate unlabelled upstream ConfigMaps while it applies their copies downstream; " +
			fmt.Sprintf("the syncer's first object was seen downstream %s after its start. ", startup.Round(time.Millisecond)) +
			"CPU per object (the machine's 2 cores are the limit: every process's CPU per object adds up to the time): syncer run: " + syncerCPU +
			"; minimal work: " + r.minimalCPU,
	}, map[string]any{"syncer_seconds": syncTime.Seconds(), "minimal_work_seconds": minTime.Seconds(), "ssa_only_seconds": refTime.Seconds(), "objects": n, "first_object_seconds": startup.Seconds()})
	r.add(Row{
		ID: "P1", What: "the same initial sync against a downstream SSA only (the old reference, for comparison with peers)",
		Measured: syncTime.Round(time.Millisecond).String(), Reference: refTime.Round(time.Millisecond).String() + " (client-go SSA only, same budget)",
		Ratio: fmt.Sprintf("%.2f×", rtSSA), Goal: "— (comparison)", Met: "—",
	}, nil)
	up, down := upAfter.delta(upBefore), downAfter.delta(downBefore)
	perObj := (up.total() + down.total()) / float64(n)
	r.add(Row{
		ID: "P11", What: "API requests per synced object during P1 (both apiservers, WATCH excluded)",
		Measured: fmt.Sprintf("%.2f", perObj), Reference: "2 (minimal work: one upstream finalizer write, one downstream write)",
		Ratio: fmt.Sprintf("upstream %.0f, downstream %.0f", up.total(), down.total()), Goal: "≤ 2.05", Met: met(perObj <= 2.05),
		Notes: "upstream: " + up.top(4) + "; downstream: " + down.top(4),
	}, map[string]any{"upstream": up, "downstream": down, "per_object": perObj})

	if err := r.p2(ctx, p, t, objs); err != nil {
		return err
	}
	if err := r.p3(ctx, p, t, objs.namespaces[0], widgets); err != nil {
		return err
	}
	return r.idle(ctx, &p, t, cnt)
}

// profile saves a CPU profile of the syncer's first seconds of work.
func (r *runner) profile(ctx context.Context, p *syncerProcess, name string) {
	time.Sleep(time.Second) // the listener binds early, but give the process a moment
	path := filepath.Join(r.cfg.WorkDir, "profiles", name+".cpu.pprof")
	if err := p.saveProfile(ctx, fmt.Sprintf("profile?seconds=%d", r.cfg.CPUProfileSecs), path); err != nil {
		r.logf("   profile %s: %v", name, err)
	}
}

// bedPids names the test bed's server processes, by side, and this harness.
func (r *runner) bedPids() map[string]int {
	out := map[string]int{"harness": os.Getpid()}
	for name, pid := range r.env.KCP.Processes() {
		out["upstream "+name] = pid
	}
	for name, pid := range r.env.Physical.Processes() {
		out["downstream "+name] = pid
	}
	return out
}

func (r *runner) scrapeBoth(ctx context.Context) (requestCounts, requestCounts, error) {
	up, err := scrapeRequests(ctx, r.upKube)
	if err != nil {
		return nil, nil, err
	}
	down, err := scrapeRequests(ctx, r.downKube)
	return up, down, err
}

// applyReference server-side-applies n ConfigMaps like P1's into the physical
// cluster with the syncer's client budget: QPS, burst and workers.
func (r *runner) applyReference(ctx context.Context, n int) (time.Duration, error) {
	cfg := rest.CopyConfig(r.env.Physical.Config)
	cfg.QPS, cfg.Burst = float32(r.cfg.QPS), r.cfg.Burst
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = parallel(ctx, n, r.cfg.Workers, func(ctx context.Context, i int) error {
		cm := corev1ac.ConfigMap(fmt.Sprintf("cm-%05d", i), refNS).
			WithLabels(map[string]string{"bench": "reference"}).
			WithData(map[string]string{"payload": r.payload, "seq": "0"})
		_, err := kube.CoreV1().ConfigMaps(refNS).Apply(ctx, cm, metav1.ApplyOptions{FieldManager: "bench-reference", Force: true})
		return err
	})
	return time.Since(start), err
}

// minimalWork is the P1 reference of issue 18: per object exactly the writes the job
// needs, the downstream apply and the upstream finalizer patch, run concurrently, by
// Workers workers with the syncer's QPS and burst on each cluster's client. Its upstream
// objects are unlabelled ConfigMaps of their own namespaces, created before and deleted
// after it (the syncer's start-up sweep of unlabelled objects carrying its finalizer would
// otherwise list them during P1), and its finalizer is that of another SyncTarget key, of
// the same length as the syncer's, so that no syncer ever releases it.
const minimalNS = "bench-minimal"

func (r *runner) minimalWorkReference(ctx context.Context, t target, n int) (time.Duration, error) {
	up := objectSet{perNS: 1000, n: n}
	for i := 0; i*up.perNS < n; i++ {
		ns := fmt.Sprintf("p1-minimal-%d", i)
		if err := r.createNamespace(ctx, r.upKube, ns); err != nil {
			return 0, err
		}
		up.namespaces = append(up.namespaces, ns)
	}
	if err := r.createNamespace(ctx, r.downKube, minimalNS); err != nil {
		return 0, err
	}
	rvs := make([]string, n)
	err := parallel(ctx, n, 16, func(ctx context.Context, i int) error {
		ns, name := up.at(i)
		cm, err := r.upKube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Data:       map[string]string{"payload": r.payload, "seq": "0"},
		}, metav1.CreateOptions{})
		if err == nil {
			rvs[i] = cm.ResourceVersion
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	budgeted := func(c *rest.Config) (kubernetes.Interface, error) {
		c = rest.CopyConfig(c)
		c.QPS, c.Burst = float32(r.cfg.QPS), r.cfg.Burst
		return kubernetes.NewForConfig(c)
	}
	upKube, err := budgeted(r.env.KCP.Config)
	if err != nil {
		return 0, err
	}
	downKube, err := budgeted(r.env.Physical.Config)
	if err != nil {
		return 0, err
	}
	finalizer := identity.SyncerFinalizer(identity.SyncTargetKey("root", t.id.Name+"-minimal-work"))
	cpuBefore := readCPU(r.bedPids())
	start := time.Now()
	err = parallel(ctx, n, r.cfg.Workers, func(ctx context.Context, i int) error {
		ns, name := up.at(i)
		var wg sync.WaitGroup
		var upErr error
		wg.Go(func() {
			patch := fmt.Sprintf(`{"metadata":{"finalizers":[%q],"resourceVersion":%q}}`, finalizer, rvs[i])
			_, upErr = upKube.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		})
		cm := corev1ac.ConfigMap(name, minimalNS).
			WithLabels(map[string]string{"bench": "minimal-work"}).
			WithData(map[string]string{"payload": r.payload, "seq": "0"})
		_, downErr := downKube.CoreV1().ConfigMaps(minimalNS).Apply(ctx, cm, metav1.ApplyOptions{FieldManager: "bench-reference", Force: true})
		wg.Wait()
		if upErr != nil {
			return fmt.Errorf("minimal work: finalizer of %s/%s: %w", ns, name, upErr)
		}
		return downErr
	})
	elapsed := time.Since(start)
	if err != nil {
		return 0, err
	}
	r.minimalCPU = readCPU(r.bedPids()).perObject(cpuBefore, n)
	// Clean up before P1: release and delete the upstream objects, one at a time per worker.
	err = parallel(ctx, n, 16, func(ctx context.Context, i int) error {
		ns, name := up.at(i)
		if _, err := r.upKube.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
			return err
		}
		return r.upKube.CoreV1().ConfigMaps(ns).Delete(ctx, name, metav1.DeleteOptions{})
	})
	if err != nil {
		return 0, fmt.Errorf("minimal work: clean up upstream: %w", err)
	}
	for _, ns := range up.namespaces {
		if err := r.upKube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			return 0, err
		}
	}
	// The namespace controller's deletion (a LIST and DELETE of every resource per
	// namespace) must be over before P1, or P1 counts its requests and shares its CPU.
	for _, ns := range up.namespaces {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			_, err := r.upKube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				if err != nil {
					return 0, fmt.Errorf("minimal work: namespace %s not confirmed gone after 2 minutes: %w", ns, err)
				}
				return 0, fmt.Errorf("minimal work: namespace %s still there after 2 minutes", ns)
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return elapsed, nil
}

// latencies measures write → watch-visible for writes of data.seq, each seq unique.
type latencies struct {
	mu      sync.Mutex
	pending map[string]time.Time
	samples []time.Duration
}

func newLatencies() *latencies { return &latencies{pending: map[string]time.Time{}} }

func (l *latencies) wrote(seq string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending[seq] = at
}

func (l *latencies) forget(seq string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, seq)
}

func (l *latencies) observe(_ watch.EventType, u *unstructured.Unstructured) {
	seq, _, _ := unstructured.NestedString(u.Object, "data", "seq")
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.pending[seq]; ok {
		l.samples = append(l.samples, now.Sub(at))
		delete(l.pending, seq)
	}
}

func (l *latencies) result() ([]time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Duration(nil), l.samples...), len(l.pending)
}

var seqCounter atomic.Int64

// specUpdates patches data.seq of objects at rate for duration through kube and
// returns the latencies seen by lat's watch, and how many were never seen.
func (r *runner) specUpdates(ctx context.Context, kube kubernetes.Interface, obj func(i int) (string, string), objects, rate int, duration time.Duration, lat *latencies) ([]time.Duration, int, error) {
	total := int(duration.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var failed atomic.Value
	var failures atomic.Int64
	tick := time.NewTicker(interval)
	for i := range total {
		<-tick.C
		ns, name := obj(i % objects)
		seq := strconv.FormatInt(seqCounter.Add(1), 10)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			lat.wrote(seq, time.Now())
			patch := fmt.Sprintf(`{"data":{"seq":%q}}`, seq)
			if _, err := kube.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				// A write the loaded server refused (e.g. "etcdserver: request timed out")
				// is not the syncer's latency: drop it, count it, and stop only when
				// nothing gets through.
				lat.forget(seq)
				if failures.Add(1) > int64(total/10)+3 {
					failed.Store(err)
				}
			}
		})
	}
	tick.Stop()
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return nil, 0, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, missing := lat.result(); missing == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	s, missing := lat.result()
	return s, missing, nil
}

// referenceLatency is P2's reference: the same writes directly into the physical
// cluster, seen by a watch there.
func (r *runner) referenceLatency(ctx context.Context, objects, rate int, duration time.Duration) (Percentiles, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := newLatencies()
	if err := watchAll(wctx, r.downDyn, configMapsGVR, refNS, "bench=reference", lat.observe); err != nil {
		return Percentiles{}, err
	}
	s, _, err := r.specUpdates(ctx, r.downKube, func(i int) (string, string) { return refNS, fmt.Sprintf("cm-%05d", i) }, objects, rate, duration, lat)
	return percentiles(s), err
}

// syncedLatency is P2: upstream writes, seen downstream by a watch.
func (r *runner) syncedLatency(ctx context.Context, t target, objs objectSet, objects, rate int, duration time.Duration) (Percentiles, int, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := newLatencies()
	if err := watchAll(wctx, r.downDyn, configMapsGVR, t.downNS(objs.namespaces[0]), t.id.DownstreamSelector().String(), lat.observe); err != nil {
		return Percentiles{}, 0, err
	}
	s, missing, err := r.specUpdates(ctx, r.upKube, objs.at, objects, rate, duration, lat)
	return percentiles(s), missing, err
}

// p2 is spec latency; P4 (drift revert) runs during it, on other objects of the same
// namespace, so that the revert is measured under P2's update rate.
func (r *runner) p2(ctx context.Context, p *syncerProcess, t target, objs objectSet) error {
	objects := min(r.cfg.P2Objects, objs.perNS, objs.n)
	ref, err := r.referenceLatency(ctx, objects, r.cfg.P2Rate, r.cfg.RefDuration)
	if err != nil {
		return err
	}
	r.rep.Raw["reference direct write → watch"] = ref
	p4ctx, stopP4 := context.WithCancel(ctx)
	defer stopP4()
	type p4result struct {
		row *Row
		raw any
		err error
	}
	p4done := make(chan p4result, 1)
	go func() {
		row, raw, err := r.p4(p4ctx, p, t, objs, objects, ref)
		p4done <- p4result{row, raw, err}
	}()
	got, missing, err := r.syncedLatency(ctx, t, objs, objects, r.cfg.P2Rate, r.cfg.P2Duration)
	if err != nil {
		return err
	}
	if err := p.exited(); err != nil {
		return err
	}
	r.p2Result = got
	r50, r99 := ratio(got.P50, ref.P50), ratio(got.P99, ref.P99)
	r.add(Row{
		ID: "P2", What: fmt.Sprintf("spec latency, upstream write → downstream watch, %d updates/s over %d objects for %s (P4 runs meanwhile)", r.cfg.P2Rate, objects, r.cfg.P2Duration),
		Measured: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", got.P50, got.P99), Reference: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (direct write → watch at the same rate)", ref.P50, ref.P99),
		Ratio: fmt.Sprintf("p50 %.1f×, p99 %.1f×; %d of %d never seen", r50, r99, missing, got.N+missing),
		Goal:  "p50 ≤ 2.0×, p99 ≤ 2.2× the reference", Met: met(r50 <= 2.0 && r99 <= 2.2 && missing == 0 && got.N > 0),
	}, map[string]any{"syncer": got, "reference": ref, "missing": missing})
	// P4 stops with P2's load: its edits are only meaningful under it.
	stopP4()
	res := <-p4done
	if res.row != nil {
		r.add(*res.row, res.raw)
	}
	return res.err
}
