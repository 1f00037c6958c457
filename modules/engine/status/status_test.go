package status

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime/schema"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
)

type fakeInformers []informers.Status

func (f fakeInformers) Status() []informers.Status { return f }

type fakeQueue struct {
	name  string
	len   int
	stats []queue.GVRStats
}

func (f fakeQueue) Name() string            { return f.name }
func (f fakeQueue) Len() int                { return f.len }
func (f fakeQueue) Stats() []queue.GVRStats { return f.stats }

func TestCollectMergesInformersQueuesAndResourceSet(t *testing.T) {
	cm := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	other := schema.GroupVersionResource{Group: "x", Version: "v1", Resource: "other"}
	t1, t2 := time.Unix(10, 0), time.Unix(20, 0)
	set := resources.Set{
		{GroupResource: cm.GroupResource(), Version: "v1", State: workloadv1alpha1.ResourceSchemaAcceptedState},
		{GroupResource: schema.GroupResource{Group: "w", Resource: "widgets"}, State: workloadv1alpha1.ResourceSchemaIncompatibleState, Reason: "nope"},
	}
	inf := fakeInformers{
		{ID: informers.ID{Side: informers.Upstream, GVR: cm}, Synced: true, Objects: 3},
		{ID: informers.ID{Side: informers.Downstream, GVR: cm}, Synced: false, Objects: 1},
		{ID: informers.ID{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true}, Synced: true, Objects: 2},
		{ID: informers.ID{Side: informers.Upstream, GVR: other, MetadataOnly: true}, Synced: true},
	}
	queues := []QueueSource{
		fakeQueue{name: "b", len: 1, stats: []queue.GVRStats{{GVR: cm, Pending: 1, ReconcilesOK: 2, ReconcilesFailed: 1, LastError: "old", LastErrorTime: t1}}},
		fakeQueue{name: "a", stats: []queue.GVRStats{{GVR: cm, Pending: 2, ReconcilesOK: 1, ReconcilesFailed: 1, LastError: "new", LastErrorTime: t2}}},
	}
	snap := Collect(t2, "root|kind", inf, queues, set)

	assert.Equal(t, "root|kind", snap.Target)
	assert.Equal(t, []Controller{{Name: "a"}, {Name: "b", QueueLength: 1}}, snap.Controllers)
	require.Len(t, snap.Resources, 3)
	byRes := map[string]Resource{}
	for _, r := range snap.Resources {
		byRes[r.GVR.Resource] = r
	}
	assert.Equal(t, Resource{
		GVR: cm, State: "Accepted", UpstreamSynced: true, UpstreamObjects: 3, DownstreamObjects: 1,
		QueueDepth: 3, ReconcilesOK: 3, ReconcilesFailed: 2, LastError: "new", LastErrorTime: t2,
	}, byRes["configmaps"])
	assert.Equal(t, "nope", byRes["widgets"].Reason)
	assert.True(t, byRes["namespaces"].DownstreamSynced)
	assert.NotContains(t, byRes, "other", "extra metadata informers outside the set are not reported")
}
