package statuspage

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/utils/clock"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// CounterOptions configure an UpstreamCounter.
type CounterOptions struct {
	// TTL is how long counts are reused before the next page view counts again. Default 30 s.
	TTL time.Duration
	// Timeout bounds one count of one target. Default 5 s.
	Timeout time.Duration
	// Clock is the time source. Default real time.
	Clock clock.PassiveClock
}

// UpstreamCounter counts, per SyncTarget and per resource of its status.syncedResources in
// state Accepted, the upstream objects labelled state.workload.kcp.io/<key>=Sync: what
// the control plane has assigned to that physical cluster. It lists metadata only, in
// pages, and only when the page is viewed and the last count (or failed attempt) is older
// than the TTL; when a count fails the previous one is kept. A resource the server may not
// list is left out.
type UpstreamCounter struct {
	client  metadata.Interface
	targets Targets
	opts    CounterOptions

	group singleflight.Group // one count per target at a time

	mu    sync.Mutex
	cache map[tunnel.Target]counted
}

type counted struct {
	at     time.Time
	counts map[string]int
}

var _ Counter = (*UpstreamCounter)(nil)

// countPageSize bounds each list page.
const countPageSize = 500

// NewUpstreamCounter returns a counter listing through client the resources of the
// SyncTargets that targets knows.
func NewUpstreamCounter(client metadata.Interface, targets Targets, opts CounterOptions) *UpstreamCounter {
	if opts.TTL <= 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &UpstreamCounter{client: client, targets: targets, opts: opts, cache: map[tunnel.Target]counted{}}
}

// SyncedObjects implements Counter. Each target is counted at most once per TTL whatever
// the number of viewers: concurrent views share one count, and a failed count is
// remembered like a successful one (the previous counts are shown until the TTL is over).
func (c *UpstreamCounter) SyncedObjects(ctx context.Context, t tunnel.Target) map[string]int {
	if counts, fresh := c.cached(t); fresh {
		return counts
	}
	v, _, _ := c.group.Do(t.String(), func() (any, error) {
		if counts, fresh := c.cached(t); fresh {
			return counts, nil // counted by the flight that just ended
		}
		st := c.syncTarget(t)
		if st == nil {
			return map[string]int(nil), nil
		}
		// Shared by every viewer waiting: one of them leaving must not cancel it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.Timeout)
		defer cancel()
		counts, err := c.count(cctx, t, st)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			counts = c.cache[t].counts
		}
		c.cache[t] = counted{at: c.opts.Clock.Now(), counts: counts}
		return counts, nil
	})
	counts, _ := v.(map[string]int)
	return counts
}

// cached returns the last counts of t and whether they are younger than the TTL.
func (c *UpstreamCounter) cached(t tunnel.Target) (map[string]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, ok := c.cache[t]
	return last.counts, ok && c.opts.Clock.Since(last.at) < c.opts.TTL
}

func (c *UpstreamCounter) syncTarget(t tunnel.Target) *workloadv1alpha1.SyncTarget {
	for _, st := range c.targets.SyncTargets() {
		if c.targets.TargetOf(st) == t {
			return st
		}
	}
	return nil
}

// count lists each accepted resource's objects assigned to t with state Sync.
func (c *UpstreamCounter) count(ctx context.Context, t tunnel.Target, st *workloadv1alpha1.SyncTarget) (map[string]int, error) {
	selector := identity.StateLabel(identity.SyncTargetKey(t.Cluster, t.Name)) + "=" + string(identity.ResourceStateSync)
	counts := map[string]int{}
	for _, r := range st.Status.SyncedResources {
		if r.State != workloadv1alpha1.ResourceSchemaAcceptedState || len(r.Versions) == 0 {
			continue
		}
		gvr := schema.GroupVersionResource{Group: r.Group, Version: r.Versions[0], Resource: r.Resource}
		n := 0
		opts := metav1.ListOptions{LabelSelector: selector, Limit: countPageSize}
		for {
			list, err := c.client.Resource(gvr).List(ctx, opts)
			if apierrors.IsForbidden(err) {
				// Not granted to the tunnel server (secrets are left out of its manifest on
				// purpose): that resource is not shown, the others are.
				n = -1
				break
			}
			if err != nil {
				return nil, err
			}
			n += len(list.Items)
			if list.Continue == "" {
				break
			}
			opts.Continue = list.Continue
		}
		if n >= 0 {
			counts[schema.GroupResource{Group: r.Group, Resource: r.Resource}.String()] = n
		}
	}
	return counts, nil
}
