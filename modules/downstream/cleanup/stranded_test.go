package cleanup

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

func TestStrandedEnqueuesUnassignedObjectsThatKeepOurFinalizer(t *testing.T) {
	target := identity.NewTarget("root", "east", "st")
	other := identity.NewTarget("root", "west", "st2")
	obj := func(name string, labels map[string]string, finalizers ...string) runtime.Object {
		u := cm("team", name, "u-"+name, labels, nil)
		u.SetFinalizers(finalizers)
		return u
	}
	up := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList"},
		// Stranded: our finalizer, our state label gone (moved to another target).
		obj("moved", map[string]string{other.StateLabel(): "Sync"}, target.SyncerFinalizer(), "keep.me/too"),
		// Stranded: our finalizer, no labels at all.
		obj("bare", nil, target.SyncerFinalizer()),
		// Still assigned: the informers see it, the sweep leaves it alone.
		obj("assigned", map[string]string{target.StateLabel(): "Sync"}, target.SyncerFinalizer()),
		// Another target's finalizer only.
		obj("theirs", map[string]string{other.StateLabel(): "Sync"}, other.SyncerFinalizer()),
		// Unrelated.
		obj("plain", nil),
	)
	var keys []queue.Key
	n, err := Stranded(context.Background(), target, []schema.GroupVersionResource{cmGVR}, up,
		func(*unstructured.Unstructured) string { return "root:ws" }, func(k queue.Key) { keys = append(keys, k) })
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.ElementsMatch(t, []queue.Key{
		{Direction: queue.Down, GVR: cmGVR, Cluster: "root:ws", Namespace: "team", Name: "moved"},
		{Direction: queue.Down, GVR: cmGVR, Cluster: "root:ws", Namespace: "team", Name: "bare"},
	}, keys)
}

func TestStrandedReportsListErrors(t *testing.T) {
	target := identity.NewTarget("root", "east", "st")
	up := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList"})
	up.PrependReactor("list", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("boom")
	})
	_, err := Stranded(context.Background(), target, []schema.GroupVersionResource{cmGVR}, up,
		func(*unstructured.Unstructured) string { return "" }, func(queue.Key) { t.Fatal("nothing to enqueue") })
	require.ErrorContains(t, err, "boom")
	assert.ErrorContains(t, err, "configmaps")
}
