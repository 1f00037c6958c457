package downstream

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// cached returns obj as the engine's informer id caches it.
func cached(t *testing.T, id informers.ID, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	obj = obj.DeepCopy()
	if informers.DefaultKeepManagedFields(id) {
		return obj
	}
	out, err := informers.TrimManagedFields(obj)
	require.NoError(t, err)
	return out.(*unstructured.Unstructured)
}

// The informers trim managedFields before objects enter the caches; every reader of
// cached managedFields still gets what it needs: the take-over from kcp's syncer (its
// manager, and the index of its entry at the cached resourceVersion), the classification
// and drift detection (labels, annotations, content), and the transformation of upstream
// Services (which fields a client set).
func TestCacheTransformKeepsWhatReadersNeed(t *testing.T) {
	target := identity.NewTarget("root:org", "east", "st-uid")
	entry := func(manager, op string, fieldsV1 map[string]any) map[string]any {
		return map[string]any{"manager": manager, "operation": op, "apiVersion": "v1", "time": "2026-01-02T03:04:05Z",
			"fieldsType": "FieldsV1", "fieldsV1": fieldsV1}
	}
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

	t.Run("downstream take-over, classification and drift", func(t *testing.T) {
		desired := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "cm", "namespace": "kcp-abc",
				"labels": map[string]any{identity.DownstreamClusterLabel: target.Key}},
			"data": map[string]any{"a": "1"},
		}}
		live := desired.DeepCopy()
		live.SetResourceVersion("42")
		live.Object["data"] = map[string]any{"a": "2"} // drifted
		require.NoError(t, unstructured.SetNestedSlice(live.Object, []any{
			entry("kubectl-edit", "Update", map[string]any{"f:data": map[string]any{"f:a": map[string]any{}}}),
			entry(conflict.KCPSyncerFieldManager, "Apply", map[string]any{"f:data": map[string]any{"f:a": map[string]any{}}}),
		}, "metadata", "managedFields"))
		inCache := cached(t, informers.ID{Side: informers.Downstream, GVR: gvr}, live)
		require.Nil(t, inCache.GetManagedFields()[0].FieldsV1, "the downstream cache trims fieldsV1")

		assert.True(t, conflict.ManagedBy(inCache, conflict.KCPSyncerFieldManager), "kcp's syncer's entry is found")
		assert.False(t, conflict.ManagedBy(inCache, "kubectl"))
		assert.Equal(t, conflict.Classify(live, target.Key, ownership.Owner{}), conflict.Classify(inCache, target.Key, ownership.Owner{}))
		for _, l := range []*unstructured.Unstructured{live, inCache} {
			_, outcome, err := applier.Plan(applier.Request{GVR: gvr, Desired: desired, Live: l})
			require.NoError(t, err)
			assert.Equal(t, applier.Updated, outcome)
		}
		names := func(u *unstructured.Unstructured) []string {
			var out []string
			for _, e := range u.GetManagedFields() {
				out = append(out, e.Manager+"/"+string(e.Operation))
			}
			return out
		}
		assert.Equal(t, names(live), names(inCache), "entries keep their order: the release removes kcp's syncer's by index")
		assert.Equal(t, live.GetResourceVersion(), inCache.GetResourceVersion())
	})

	t.Run("upstream Service allocations", func(t *testing.T) {
		svc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{"name": "svc", "namespace": "ns", "uid": "svc-uid",
				"labels":      map[string]any{target.StateLabel(): string(identity.ResourceStateSync)},
				"annotations": map[string]any{identity.LogicalClusterAnnotation: "root:org"},
				"managedFields": []any{entry("kubectl", "Apply", map[string]any{"f:spec": map[string]any{"f:ports": map[string]any{
					`k:{"port":80,"protocol":"TCP"}`: map[string]any{"f:nodePort": map[string]any{}},
				}}})}},
			"spec": map[string]any{"type": "NodePort", "clusterIP": "10.0.0.7",
				"ports": []any{map[string]any{"port": int64(80), "protocol": "TCP", "nodePort": int64(30080)}}},
		}}
		tctx := transformation.Context{SyncTargetKey: target.Key, SyncTargetName: target.Name, SyncTargetUID: string(target.UID),
			SyncTargetCluster: target.Cluster, LogicalCluster: target.Cluster}
		id := informers.ID{Side: informers.Upstream, GVR: schema.GroupVersionResource{Version: "v1", Resource: "services"}}
		out, err := transformation.NewPipeline().ToDownstream(tctx, cached(t, id, svc))
		require.NoError(t, err)
		assert.Equal(t, []any{map[string]any{"port": int64(80), "protocol": "TCP", "nodePort": int64(30080)}}, out.Object["spec"].(map[string]any)["ports"],
			"the user-set nodePort goes down")
		assert.NotContains(t, out.Object["spec"], "clusterIP", "the allocated clusterIP does not")

		// Why upstream Services keep their managedFields: trimmed, the nodePort would be lost.
		trimmed, err := informers.TrimManagedFields(svc.DeepCopy())
		require.NoError(t, err)
		out, err = transformation.NewPipeline().ToDownstream(tctx, trimmed.(*unstructured.Unstructured))
		require.NoError(t, err)
		assert.Equal(t, []any{map[string]any{"port": int64(80), "protocol": "TCP"}}, out.Object["spec"].(map[string]any)["ports"])
	})
}
