// Package status assembles a point-in-time snapshot of the engine — per
// resource: informer sync state and object counts on both sides, queue depth,
// reconcile counters and the last error — for health endpoints and metrics.
package status

import (
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
)

// Snapshot is the engine's state at Time.
type Snapshot struct {
	Time time.Time
	// Target is "<cluster>|<name>" of the SyncTarget.
	Target      string
	Resources   []Resource
	Controllers []Controller
}

// Resource is the state of one resource.
type Resource struct {
	GVR schema.GroupVersionResource
	// State is Accepted or Incompatible; Reason explains Incompatible. Empty for
	// resources that are not part of the resource set (e.g. namespaces).
	State  string
	Reason string

	UpstreamSynced    bool
	DownstreamSynced  bool
	UpstreamObjects   int
	DownstreamObjects int
	// QueueDepth counts keys of this resource queued or waiting for a retry, over all controllers.
	QueueDepth       int
	ReconcilesOK     int64
	ReconcilesFailed int64
	LastError        string
	LastErrorTime    time.Time
}

// Controller is the state of one controller's queue.
type Controller struct {
	Name        string
	QueueLength int
}

// InformerSource reports informer states; *informers.Manager implements it.
type InformerSource interface {
	Status() []informers.Status
}

// QueueSource reports a controller's queue; *queue.Runner implements it.
type QueueSource interface {
	Name() string
	Len() int
	Stats() []queue.GVRStats
}

// Collect builds a snapshot from the informers, the controllers' queues and the resource set.
func Collect(now time.Time, target string, inf InformerSource, queues []QueueSource, set resources.Set) Snapshot {
	byGVR := map[schema.GroupVersionResource]*Resource{}
	get := func(gvr schema.GroupVersionResource) *Resource {
		r, ok := byGVR[gvr]
		if !ok {
			r = &Resource{GVR: gvr}
			byGVR[gvr] = r
		}
		return r
	}
	for _, r := range set {
		// Incompatible resources have no version; they are reported by group-resource.
		e := get(r.GVR())
		e.State, e.Reason = string(r.State), r.Reason
	}
	if inf != nil {
		for _, s := range inf.Status() {
			if s.ID.MetadataOnly && byGVR[s.ID.GVR] == nil && s.ID.GVR != informers.NamespacesGVR {
				continue
			}
			e := get(s.ID.GVR)
			switch s.ID.Side {
			case informers.Upstream:
				e.UpstreamSynced, e.UpstreamObjects = s.Synced, s.Objects
			case informers.Downstream:
				e.DownstreamSynced, e.DownstreamObjects = s.Synced, s.Objects
			}
		}
	}
	snap := Snapshot{Time: now, Target: target}
	for _, q := range queues {
		snap.Controllers = append(snap.Controllers, Controller{Name: q.Name(), QueueLength: q.Len()})
		for _, st := range q.Stats() {
			e := get(st.GVR)
			e.QueueDepth += st.Pending
			e.ReconcilesOK += st.ReconcilesOK
			e.ReconcilesFailed += st.ReconcilesFailed
			if st.LastErrorTime.After(e.LastErrorTime) {
				e.LastError, e.LastErrorTime = st.LastError, st.LastErrorTime
			}
		}
	}
	for _, r := range byGVR {
		snap.Resources = append(snap.Resources, *r)
	}
	sort.Slice(snap.Resources, func(i, j int) bool { return snap.Resources[i].GVR.String() < snap.Resources[j].GVR.String() })
	sort.Slice(snap.Controllers, func(i, j int) bool { return snap.Controllers[i].Name < snap.Controllers[j].Name })
	return snap
}
