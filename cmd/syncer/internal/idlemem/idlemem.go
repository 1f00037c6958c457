// Package idlemem returns the memory of a busy phase to the operating system once the
// process has gone quiet.
//
// Go's garbage collector lets the heap grow to twice its live size (GOGC=100) before it
// collects, and its background scavenger keeps about that much mapped: after a busy phase
// (the initial sync, a resync after a restart, a burst of changes) a controller's resident
// memory stays at about twice its live heap while it idles, mostly garbage and free pages
// it no longer needs. Releaser watches the runtime's metrics and, when the process
// allocates little and holds much reclaimable memory, collects once and returns the free
// pages (runtime/debug.FreeOSMemory): the resident memory of an idle controller falls to
// about its live heap. A busy process is left alone (a forced collection then costs CPU
// and the pages would be mapped again at once).
package idlemem

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Stats are the runtime figures Releaser decides on, in bytes.
type Stats struct {
	// Allocated is the total of bytes ever allocated on the heap (cumulative).
	Allocated uint64
	// Live is the heap that was reachable at the end of the last collection.
	Live uint64
	// Reclaimable is heap memory the process holds beyond the live heap: objects not
	// collected yet (garbage, until the next collection says otherwise) and free pages
	// not returned to the operating system.
	Reclaimable uint64
}

// Defaults of Releaser.
const (
	DefaultInterval = 10 * time.Second
	// DefaultQuietShare: a process that allocated less than this share of its live heap
	// during an interval is quiet.
	DefaultQuietShare = 0.02
	// DefaultQuietFloor: a process that allocated less than this during an interval is
	// quiet whatever its live heap. An idle syncer still renews its lease, heartbeats,
	// answers probes and rechecks namespaces (0.12–0.7 MiB/s measured at 10,000 objects, P5);
	// an initial sync or a resync allocates tens of MiB per second. Without the floor a
	// syncer with a live heap under ~400 MiB is never quiet. A release costs one garbage
	// collection, and needs MinReclaim (or a tenth of the live heap) reclaimable again
	// before the next: a process allocating just under the floor (1.6 MiB/s) is collected
	// every 10–20 s, against every ~40 s by the collector itself at --gc-percent 50 and
	// 120 MiB live; an idle syncer every few minutes.
	DefaultQuietFloor = 16 << 20
	// DefaultReclaimShare: release when the reclaimable memory exceeds this share of the
	// live heap (and MinReclaim). A quarter left an idle syncer at 10,000 objects holding
	// ~30 MiB of garbage and free pages (P5) whenever the last busy phase ended just under it.
	DefaultReclaimShare = 0.10
	// DefaultMinReclaim keeps small processes from collecting for a few MiB.
	DefaultMinReclaim = 16 << 20
)

// Releaser releases memory when the process is quiet. The zero value of a field means
// its default; Read and Release default to the runtime's.
type Releaser struct {
	Interval     time.Duration
	QuietShare   float64
	QuietFloor   uint64
	ReclaimShare float64
	MinReclaim   uint64
	// Read returns the current Stats (ReadStats).
	Read func() Stats
	// Release collects and returns free memory (runtime/debug.FreeOSMemory).
	Release func()
	// Released, when set, is told about each release: the reclaimable bytes before it.
	Released func(reclaimable uint64)
}

// Run checks every Interval until ctx ends.
func (r *Releaser) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	read, release := r.Read, r.Release
	if read == nil {
		read = ReadStats
	}
	if release == nil {
		release = debug.FreeOSMemory
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := read()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := read()
		if r.ShouldRelease(prev, cur) {
			release()
			if r.Released != nil {
				r.Released(cur.Reclaimable)
			}
			cur = read()
		}
		prev = cur
	}
}

// ShouldRelease reports whether the process, last seen at prev and now at cur, allocated
// less than QuietShare of its live heap (or less than QuietFloor) since and holds more
// than ReclaimShare of it (and at least MinReclaim) beyond it.
func (r *Releaser) ShouldRelease(prev, cur Stats) bool {
	quiet, quietFloor, reclaim, floor := r.QuietShare, r.QuietFloor, r.ReclaimShare, r.MinReclaim
	if quiet <= 0 {
		quiet = DefaultQuietShare
	}
	if quietFloor == 0 {
		quietFloor = DefaultQuietFloor
	}
	if reclaim <= 0 {
		reclaim = DefaultReclaimShare
	}
	if floor == 0 {
		floor = DefaultMinReclaim
	}
	allocated := cur.Allocated - prev.Allocated
	if cur.Allocated < prev.Allocated {
		allocated = 0
	}
	live := float64(cur.Live)
	return (float64(allocated) < quiet*live || allocated < quietFloor) &&
		cur.Reclaimable >= floor && float64(cur.Reclaimable) > reclaim*live
}

// The runtime/metrics names ReadStats reads.
const (
	metricAllocs  = "/gc/heap/allocs:bytes"
	metricLive    = "/gc/heap/live:bytes"
	metricObjects = "/memory/classes/heap/objects:bytes"
	metricFree    = "/memory/classes/heap/free:bytes"
)

// ReadStats reads Stats from runtime/metrics.
func ReadStats() Stats {
	samples := []metrics.Sample{{Name: metricAllocs}, {Name: metricLive}, {Name: metricObjects}, {Name: metricFree}}
	metrics.Read(samples)
	v := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	s := Stats{Allocated: v(0), Live: v(1)}
	objects, free := v(2), v(3)
	if objects > s.Live {
		s.Reclaimable = objects - s.Live
	}
	s.Reclaimable += free
	return s
}
