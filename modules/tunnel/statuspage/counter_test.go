package statuspage

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

func TestUpstreamCounterCountsObjectsAssignedWithStateSync(t *testing.T) {
	east := tunnel.Target{Cluster: "root:org", Name: "east"}
	key := identity.SyncTargetKey(east.Cluster, east.Name)
	other := identity.SyncTargetKey(east.Cluster, "west")
	obj := func(gvr schema.GroupVersionResource, kind, name string, labels map[string]string) runtime.Object {
		return &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: gvr.GroupVersion().String(), Kind: kind},
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Labels: labels},
		}
	}
	cm := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	deploy := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	scheme := metadatafake.NewTestScheme()
	_ = metav1.AddMetaToScheme(scheme)
	client := metadatafake.NewSimpleMetadataClient(scheme,
		obj(cm, "ConfigMap", "a", map[string]string{identity.StateLabel(key): "Sync"}),
		obj(cm, "ConfigMap", "b", map[string]string{identity.StateLabel(key): "Sync"}),
		obj(cm, "ConfigMap", "pending", map[string]string{identity.StateLabel(key): ""}),
		obj(cm, "ConfigMap", "theirs", map[string]string{identity.StateLabel(other): "Sync"}),
		obj(deploy, "Deployment", "web", map[string]string{identity.StateLabel(key): "Sync"}),
	)
	st := &workloadv1alpha1.SyncTarget{ObjectMeta: metav1.ObjectMeta{Name: "east", Annotations: map[string]string{"kcp.io/cluster": "root:org"}}}
	st.Status.SyncedResources = []workloadv1alpha1.ResourceToSync{
		{GroupResource: metav1.GroupResource{Resource: "configmaps"}, Versions: []string{"v1"}, State: workloadv1alpha1.ResourceSchemaAcceptedState},
		{GroupResource: metav1.GroupResource{Group: "apps", Resource: "deployments"}, Versions: []string{"v1"}, State: workloadv1alpha1.ResourceSchemaAcceptedState},
		{GroupResource: metav1.GroupResource{Group: "test.io", Resource: "widgets"}, Versions: []string{"v1"}, State: workloadv1alpha1.ResourceSchemaIncompatibleState},
	}
	clk := clocktesting.NewFakeClock(now)
	c := NewUpstreamCounter(client, fakeTargets{st}, CounterOptions{TTL: 30 * time.Second, Clock: clk})
	ctx := context.Background()

	want := map[string]int{"configmaps": 2, "deployments.apps": 1}
	assert.Equal(t, want, c.SyncedObjects(ctx, east), "only state Sync for this target, only accepted resources")
	assert.Nil(t, c.SyncedObjects(ctx, tunnel.Target{Cluster: "root:org", Name: "unknown"}), "no SyncTarget, no counts")

	// A resource the server may not list is left out; the others are still counted.
	forbidden := metadatafake.NewSimpleMetadataClient(scheme, obj(cm, "ConfigMap", "a", map[string]string{identity.StateLabel(key): "Sync"}))
	forbidden.PrependReactor("list", "deployments", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "", errors.New("no"))
	})
	assert.Equal(t, map[string]int{"configmaps": 1},
		NewUpstreamCounter(forbidden, fakeTargets{st}, CounterOptions{Clock: clk}).SyncedObjects(ctx, east))

	lists := 0
	client.PrependReactor("list", "*", func(clienttesting.Action) (bool, runtime.Object, error) {
		lists++
		return true, nil, errors.New("forbidden")
	})
	assert.Equal(t, want, c.SyncedObjects(ctx, east), "within the TTL the last counts are reused")
	assert.Zero(t, lists)
	clk.Step(31 * time.Second)
	assert.Equal(t, want, c.SyncedObjects(ctx, east), "a failed count keeps the previous one")
	assert.Positive(t, lists)
}

func TestUpstreamCounterCountsOncePerTTLWhateverTheViewersAndFailures(t *testing.T) {
	east := tunnel.Target{Cluster: "root:org", Name: "east"}
	st := &workloadv1alpha1.SyncTarget{ObjectMeta: metav1.ObjectMeta{Name: "east", Annotations: map[string]string{"kcp.io/cluster": "root:org"}}}
	st.Status.SyncedResources = []workloadv1alpha1.ResourceToSync{
		{GroupResource: metav1.GroupResource{Resource: "configmaps"}, Versions: []string{"v1"}, State: workloadv1alpha1.ResourceSchemaAcceptedState},
	}
	scheme := metadatafake.NewTestScheme()
	_ = metav1.AddMetaToScheme(scheme)
	client := metadatafake.NewSimpleMetadataClient(scheme)
	var lists atomic.Int64
	release := make(chan struct{})
	fail := atomic.Bool{}
	client.PrependReactor("list", "*", func(clienttesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		<-release
		if fail.Load() {
			return true, nil, errors.New("upstream down")
		}
		return false, nil, nil // the fake's tracker answers: an empty list
	})
	clk := clocktesting.NewFakeClock(now)
	c := NewUpstreamCounter(client, fakeTargets{st}, CounterOptions{TTL: 30 * time.Second, Clock: clk})

	// Twenty viewers at once: one count.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { assert.Equal(t, map[string]int{"configmaps": 0}, c.SyncedObjects(context.Background(), east)) })
	}
	time.Sleep(50 * time.Millisecond) // let them all queue behind the first
	close(release)
	wg.Wait()
	assert.EqualValues(t, 1, lists.Load(), "concurrent views share one count")

	// A failed count is remembered too: no list again until the TTL is over.
	fail.Store(true)
	clk.Step(31 * time.Second)
	assert.Equal(t, map[string]int{"configmaps": 0}, c.SyncedObjects(context.Background(), east), "the previous counts stay")
	assert.EqualValues(t, 2, lists.Load())
	for range 10 {
		c.SyncedObjects(context.Background(), east)
	}
	assert.EqualValues(t, 2, lists.Load(), "a failure is not retried on every view")
	clk.Step(31 * time.Second)
	c.SyncedObjects(context.Background(), east)
	assert.EqualValues(t, 3, lists.Load())
}
