package cleanup

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

var cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

type recorder struct {
	deleted []string
	err     error
	orphans int
}

func (r *recorder) Delete(_ context.Context, _ schema.GroupVersionResource, ns, name string, uid types.UID, _ metav1.DeletionPropagation) error {
	if r.err != nil {
		return r.err
	}
	r.deleted = append(r.deleted, ns+"/"+name+"@"+string(uid))
	return nil
}

func (r *recorder) OrphanDeleted() { r.orphans++ }

func cm(ns, name, uid string, labels map[string]string, o *ownership.Owner) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name, "namespace": ns, "uid": uid}}}
	u.SetLabels(labels)
	if o != nil {
		u.SetAnnotations(o.Annotations())
	}
	return u
}

func TestOrphansDeletesOnlyObjectsWhoseUpstreamIsGone(t *testing.T) {
	target := identity.NewTarget("root", "east", "st")
	ours := target.DownstreamLabels()
	alive := ownership.Owner{Cluster: "root", Namespace: "team", Name: "alive", UID: "u-alive"}
	cachedAlive := ownership.Owner{Cluster: "root", Namespace: "team", Name: "cached", UID: "u-cached"}
	gone := ownership.Owner{Cluster: "root", Namespace: "team", Name: "gone", UID: "u-gone"}
	recreated := ownership.Owner{Cluster: "root", Namespace: "team", Name: "recreated", UID: "u-old"}
	// Same namespace, name and UID as the cached object, in another logical cluster.
	otherCluster := ownership.Owner{Cluster: "root:other", Namespace: "team", Name: "cached", UID: "u-cached"}

	down := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range []*unstructured.Unstructured{
		cm("kcp-x", "alive", "d1", ours, &alive),
		cm("kcp-x", "cached", "d2", ours, &cachedAlive),
		cm("kcp-x", "gone", "d3", ours, &gone),
		cm("kcp-x", "recreated", "d4", ours, &recreated),
		cm("kcp-x", "not-ours", "d5", map[string]string{identity.DownstreamClusterLabel: "other"}, &gone),
		cm("kcp-x", "no-owner", "d6", ours, nil),
		cm("kcp-y", "cached", "d7", ours, &otherCluster),
	} {
		require.NoError(t, down.Add(o))
	}
	upCache := cache.NewIndexer(informers.StoreKeyFunc("root"), cache.Indexers{})
	require.NoError(t, upCache.Add(cm("team", "cached", "u-cached", nil, nil)))
	up := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList"},
		cm("team", "alive", "u-alive", nil, nil), cm("team", "recreated", "u-new", nil, nil))

	r := &recorder{}
	n, err := Orphans(context.Background(), target, []Resource{{GVR: cmGVR, Downstream: down, Upstream: upCache}}, up, r, r)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.ElementsMatch(t, []string{"kcp-x/gone@d3", "kcp-x/recreated@d4", "kcp-y/cached@d7"}, r.deleted)
	assert.Equal(t, 3, r.orphans)
	gets := 0
	for _, a := range up.Actions() {
		if a.(clienttesting.GetAction).GetName() == "cached" {
			gets++
		}
	}
	assert.Equal(t, 1, gets, "only the owner in the other cluster is looked up: the cached one needs no request")

	r = &recorder{err: errors.New("denied")}
	_, err = Orphans(context.Background(), target, []Resource{{GVR: cmGVR, Downstream: down}}, up, r, nil)
	require.ErrorContains(t, err, "denied")

	failing := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList"})
	failing.PrependReactor("get", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("upstream down")
	})
	n, err = Orphans(context.Background(), target, []Resource{{GVR: cmGVR, Downstream: down}}, failing, &recorder{}, nil)
	require.ErrorContains(t, err, "upstream down")
	assert.Zero(t, n, "nothing is deleted when upstream cannot be read")
}
