package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tmc-syncer/syncer/integration/framework"
)

// idle tops the synced set up to IdleObjects, then measures P10 (API requests per
// second with nothing changing, against the same window without the syncer) and P5
// (memory and CPU idle, and during the full resync of a restart).
func (r *runner) idle(ctx context.Context, pp **syncerProcess, t target, cnt *counter) error {
	p := *pp
	extra := r.cfg.IdleObjects - r.cfg.P1Objects
	if extra > 0 {
		r.logf("   creating %d more ConfigMaps upstream", extra)
		if _, err := r.createUpstream(ctx, t, "p5", extra); err != nil {
			return err
		}
	}
	total := max(r.cfg.IdleObjects, r.cfg.P1Objects)
	if err := waitFor(ctx, 30*time.Minute, p, "P5: all ConfigMaps downstream", func() bool { return int(cnt.n.Load()) >= total }); err != nil {
		return err
	}
	settled := func(p *syncerProcess) func() bool {
		return func() bool {
			m, err := p.get(ctx, "/metrics")
			return err == nil && framework.MetricSum(m, "tmc_syncer_workqueue_depth") == 0 &&
				framework.MetricSum(m, "tmc_syncer_reconciles_total", `controller="downstream-spec"`) >= float64(total)
		}
	}
	if err := waitFor(ctx, 5*time.Minute, p, "P5: queues empty", settled(p)); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)

	window := r.cfg.IdleWindow
	measure := func() (requestCounts, requestCounts, error) {
		upB, downB, err := r.scrapeBoth(ctx)
		if err != nil {
			return nil, nil, err
		}
		time.Sleep(window)
		upA, downA, err := r.scrapeBoth(ctx)
		if err != nil {
			return nil, nil, err
		}
		return upA.delta(upB), downA.delta(downB), nil
	}
	procB, err := readProc(p.cmd.Process.Pid)
	if err != nil {
		return err
	}
	allocated := func() float64 {
		m, err := p.get(ctx, "/metrics")
		if err != nil {
			return 0
		}
		return framework.MetricSum(m, "go_memstats_alloc_bytes_total")
	}
	allocB := allocated()
	upIdle, downIdle, err := measure()
	if err != nil {
		return err
	}
	procA, err := readProc(p.cmd.Process.Pid)
	if err != nil {
		return err
	}
	memNote := fmt.Sprintf("idle RSS = %.0f MiB anonymous + %.0f MiB file pages (the binary); allocated while idle %.0f KiB/s",
		procA.AnonMiB, procA.FileMiB, (allocated()-allocB)/1024/window.Seconds())
	if m, err := p.get(ctx, "/metrics"); err == nil {
		mib := func(name string) float64 { return framework.MetricSum(m, name) / (1 << 20) }
		memNote += fmt.Sprintf("; Go runtime: heap in use %.0f MiB, heap free but not returned %.0f, returned %.0f, stacks %.0f, runtime's own %.0f",
			mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_heap_idle_bytes")-mib("go_memstats_heap_released_bytes"),
			mib("go_memstats_heap_released_bytes"), mib("go_memstats_stack_inuse_bytes"),
			mib("go_memstats_mspan_inuse_bytes")+mib("go_memstats_mcache_inuse_bytes")+mib("go_memstats_buck_hash_sys_bytes")+mib("go_memstats_gc_sys_bytes")+mib("go_memstats_other_sys_bytes"))
	}
	if err := p.saveProfile(ctx, "heap", filepath.Join(r.cfg.WorkDir, "profiles", "idle.heap.pprof")); err != nil {
		r.logf("   heap profile: %v", err)
	}
	p.stop()
	upBase, downBase, err := measure()
	if err != nil {
		return err
	}
	heartbeat := []string{"synctargets", "leases"}
	syncerReqs := (upIdle.without(heartbeat...).total() + downIdle.without(heartbeat...).total()) -
		(upBase.without(heartbeat...).total() + downBase.without(heartbeat...).total())
	perSec := syncerReqs / window.Seconds()
	r.add(Row{
		ID: "P10", What: fmt.Sprintf("API requests/s with %d synced objects, nothing changing (%s window)", total, window),
		Measured: fmt.Sprintf("%.2f/s beyond heartbeats and leases (difference of two windows; ±0.5 is noise)", perSec), Reference: fmt.Sprintf("same window without the syncer: %.0f requests", upBase.total()+downBase.total()),
		Ratio: fmt.Sprintf("with syncer: upstream %.0f, downstream %.0f requests", upIdle.total(), downIdle.total()),
		Goal:  "0 beyond watches and heartbeats", Met: met(perSec < 0.5),
		Notes: "with syncer, upstream: " + upIdle.top(4) + "; downstream: " + downIdle.top(4) + "; without: " + upBase.top(2) + " / " + downBase.top(2),
	}, map[string]any{"with_syncer_upstream": upIdle, "with_syncer_downstream": downIdle, "without_upstream": upBase, "without_downstream": downBase, "window_seconds": window.Seconds()})

	// The restart: a full resync of every object.
	downB, err := scrapeRequests(ctx, r.downKube)
	if err != nil {
		return err
	}
	start := time.Now()
	p2, err := startSyncer(r.cfg.SyncerBin, r.cfg.WorkDir, "syncer-direct-restart", r.syncerArgs(t, "")...)
	if err != nil {
		return err
	}
	*pp = p2
	go r.profile(ctx, p2, "p5-resync")
	if err := waitFor(ctx, 10*time.Minute, p2, "P5: resync after restart", settled(p2)); err != nil {
		return err
	}
	resync := time.Since(start)
	procR, err := readProc(p2.cmd.Process.Pid)
	if err != nil {
		return err
	}
	downA, err := scrapeRequests(ctx, r.downKube)
	if err != nil {
		return err
	}
	writes := 0.0
	var written []string
	for k, v := range downA.delta(downB) {
		for _, verb := range []string{"POST ", "PUT ", "PATCH ", "DELETE ", "APPLY "} {
			// Leases are the leader election's; *reviews (access and token reviews) are
			// questions asked with a POST, not writes.
			if len(k) >= len(verb) && k[:len(verb)] == verb && k != "PUT leases" && !strings.HasSuffix(k, "reviews") && v > 0 {
				writes += v
				written = append(written, fmt.Sprintf("%s %.0f", k, v))
			}
		}
	}
	sort.Strings(written)
	idleCPU := (procA.CPUSecs - procB.CPUSecs) / window.Seconds() * 100
	r.add(Row{
		ID: "P5", What: fmt.Sprintf("syncer RSS and CPU with %d synced objects: idle, and during the full resync after a restart", total),
		Measured:  fmt.Sprintf("idle RSS %.0f MiB, CPU %.1f%%; resync peak RSS %.0f MiB, %.1f CPU-s over %s", procA.RSSMiB, idleCPU, procR.HWMMiB, procR.CPUSecs, resync.Round(time.Millisecond)),
		Reference: "—", Ratio: fmt.Sprintf("%.1f KiB RSS per object; %.0f downstream writes during the resync %v", procR.HWMMiB*1024/float64(total), writes, written),
		Goal: "idle ≤ 150 MiB RSS (at 10,000 objects), resync peak ≤ 200 MiB", Met: met(procA.RSSMiB <= 150 && procR.HWMMiB <= 200),
		Notes: memNote,
	}, map[string]any{"idle_before": procB, "idle_after": procA, "resync": procR, "resync_seconds": resync.Seconds(), "resync_downstream_writes": writes})
	return nil
}
