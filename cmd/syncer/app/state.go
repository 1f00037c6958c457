package app

import (
	"context"
	"sync"
	"time"

	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/status"
	"github.com/tmc-syncer/syncer/modules/tunnel/health"
	"github.com/tmc-syncer/syncer/modules/tunnel/heartbeat"
	"github.com/tmc-syncer/syncer/modules/upstream"
)

// syncState tells the health checks, the heartbeat and the tunnel what the sync
// components are doing; they start later (after the SyncTarget check and, with
// --leader-elect, only on the leader).
type syncState struct {
	mu       sync.Mutex
	engine   *engine.Engine
	upstream *upstream.Syncer
	// last are the reconcile totals at the previous readiness check.
	last reconcileTotals
	// watchdog fails /livez when queued work makes no progress.
	watchdog *health.Watchdog
}

// pending is the work queued in the engine's controllers, for the watchdog.
func (s *syncState) pending() int {
	eng, _ := s.get()
	if eng == nil {
		return 0
	}
	n := 0
	for _, c := range eng.Snapshot().Controllers {
		n += c.QueueLength
	}
	return n
}

// watchProgress tells the watchdog whenever a reconcile finished since the last look.
func (s *syncState) watchProgress(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last int64 = -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		eng, _ := s.get()
		if eng == nil || s.watchdog == nil {
			continue
		}
		cur := totals(eng.Snapshot())
		if done := cur.ok + cur.failed; done != last {
			last = done
			s.watchdog.Beat()
		}
	}
}

// reconcileTotals are the engine's reconcile counters summed over resources.
type reconcileTotals struct {
	ok, failed int64
	lastError  string
}

func totals(snap status.Snapshot) reconcileTotals {
	var t reconcileTotals
	var lastAt time.Time
	for _, r := range snap.Resources {
		t.ok += r.ReconcilesOK
		t.failed += r.ReconcilesFailed
		if r.LastError != "" && r.LastErrorTime.After(lastAt) {
			lastAt, t.lastError = r.LastErrorTime, r.GVR.Resource+": "+r.LastError
		}
	}
	return t
}

// systemicError reports a round (the reconciles since the previous check) in which
// reconciles failed and none succeeded: the syncer is not doing its job, whatever
// the object (e.g. the physical cluster refuses every write).
func systemicError(prev, cur reconcileTotals) error {
	failed, ok := cur.failed-prev.failed, cur.ok-prev.ok
	if failed > 0 && ok == 0 {
		return heartbeat.NotReady("ReconcileFailing", "all %d reconciles since the last heartbeat failed; last error: %s", failed, cur.lastError)
	}
	return nil
}

func (s *syncState) setEngine(e *engine.Engine) { s.mu.Lock(); s.engine = e; s.mu.Unlock() }

func (s *syncState) setUpstream(u *upstream.Syncer) { s.mu.Lock(); s.upstream = u; s.mu.Unlock() }

func (s *syncState) get() (*engine.Engine, *upstream.Syncer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.engine, s.upstream
}

// synced reports whether the engine's informers and the upstream syncer's caches
// have synced.
func (s *syncState) synced() bool {
	eng, up := s.get()
	if eng == nil || up == nil {
		return false
	}
	select {
	case <-eng.Ready():
		return up.Synced()
	default:
		return false
	}
}

// ready is the heartbeat's SyncerReady condition.
func (s *syncState) ready(context.Context) error {
	if eng, _ := s.get(); eng == nil {
		return heartbeat.NotReady("NotStarted", "the sync components have not started")
	}
	if !s.synced() {
		return heartbeat.NotReady("InformersNotSynced", "waiting for informers to sync")
	}
	eng, _ := s.get()
	cur := totals(eng.Snapshot())
	s.mu.Lock()
	prev := s.last
	s.last = cur
	s.mu.Unlock()
	return systemicError(prev, cur)
}

// managedNamespace reports whether a downstream namespace is one this syncer
// created (it carries our locator); the tunnel serves pod requests only there.
func (s *syncState) managedNamespace(ns string) bool {
	eng, _ := s.get()
	if eng == nil {
		return false
	}
	_, _, ok, err := eng.Informers().UpstreamNamespace(ns)
	return ok && err == nil
}
