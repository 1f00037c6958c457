package idlemem

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mib = 1 << 20

func TestShouldRelease(t *testing.T) {
	tests := []struct {
		name      string
		allocated uint64 // during the interval
		live      uint64
		reclaim   uint64
		want      bool
	}{
		{name: "quiet after a busy phase: released", allocated: 1 * mib, live: 100 * mib, reclaim: 90 * mib, want: true},
		{name: "busy: left alone", allocated: 50 * mib, live: 100 * mib, reclaim: 90 * mib},
		{name: "idle with a small live heap: lease, heartbeat and probes only (under the floor)", allocated: 2 * mib, live: 50 * mib, reclaim: 40 * mib, want: true},
		{name: "idle with a small live heap, a burst of probes (under the floor)", allocated: 7 * mib, live: 50 * mib, reclaim: 40 * mib, want: true},
		{name: "busy with a small live heap: over both the share and the floor", allocated: 20 * mib, live: 50 * mib, reclaim: 40 * mib},
		{name: "quiet, little to reclaim (a tenth of the live heap or less)", allocated: 0, live: 200 * mib, reclaim: 20 * mib},
		{name: "quiet, a quarter of the live heap to reclaim: released", allocated: 0, live: 100 * mib, reclaim: 25 * mib, want: true},
		{name: "quiet, small process: under the floor", allocated: 0, live: 4 * mib, reclaim: 15 * mib},
		{name: "quiet, small process: over the floor", allocated: 0, live: 4 * mib, reclaim: 17 * mib, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev := Stats{Allocated: 1000 * mib}
			cur := Stats{Allocated: prev.Allocated + tt.allocated, Live: tt.live, Reclaimable: tt.reclaim}
			assert.Equal(t, tt.want, (&Releaser{}).ShouldRelease(prev, cur))
		})
	}
}

// Run releases once the process goes quiet, and not again until there is something to
// release.
func TestRunReleasesWhenQuiet(t *testing.T) {
	var (
		allocated   atomic.Uint64
		reclaimable atomic.Uint64
		releases    atomic.Int32
	)
	reclaimable.Store(80 * mib)
	r := &Releaser{
		Interval: time.Millisecond,
		Read: func() Stats {
			return Stats{Allocated: allocated.Load(), Live: 100 * mib, Reclaimable: reclaimable.Load()}
		},
		Release: func() { reclaimable.Store(0); releases.Add(1) },
	}
	busy := func() { allocated.Add(60 * mib) }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	for range 50 {
		busy()
		time.Sleep(100 * time.Microsecond)
	}
	require.Eventually(t, func() bool { return releases.Load() == 1 }, 5*time.Second, time.Millisecond, "released once quiet")
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, int32(1), releases.Load(), "nothing to release: no more collections")
	cancel()
	<-done
}

// ReadStats sees the garbage of a busy phase as reclaimable, and FreeOSMemory takes it.
func TestReadStatsSeesGarbage(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collection while the garbage is made
	debug.FreeOSMemory()
	before := ReadStats()
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, mib))
	}
	runtime.KeepAlive(keep)
	busy := ReadStats()
	assert.Greater(t, busy.Allocated-before.Allocated, uint64(60*mib))
	assert.Greater(t, busy.Reclaimable, uint64(32*mib), "the garbage is reclaimable")
	debug.FreeOSMemory()
	after := ReadStats()
	assert.Less(t, after.Reclaimable, busy.Reclaimable-32*mib, "released")
}
