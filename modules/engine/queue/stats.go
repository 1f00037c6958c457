package queue

import (
	"sort"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GVRStats are a runner's counters for one resource.
type GVRStats struct {
	GVR schema.GroupVersionResource
	// Pending counts keys queued or waiting for a retry.
	Pending          int
	ReconcilesOK     int64
	ReconcilesFailed int64
	LastError        string
	LastErrorTime    time.Time
}

type stats struct {
	mu      sync.Mutex
	waiting map[Key]struct{}
	// waitingPeak is the most keys waiting held since it was made (see shrinkAfter).
	waitingPeak int
	byGVR       map[schema.GroupVersionResource]*GVRStats
}

// shrinkAfter: a map of keys that held at least this many is made anew once it is empty.
// Go maps keep the memory of deleted entries: after a resync of thousands of objects an
// idle runner would otherwise hold tables sized for all of them.
const shrinkAfter = 1024

func newStats() *stats {
	return &stats{waiting: map[Key]struct{}{}, byGVR: map[schema.GroupVersionResource]*GVRStats{}}
}

func (s *stats) gvr(g schema.GroupVersionResource) *GVRStats {
	st, ok := s.byGVR[g]
	if !ok {
		st = &GVRStats{GVR: g}
		s.byGVR[g] = st
	}
	return st
}

func (s *stats) pending(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.waiting[k]; ok {
		return
	}
	s.waiting[k] = struct{}{}
	s.waitingPeak = max(s.waitingPeak, len(s.waiting))
	s.gvr(k.GVR).Pending++
}

func (s *stats) taken(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.waiting[k]; !ok {
		return
	}
	delete(s.waiting, k)
	if len(s.waiting) == 0 && s.waitingPeak >= shrinkAfter {
		s.waiting, s.waitingPeak = map[Key]struct{}{}, 0
	}
	s.gvr(k.GVR).Pending--
}

func (s *stats) done(k Key, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.gvr(k.GVR)
	if err == nil {
		st.ReconcilesOK++
		return
	}
	st.ReconcilesFailed++
	st.LastError = k.String() + ": " + err.Error()
	st.LastErrorTime = now
}

// Stats returns the runner's per-resource counters, sorted by resource.
func (r *Runner) Stats() []GVRStats {
	r.stats.mu.Lock()
	defer r.stats.mu.Unlock()
	out := make([]GVRStats, 0, len(r.stats.byGVR))
	for _, st := range r.stats.byGVR {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GVR.String() < out[j].GVR.String() })
	return out
}
