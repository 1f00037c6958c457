package informers

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

var services = schema.GroupVersionResource{Version: "v1", Resource: "services"}

// managedFieldsJSON is what an apiserver returns for an object written by a client with
// server-side apply, by kcp's syncer with apply and by us with a status update.
const managedFieldsJSON = `[
 {"manager":"kubectl","operation":"Apply","apiVersion":"v1","time":"2026-01-02T03:04:05Z","fieldsType":"FieldsV1",
  "fieldsV1":{"f:data":{"f:a":{},"f:b":{}},"f:metadata":{"f:labels":{"f:app":{}}}}},
 {"manager":"syncer","operation":"Apply","apiVersion":"v1","time":"2026-01-02T03:04:05Z","fieldsType":"FieldsV1",
  "fieldsV1":{"f:data":{"f:a":{}}}},
 {"manager":"tmc-syncer","operation":"Update","apiVersion":"v1","time":"2026-01-02T03:04:05Z","fieldsType":"FieldsV1",
  "fieldsV1":{"f:status":{}},"subresource":"status"}
]`

func withManagedFields(t testing.TB, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	var entries []any
	require.NoError(t, json.Unmarshal([]byte(managedFieldsJSON), &entries))
	require.NoError(t, unstructured.SetNestedSlice(u.Object, entries, "metadata", "managedFields"))
	return u
}

func TestTrimManagedFieldsKeepsWhoManagesInOrder(t *testing.T) {
	u := withManagedFields(t, object("ConfigMap", "ns", "cm", nil, nil))
	out, err := TrimManagedFields(u)
	require.NoError(t, err)
	got := out.(*unstructured.Unstructured).GetManagedFields()
	want := []metav1.ManagedFieldsEntry{
		{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply},
		{Manager: "syncer", Operation: metav1.ManagedFieldsOperationApply},
		{Manager: "tmc-syncer", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"},
	}
	assert.Equal(t, want, got, "every entry stays, in order (the take-over removes entries by index)")

	again, err := TrimManagedFields(out)
	require.NoError(t, err)
	assert.Equal(t, want, again.(*unstructured.Unstructured).GetManagedFields(), "idempotent")

	pom := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "cm", ManagedFields: withManagedFields(t, object("ConfigMap", "ns", "cm", nil, nil)).GetManagedFields()}}
	out, err = TrimManagedFields(pom)
	require.NoError(t, err)
	assert.Equal(t, want, out.(*metav1.PartialObjectMetadata).ManagedFields)

	for _, odd := range []any{
		cache.DeletedFinalStateUnknown{Key: "ns/cm", Obj: u},
		&unstructured.Unstructured{Object: map[string]any{}},
		&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"managedFields": "junk"}}},
		&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"managedFields": []any{"junk", nil}}}},
	} {
		res, err := TrimManagedFields(odd)
		require.NoError(t, err)
		assert.Equal(t, odd, res, "passed through: %v", odd)
	}
}

func TestDefaultKeepManagedFields(t *testing.T) {
	for _, tt := range []struct {
		id   ID
		keep bool
	}{
		{ID{Side: Upstream, GVR: services}, true},
		{ID{Side: Upstream, GVR: services, MetadataOnly: true}, false},
		{ID{Side: Downstream, GVR: services}, false},
		{ID{Side: Upstream, GVR: configmaps}, false},
		{ID{Side: Upstream, GVR: schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}}, false},
	} {
		assert.Equal(t, tt.keep, DefaultKeepManagedFields(tt.id), "%s", tt.id)
	}
}

func TestManagerCachesTrimmedManagedFields(t *testing.T) {
	lbls := map[string]string{target.StateLabel(): "Sync", identity.DownstreamClusterLabel: target.Key}
	objs := func() *dynamicfakeObjects {
		return &dynamicfakeObjects{
			cm:  withManagedFields(t, object("ConfigMap", "ns", "cm", lbls, nil)),
			svc: withManagedFields(t, object("Service", "ns", "svc", lbls, nil)),
		}
	}
	up, down := objs(), objs()
	fake := func(o *dynamicfakeObjects) Clients {
		return Clients{Dynamic: newFakeDynamic(o.cm, o.svc)}
	}
	for _, tt := range []struct {
		name string
		keep KeepManagedFieldsFunc
		// full lists the informers whose cache keeps whole managedFields.
		full []ID
	}{
		{name: "default", full: []ID{{Side: Upstream, GVR: services}}},
		{name: "keep all", keep: func(ID) bool { return true }, full: []ID{
			{Side: Upstream, GVR: services}, {Side: Upstream, GVR: configmaps},
			{Side: Downstream, GVR: services}, {Side: Downstream, GVR: configmaps},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := NewManager(Options{Target: target, Upstream: fake(up), Downstream: fake(down), KeepManagedFields: tt.keep})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			defer m.StopAll()
			for _, side := range []Side{Upstream, Downstream} {
				for _, gvr := range []schema.GroupVersionResource{configmaps, services} {
					id := ID{Side: side, GVR: gvr}
					_, err := m.Start(ctx, id)
					require.NoError(t, err)
					require.True(t, m.WaitForSync(ctx, id))
					name := map[schema.GroupVersionResource]string{configmaps: "cm", services: "svc"}[gvr]
					obj, ok, err := m.Get(id, target.Cluster, "ns", name)
					require.NoError(t, err)
					require.True(t, ok, "%s: %s cached", id, name)
					entries := obj.GetManagedFields()
					require.Len(t, entries, 3, "%s: every entry kept", id)
					assert.Equal(t, []string{"kubectl", "syncer", "tmc-syncer"}, []string{entries[0].Manager, entries[1].Manager, entries[2].Manager})
					full := false
					for _, f := range tt.full {
						full = full || f == id
					}
					if full {
						assert.NotNil(t, entries[0].FieldsV1, "%s keeps fieldsV1", id)
					} else {
						assert.Nil(t, entries[0].FieldsV1, "%s trims fieldsV1", id)
						assert.Nil(t, entries[0].Time, "%s trims time", id)
					}
				}
			}
		})
	}
}

type dynamicfakeObjects struct{ cm, svc *unstructured.Unstructured }

// BenchmarkCachedObjectBytes reports the heap an informer cache retains per object (the
// objects decoded from JSON as the watch does), with whole managedFields ("whole") and
// trimmed by TrimManagedFields ("trimmed"), for a ConfigMap and a Deployment as written by
// a client with server-side apply and synced by us.
func BenchmarkCachedObjectBytes(b *testing.B) {
	const n = 2000
	for _, kind := range []string{"configmap", "deployment"} {
		raw := benchObjectJSON(b, kind)
		for _, mode := range []string{"whole", "trimmed", "interned"} {
			b.Run(kind+"/"+mode, func(b *testing.B) {
				var perObject float64
				for b.Loop() {
					perObject = retainedPerObject(b, raw, n, mode)
				}
				b.ReportMetric(perObject, "B/object")
			})
		}
	}
}

func retainedPerObject(b *testing.B, raw []byte, n int, mode string) float64 {
	b.Helper()
	store := cache.NewStore(cache.MetaNamespaceKeyFunc)
	in := NewInterner()
	before := heapInUse()
	for i := range n {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			b.Fatal(err)
		}
		u.SetName(fmt.Sprintf("obj-%05d", i))
		var obj any = u
		if mode != "whole" {
			obj, _ = TrimManagedFields(u)
		}
		if mode == "interned" {
			obj, _ = in.Transform(obj)
		}
		if err := store.Add(obj); err != nil {
			b.Fatal(err)
		}
	}
	after := heapInUse()
	runtime.KeepAlive(store)
	return float64(after-before) / float64(n)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func benchObjectJSON(b *testing.B, kind string) []byte {
	b.Helper()
	var obj map[string]any
	switch kind {
	case "configmap":
		data := map[string]any{}
		fields := map[string]any{}
		for i := range 8 {
			k := fmt.Sprintf("setting-%d.properties", i)
			data[k] = fmt.Sprintf("value-%d=%0100d", i, i)
			fields["f:"+k] = map[string]any{}
		}
		obj = map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{
				"name": "x", "namespace": "team-a", "uid": "0d3c6a5e-2f4b-4c1d-9e7a-3b2c1d0e9f8a", "resourceVersion": "123456",
				"creationTimestamp": "2026-01-02T03:04:05Z",
				"labels":            map[string]any{"app": "web", "internal.workload.kcp.io/cluster": "2EGuxNnGALDkPDsOxHBRMKZ9ssYbQz8I6pbxOc"},
				"annotations":       map[string]any{"syncer.tmc.dev/applied-hash": "5c5b9f0c0e6e4a7f8d3b2a1c0d9e8f7a"},
				"managedFields": []any{
					managedEntry("kubectl", "Apply", map[string]any{"f:data": fields, "f:metadata": map[string]any{"f:labels": map[string]any{"f:app": map[string]any{}}}}),
					managedEntry("tmc-syncer", "Apply", map[string]any{"f:data": fields, "f:metadata": map[string]any{
						"f:annotations": map[string]any{"f:syncer.tmc.dev/applied-hash": map[string]any{}},
						"f:labels":      map[string]any{"f:app": map[string]any{}, "f:internal.workload.kcp.io/cluster": map[string]any{}},
					}}),
				},
			},
			"data": data,
		}
	case "deployment":
		container := map[string]any{
			"name": "web", "image": "registry.example.com/team/web:1.2.3", "imagePullPolicy": "IfNotPresent",
			"ports":                  []any{map[string]any{"containerPort": int64(8080), "protocol": "TCP", "name": "http"}},
			"resources":              map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "128Mi"}},
			"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
			"env": []any{map[string]any{"name": "MODE", "value": "production"}, map[string]any{"name": "LOG_LEVEL", "value": "info"}},
		}
		spec := map[string]any{
			"f:replicas": map[string]any{}, "f:selector": map[string]any{},
			"f:template": map[string]any{"f:metadata": map[string]any{"f:labels": map[string]any{"f:app": map[string]any{}}},
				"f:spec": map[string]any{"f:containers": map[string]any{`k:{"name":"web"}`: map[string]any{
					".": map[string]any{}, "f:image": map[string]any{}, "f:name": map[string]any{}, "f:imagePullPolicy": map[string]any{},
					"f:env": map[string]any{`k:{"name":"MODE"}`: map[string]any{".": map[string]any{}, "f:name": map[string]any{}, "f:value": map[string]any{}},
						`k:{"name":"LOG_LEVEL"}`: map[string]any{".": map[string]any{}, "f:name": map[string]any{}, "f:value": map[string]any{}}},
					"f:ports":     map[string]any{`k:{"containerPort":8080,"protocol":"TCP"}`: map[string]any{".": map[string]any{}, "f:containerPort": map[string]any{}, "f:name": map[string]any{}, "f:protocol": map[string]any{}}},
					"f:resources": map[string]any{"f:requests": map[string]any{"f:cpu": map[string]any{}, "f:memory": map[string]any{}}},
				}}}},
		}
		status := map[string]any{"f:availableReplicas": map[string]any{}, "f:conditions": map[string]any{
			".": map[string]any{}, `k:{"type":"Available"}`: map[string]any{".": map[string]any{}, "f:lastTransitionTime": map[string]any{}, "f:lastUpdateTime": map[string]any{}, "f:message": map[string]any{}, "f:reason": map[string]any{}, "f:status": map[string]any{}, "f:type": map[string]any{}},
			`k:{"type":"Progressing"}`: map[string]any{".": map[string]any{}, "f:lastTransitionTime": map[string]any{}, "f:lastUpdateTime": map[string]any{}, "f:message": map[string]any{}, "f:reason": map[string]any{}, "f:status": map[string]any{}, "f:type": map[string]any{}},
		}, "f:observedGeneration": map[string]any{}, "f:readyReplicas": map[string]any{}, "f:replicas": map[string]any{}, "f:updatedReplicas": map[string]any{}}
		condition := func(t, reason string) map[string]any {
			return map[string]any{"type": t, "status": "True", "reason": reason, "message": "Deployment has minimum availability.",
				"lastTransitionTime": "2026-01-02T03:04:05Z", "lastUpdateTime": "2026-01-02T03:04:05Z"}
		}
		obj = map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{
				"name": "x", "namespace": "team-a", "uid": "0d3c6a5e-2f4b-4c1d-9e7a-3b2c1d0e9f8a", "resourceVersion": "123456",
				"generation": int64(3), "creationTimestamp": "2026-01-02T03:04:05Z",
				"labels":      map[string]any{"app": "web", "internal.workload.kcp.io/cluster": "2EGuxNnGALDkPDsOxHBRMKZ9ssYbQz8I6pbxOc"},
				"annotations": map[string]any{"syncer.tmc.dev/applied-hash": "5c5b9f0c0e6e4a7f8d3b2a1c0d9e8f7a", "deployment.kubernetes.io/revision": "1"},
				"managedFields": []any{
					managedEntry("tmc-syncer", "Apply", map[string]any{"f:metadata": map[string]any{
						"f:annotations": map[string]any{"f:syncer.tmc.dev/applied-hash": map[string]any{}},
						"f:labels":      map[string]any{"f:app": map[string]any{}, "f:internal.workload.kcp.io/cluster": map[string]any{}},
					}, "f:spec": spec}),
					managedEntry("kube-controller-manager", "Update", map[string]any{"f:metadata": map[string]any{"f:annotations": map[string]any{".": map[string]any{}, "f:deployment.kubernetes.io/revision": map[string]any{}}}}),
					withSubresource(managedEntry("kube-controller-manager", "Update", map[string]any{"f:status": status}), "status"),
				},
			},
			"spec": map[string]any{
				"replicas": int64(2), "revisionHistoryLimit": int64(10), "progressDeadlineSeconds": int64(600),
				"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
				"strategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": "25%", "maxUnavailable": "25%"}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
					"spec": map[string]any{"containers": []any{container}, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
						"schedulerName": "default-scheduler", "terminationGracePeriodSeconds": int64(30), "securityContext": map[string]any{}},
				},
			},
			"status": map[string]any{"observedGeneration": int64(3), "replicas": int64(2), "readyReplicas": int64(2), "availableReplicas": int64(2),
				"updatedReplicas": int64(2), "conditions": []any{condition("Available", "MinimumReplicasAvailable"), condition("Progressing", "NewReplicaSetAvailable")}},
		}
	default:
		b.Fatalf("unknown kind %s", kind)
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

func managedEntry(manager, operation string, fieldsV1 map[string]any) map[string]any {
	return map[string]any{"manager": manager, "operation": operation, "apiVersion": "v1", "time": "2026-01-02T03:04:05Z",
		"fieldsType": "FieldsV1", "fieldsV1": fieldsV1}
}

func withSubresource(e map[string]any, sub string) map[string]any {
	e["subresource"] = sub
	return e
}
