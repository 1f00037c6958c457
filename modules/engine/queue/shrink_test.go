package queue

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// After a burst of thousands of keys (a resync), the emptied maps are made anew so that an
// idle runner does not keep tables sized for the burst; small ones are kept.
func TestKeyMapsAreMadeAnewOnceEmptyAfterABurst(t *testing.T) {
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	key := func(i int) Key {
		return Key{Direction: Down, GVR: gvr, Cluster: "root", Namespace: "ns", Name: fmt.Sprintf("cm-%d", i)}
	}
	for _, n := range []int{10, shrinkAfter, 3 * shrinkAfter} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := newStats()
			r := &Runner{firstSeen: map[Key]time.Time{}}
			waiting, seen := fmt.Sprintf("%p", s.waiting), fmt.Sprintf("%p", r.firstSeen)
			for i := range n {
				s.pending(key(i))
				r.seen(key(i))
			}
			for i := range n {
				s.taken(key(i))
				r.converged(key(i), time.Now())
			}
			assert.Empty(t, s.waiting)
			assert.Empty(t, r.firstSeen)
			assert.Zero(t, s.gvr(gvr).Pending)
			big := n >= shrinkAfter
			assert.Equal(t, big, waiting != fmt.Sprintf("%p", s.waiting), "waiting made anew: %v", big)
			assert.Equal(t, big, seen != fmt.Sprintf("%p", r.firstSeen), "firstSeen made anew: %v", big)
			if big {
				assert.Zero(t, s.waitingPeak)
				assert.Zero(t, r.seenPeak)
			} else {
				assert.Equal(t, n, s.waitingPeak, "small maps are kept")
			}
		})
	}
}
