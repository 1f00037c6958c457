package app

import (
	"context"
	"sync"

	"github.com/tmc-syncer/syncer/modules/engine/engine"
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
	return nil
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
