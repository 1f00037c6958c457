package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

func widget(name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "test.tmc.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"size": int64(1)},
	}}
	u.SetLabels(labels)
	return u
}

var errNotSeen = errors.New("not seen within 10s")

// sequential writes one change at a time (write(k)) and waits until the watch's
// value(u) equals want(k); it returns the latencies and the number of changes never
// seen (when ctx ends, those taken so far with ctx's error). Three misses in a row end it early (the path is broken, not slow).
func sequential(ctx context.Context, n int, write func(ctx context.Context, k int) error, want func(k int) string, seen <-chan string) ([]time.Duration, int, error) {
	var out []time.Duration
	missed, inARow := 0, 0
	for k := 1; k <= n && inARow < 3; k++ {
		start := time.Now()
		if err := write(ctx, k); err != nil {
			if ctx.Err() != nil {
				return out, missed, ctx.Err()
			}
			return nil, 0, err
		}
		if err := waitValue(ctx, seen, want(k)); err != nil {
			if ctx.Err() != nil {
				return out, missed, ctx.Err()
			}
			if !errors.Is(err, errNotSeen) {
				return nil, 0, err
			}
			missed++
			inARow++
			continue
		}
		inARow = 0
		out = append(out, time.Since(start))
	}
	return out, missed, nil
}

func waitValue(ctx context.Context, seen <-chan string, want string) error {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case v := <-seen:
			if v == want {
				return nil
			}
		case <-timeout:
			return errNotSeen
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// statusRun patches status.n of widgets in writeNS through write, and watches
// watchNS through watchC for the value.
func statusRun(ctx context.Context, n int, names []string, writeC dynamic.Interface, writeNS string, watchC dynamic.Interface, watchNS string) ([]time.Duration, int, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan string, 1024)
	err := watchAll(wctx, watchC, widgetsGVR, watchNS, "", func(_ watch.EventType, u *unstructured.Unstructured) {
		v, _, _ := unstructured.NestedInt64(u.Object, "status", "n")
		select {
		case seen <- u.GetName() + "=" + fmt.Sprint(v):
		default:
		}
	})
	if err != nil {
		return nil, 0, err
	}
	base := time.Now().UnixNano() % 1_000_000_000
	write := func(ctx context.Context, k int) error {
		patch := fmt.Sprintf(`{"status":{"n":%d}}`, base+int64(k))
		_, err := writeC.Resource(widgetsGVR).Namespace(writeNS).Patch(ctx, names[k%len(names)], types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
		return err
	}
	return sequential(ctx, n, write, func(k int) string { return fmt.Sprintf("%s=%d", names[k%len(names)], base+int64(k)) }, seen)
}

// p3 is status latency: a downstream status write seen upstream by a watch, next to
// a downstream status write seen downstream by a watch.
func (r *runner) p3(ctx context.Context, p *syncerProcess, t target, upNS string, widgets int) error {
	var names []string
	for i := range widgets {
		names = append(names, fmt.Sprintf("w-%d", i))
	}
	downNS := t.downNS(upNS)
	err := waitFor(ctx, 2*time.Minute, p, "P3: widgets downstream", func() bool {
		l, err := r.downDyn.Resource(widgetsGVR).Namespace(downNS).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) >= widgets
	})
	if err != nil {
		return err
	}
	for _, name := range names {
		if _, err := r.downDyn.Resource(widgetsGVR).Namespace(refNS).Create(ctx, widget(name, nil), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	refS, _, err := statusRun(ctx, r.cfg.StatusUpdates, names, r.downDyn, refNS, r.downDyn, refNS)
	if err != nil {
		return err
	}
	s, missed, err := statusRun(ctx, r.cfg.StatusUpdates, names, r.downDyn, downNS, r.upDyn, upNS)
	if err != nil {
		return err
	}
	relayS, err := r.relayRun(ctx, names)
	if err != nil {
		return err
	}
	got, ref, relay := percentiles(s), percentiles(refS), percentiles(relayS)
	r.add(Row{
		ID: "P3", What: fmt.Sprintf("status latency, downstream status write → upstream watch, %d sequential updates", r.cfg.StatusUpdates),
		Measured: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", got.P50, got.P99), Reference: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (direct status write → watch)", ref.P50, ref.P99),
		Ratio: fmt.Sprintf("p50 %.1f×, p99 %.1f×; %d never seen", ratio(got.P50, ref.P50), ratio(got.P99, ref.P99), missed),
		Goal:  "p50 ≤ 2.0×, p99 ≤ 2.2× the reference", Met: met(ratio(got.P50, ref.P50) <= 2.0 && ratio(got.P99, ref.P99) <= 2.2 && missed == 0 && got.N > 0),
		Notes: fmt.Sprintf("two-hop floor, the same writes relayed by the harness itself (its downstream watch merge-patches an upstream copy, no syncer): p50 %.1f ms, p99 %.1f ms (%.1f× / %.1f× the reference); the syncer is p50 %.1f×, p99 %.1f× that floor",
			relay.P50, relay.P99, ratio(relay.P50, ref.P50), ratio(relay.P99, ref.P99), ratio(got.P50, relay.P50), ratio(got.P99, relay.P99)),
	}, map[string]any{"syncer": got, "reference": ref, "relay": relay, "missed": missed})
	return nil
}

// relayNS is the upstream namespace of the widgets relayRun writes; no SyncTarget selects
// them.
const relayNS = "bench-relay"

// relayRun measures the floor of P3's path without the syncer: the reference's downstream
// status writes, relayed by a watch in this process (a merge patch of the same value onto
// an upstream widget of the same name in relayNS), seen by an upstream watch. It is two
// write → watch hops and nothing else.
func (r *runner) relayRun(ctx context.Context, names []string) ([]time.Duration, error) {
	if err := r.createNamespace(ctx, r.upKube, relayNS); err != nil {
		return nil, err
	}
	for _, name := range names {
		if _, err := r.upDyn.Resource(widgetsGVR).Namespace(relayNS).Create(ctx, widget(name, nil), metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up := r.upDyn.Resource(widgetsGVR).Namespace(relayNS)
	err := watchAll(rctx, r.downDyn, widgetsGVR, refNS, "", func(_ watch.EventType, u *unstructured.Unstructured) {
		v, found, _ := unstructured.NestedInt64(u.Object, "status", "n")
		if !found {
			return
		}
		patch := fmt.Sprintf(`{"status":{"n":%d}}`, v)
		// A failed relay shows as a change never seen.
		_, _ = up.Patch(rctx, u.GetName(), types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	})
	if err != nil {
		return nil, err
	}
	s, _, err := statusRun(ctx, r.cfg.StatusUpdates, names, r.downDyn, refNS, r.upDyn, relayNS)
	return s, err
}

// p4 is drift revert under load: while P2's updates run (p2 starts it and cancels ctx
// when they end), a synced field of other objects of the same namespace is edited
// downstream, one at a time, until the watch shows the upstream value again. Edits
// still pending when P2 ends are neither samples nor misses.
func (r *runner) p4(ctx context.Context, p *syncerProcess, t target, objs objectSet, p2Objects int, ref Percentiles) (*Row, any, error) {
	first, last := p2Objects, min(objs.perNS, objs.n)
	if last-first > 50 {
		last = first + 50
	}
	if last <= first { // too few objects for a disjoint set: share P2's (their upstream value moves)
		first, last = 0, p2Objects
	}
	upNS := objs.namespaces[0]
	downNS := t.downNS(upNS)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan string, 1024)
	err := watchAll(wctx, r.downDyn, configMapsGVR, downNS, t.id.DownstreamSelector().String(), func(_ watch.EventType, u *unstructured.Unstructured) {
		v, _, _ := unstructured.NestedString(u.Object, "data", "seq")
		select {
		case seen <- u.GetName() + "=" + v:
		default:
		}
	})
	if err != nil {
		return nil, nil, ignoreCanceled(ctx, err)
	}
	upstreamSeq := map[string]string{}
	for i := first; i < last; i++ {
		_, name := objs.at(i)
		cm, err := r.upKube.CoreV1().ConfigMaps(upNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, ignoreCanceled(ctx, err)
		}
		upstreamSeq[name] = cm.Data["seq"]
	}
	name := func(k int) string { _, n := objs.at(first + k%(last-first)); return n }
	write := func(ctx context.Context, k int) error {
		patch := fmt.Sprintf(`{"data":{"seq":"drift-%d"}}`, k)
		_, err := r.downKube.CoreV1().ConfigMaps(downNS).Patch(ctx, name(k), types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "someone"})
		return err
	}
	s, missed, err := sequential(ctx, r.cfg.DriftEdits, write, func(k int) string { return name(k) + "=" + upstreamSeq[name(k)] }, seen)
	if err != nil && ctx.Err() == nil {
		return nil, nil, err
	}
	if err := p.exited(); err != nil {
		return nil, nil, err
	}
	got := percentiles(s)
	r50, r99 := ratio(got.P50, ref.P50), ratio(got.P99, ref.P99)
	return &Row{
		ID: "P4", What: fmt.Sprintf("drift revert under P2's load: synced field edited downstream → reverted, up to %d sequential edits while P2's %d updates/s run", r.cfg.DriftEdits, r.cfg.P2Rate),
		Measured: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms over %d edits; %d not reverted within 10 s", got.P50, got.P99, got.N, missed), Reference: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (P2's reference)", ref.P50, ref.P99),
		Ratio: fmt.Sprintf("p50 %.1f×, p99 %.1f×", r50, r99),
		Goal:  "p99 ≤ 2.2× the reference, under load", Met: met(r99 <= 2.2 && missed == 0 && got.N > 0),
	}, map[string]any{"syncer": got, "missed": missed}, nil
}

// ignoreCanceled drops err when ctx ended (P2's load was over before P4 got going):
// then P4 has no row.
func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
