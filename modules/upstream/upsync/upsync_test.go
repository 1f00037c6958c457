package upsync

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

var (
	target   = identity.NewTarget("root:loc", "cluster-1", "st-uid")
	listKind = map[schema.GroupVersionResource]string{
		PodsGVR: "PodList", PersistentVolumesGVR: "PersistentVolumeList", EndpointsGVR: "EndpointsList", ServicesGVR: "ServiceList",
	}
)

const (
	team    = "root:team"
	downNS  = "kcp-0123456789ab"
	otherNS = "kcp-ba9876543210"
)

func locatorJSON(t *testing.T, st identity.Target, cluster, ns string) string {
	t.Helper()
	s, err := st.Locator(cluster, ns).JSON()
	require.NoError(t, err)
	return s
}

// fakeInformers serves the downstream caches from maps, as the engine's manager would.
type fakeInformers struct {
	objs map[informers.ID]map[string]metav1.Object
}

func newFakeInformers() *fakeInformers {
	return &fakeInformers{objs: map[informers.ID]map[string]metav1.Object{}}
}

func (f *fakeInformers) add(id informers.ID, obj metav1.Object) {
	if f.objs[id] == nil {
		f.objs[id] = map[string]metav1.Object{}
	}
	f.objs[id][cacheKey(obj.GetNamespace(), obj.GetName())] = obj
}

func (f *fakeInformers) Start(context.Context, informers.ID) (cache.SharedIndexInformer, error) {
	return nil, nil
}

func (f *fakeInformers) Get(id informers.ID, _, namespace, name string) (metav1.Object, bool, error) {
	o, ok := f.objs[id][cacheKey(namespace, name)]
	return o, ok, nil
}

func (f *fakeInformers) DownstreamNamespace(cluster, namespace string) (string, bool, error) {
	for _, o := range f.objs[namespacesID] {
		loc, ok, err := identity.LocatorOf(o)
		if err == nil && ok && loc.Cluster == cluster && loc.Namespace == namespace {
			return o.GetName(), true, nil
		}
	}
	return "", false, nil
}

func namespaceMeta(name, locator string) *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: target.DownstreamLabels()}}
	if locator != "" {
		ns.Annotations = map[string]string{identity.NamespaceLocatorAnnotation: locator}
	}
	return ns
}

// downPod is a Pod in the downstream namespace, labelled Upsync unless labels says otherwise.
func downPod(rv string, labels map[string]string, status map[string]any) *unstructured.Unstructured {
	if labels == nil {
		labels = map[string]string{target.StateLabel(): "Upsync", identity.DownstreamClusterLabel: target.Key, "app": "web"}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{
			"name": "web-1", "namespace": downNS, "uid": "down-uid", "resourceVersion": rv, "generateName": "web-",
			"ownerReferences": []any{map[string]any{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs"}},
		},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "nginx"}}},
	}}
	u.SetLabels(labels)
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

// upPod is an upstream copy made from downstream resourceVersion rv ("-" = no annotation).
func upPod(rv string, status map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{
			"name": "web-1", "namespace": "default", "uid": "up-uid", "resourceVersion": "77",
			"labels":      map[string]any{target.StateLabel(): "Upsync", "app": "web"},
			"annotations": map[string]any{identity.LogicalClusterAnnotation: team},
			"finalizers":  []any{target.SyncerFinalizer()},
		},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "nginx"}}},
	}}
	if rv != "-" {
		u.SetAnnotations(map[string]string{identity.LogicalClusterAnnotation: team, ResourceVersionAnnotation: rv})
	}
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

type fixture struct {
	c    *Controller
	inf  *fakeInformers
	up   *dynamicfake.FakeDynamicClient
	down *dynamicfake.FakeDynamicClient
	upC  cache.SharedIndexInformer
}

func newFixture(t *testing.T, kcp bool, upObjs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{inf: newFakeInformers()}
	f.up = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKind, upObjs...)
	f.down = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKind)
	c, err := New(Config{Target: target, FromCluster: "root:loc", KCP: kcp, Informers: f.inf, Upstream: f.up, Downstream: f.down})
	require.NoError(t, err)
	f.c = c
	for _, gvr := range Upsyncable() {
		inf := informers.NewClusterInformer(informers.DynamicListWatch(f.up, gvr, ""), &unstructured.Unstructured{}, informers.ClusterInformerOptions{FromCluster: "root:loc"})
		c.upstream[gvr] = inf
		if gvr == PodsGVR {
			f.upC = inf
		}
	}
	for _, o := range upObjs {
		if u, ok := o.(*unstructured.Unstructured); ok && u.GetKind() == "Pod" {
			require.NoError(t, f.upC.GetStore().Add(u))
		}
	}
	f.inf.add(namespacesID, namespaceMeta(downNS, locatorJSON(t, target, team, "default")))
	return f
}

func writes(c *dynamicfake.FakeDynamicClient) []clienttesting.Action {
	var out []clienttesting.Action
	for _, a := range c.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			out = append(out, a)
		}
	}
	return out
}

func verbs(actions []clienttesting.Action) []string {
	out := make([]string, 0, len(actions))
	for _, a := range actions {
		v := a.GetVerb()
		if s := a.GetSubresource(); s != "" {
			v += "/" + s
		}
		out = append(out, v)
	}
	return out
}

func objectOf(t *testing.T, a clienttesting.Action) *unstructured.Unstructured {
	t.Helper()
	if w, ok := a.(interface{ GetObject() runtime.Object }); ok {
		return w.GetObject().(*unstructured.Unstructured)
	}
	t.Fatalf("action %s carries no object", a.GetVerb())
	return nil
}

var podKey = queue.Key{Direction: queue.Up, GVR: PodsGVR, Cluster: team, Namespace: "default", Name: "web-1"}

func TestReconcilePods(t *testing.T) {
	running := map[string]any{"phase": "Running"}
	pending := map[string]any{"phase": "Pending"}
	deleting := func(u *unstructured.Unstructured) *unstructured.Unstructured {
		now := metav1.Now()
		u.SetDeletionTimestamp(&now)
		return u
	}
	tests := []struct {
		name      string
		down      *unstructured.Unstructured
		up        *unstructured.Unstructured
		wantVerbs []string
		wantErr   bool
		check     func(t *testing.T, actions []clienttesting.Action)
	}{
		{
			name: "create: a labelled downstream Pod without status goes up in one write",
			down: downPod("10", nil, nil), wantVerbs: []string{"create"},
			check: func(t *testing.T, a []clienttesting.Action) {
				got := objectOf(t, a[0])
				assert.Equal(t, "default", got.GetNamespace(), "the upstream namespace of the locator")
				assert.Equal(t, "10", got.GetAnnotations()[ResourceVersionAnnotation])
				assert.Equal(t, map[string]string{target.StateLabel(): "Upsync", "app": "web"}, got.GetLabels(), "the downstream cluster label stays down")
				assert.Equal(t, []string{target.SyncerFinalizer()}, got.GetFinalizers())
				assert.Empty(t, got.GetUID())
				assert.Empty(t, got.GetResourceVersion())
				assert.Empty(t, got.GetOwnerReferences())
				assert.Empty(t, got.GetGenerateName())
				assert.NotContains(t, got.Object, "status")
			},
		},
		{
			name: "create with status: create, status, then the rv annotation",
			down: downPod("10", nil, running), wantVerbs: []string{"create", "update/status", "update"},
			check: func(t *testing.T, a []clienttesting.Action) {
				assert.Empty(t, objectOf(t, a[0]).GetAnnotations()[ResourceVersionAnnotation], "not up to date before its status")
				assert.Equal(t, running, objectOf(t, a[1]).Object["status"])
				assert.Empty(t, objectOf(t, a[1]).GetAnnotations()[ResourceVersionAnnotation])
				assert.Equal(t, "10", objectOf(t, a[2]).GetAnnotations()[ResourceVersionAnnotation])
			},
		},
		{
			name: "update: a new downstream resourceVersion, same status: one update carrying the upstream rv and uid",
			down: downPod("11", map[string]string{target.StateLabel(): "Upsync", identity.DownstreamClusterLabel: target.Key, "app": "web", "tier": "front"}, running),
			up:   upPod("10", running), wantVerbs: []string{"update"},
			check: func(t *testing.T, a []clienttesting.Action) {
				got := objectOf(t, a[0])
				assert.Equal(t, "11", got.GetAnnotations()[ResourceVersionAnnotation])
				assert.Equal(t, "front", got.GetLabels()["tier"], "the label change goes up")
				assert.Equal(t, "77", got.GetResourceVersion())
				assert.Equal(t, "up-uid", string(got.GetUID()))
			},
		},
		{
			name: "update with a changed status: status first, then the rv annotation",
			down: downPod("11", nil, running), up: upPod("10", pending), wantVerbs: []string{"update/status", "update"},
			check: func(t *testing.T, a []clienttesting.Action) {
				assert.Equal(t, "10", objectOf(t, a[0]).GetAnnotations()[ResourceVersionAnnotation])
				assert.Equal(t, running, objectOf(t, a[0]).Object["status"])
				assert.Equal(t, "11", objectOf(t, a[1]).GetAnnotations()[ResourceVersionAnnotation])
			},
		},
		{name: "no-op: the rv annotation is the downstream resourceVersion", down: downPod("10", nil, running), up: upPod("10", pending)},
		{name: "nothing without the label", down: downPod("10", map[string]string{identity.DownstreamClusterLabel: target.Key}, nil)},
		{
			name: "label removed downstream: the upstream copy goes",
			down: downPod("12", map[string]string{identity.DownstreamClusterLabel: target.Key}, nil), up: upPod("10", nil),
			wantVerbs: []string{"patch", "delete"},
		},
		{
			name: "deleted downstream: finalizer removed, then deleted with the UID precondition",
			up:   upPod("10", nil), wantVerbs: []string{"patch", "delete"},
			check: func(t *testing.T, a []clienttesting.Action) {
				var patch map[string]map[string]any
				require.NoError(t, json.Unmarshal(a[0].(clienttesting.PatchAction).GetPatch(), &patch))
				assert.Empty(t, patch["metadata"]["finalizers"])
				assert.Equal(t, "up-uid", patch["metadata"]["uid"])
				del := a[1].(clienttesting.DeleteAction)
				require.NotNil(t, del.GetDeleteOptions().Preconditions)
				assert.Equal(t, "up-uid", string(*del.GetDeleteOptions().Preconditions.UID))
			},
		},
		{name: "deleted downstream, upstream object not made by an upsyncer: left alone", up: upPod("-", nil)},
		{name: "upstream object not made by an upsyncer: never overwritten", down: downPod("10", nil, nil), up: upPod("-", nil), wantErr: true},
		{
			name: "downstream being deleted: the copy is deleted too, held by the finalizer",
			down: deleting(downPod("10", nil, nil)), up: upPod("10", nil), wantVerbs: []string{"delete"},
		},
		{name: "downstream being deleted, no copy: nothing is created", down: deleting(downPod("10", nil, nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var upObjs []runtime.Object
			if tt.up != nil {
				upObjs = append(upObjs, tt.up)
			}
			f := newFixture(t, true, upObjs...)
			if tt.down != nil {
				f.inf.add(informers.ID{Side: informers.Downstream, GVR: PodsGVR}, tt.down)
			}
			err := f.c.Reconcile(context.Background(), podKey)
			if tt.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			got := writes(f.up)
			assert.Equal(t, tt.wantVerbs, nonNil(verbs(got)))
			if tt.check != nil && len(got) == len(tt.wantVerbs) {
				tt.check(t, got)
			}
		})
	}
}

func nonNil(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestReconcileNamespaceOfAnotherTargetIsNotOurs(t *testing.T) {
	f := newFixture(t, true, upPod("10", nil))
	other := identity.NewTarget("root:loc", "cluster-1", "older-uid")
	f.inf.objs[namespacesID] = map[string]metav1.Object{}
	f.inf.add(namespacesID, namespaceMeta(downNS, locatorJSON(t, other, team, "default")))
	f.inf.add(informers.ID{Side: informers.Downstream, GVR: PodsGVR}, downPod("10", nil, nil))
	require.NoError(t, f.c.Reconcile(context.Background(), podKey))
	assert.Equal(t, []string{"patch", "delete"}, verbs(writes(f.up)), "a namespace of another SyncTarget UID maps nothing here: the copy goes")
}

func pv(locator string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": map[string]any{"name": "pv-1", "uid": "pv-uid", "resourceVersion": "5"},
		"spec":     map[string]any{"capacity": map[string]any{"storage": "1Gi"}},
		"status":   map[string]any{"phase": "Available"},
	}}
	u.SetLabels(map[string]string{target.StateLabel(): "Upsync", identity.DownstreamClusterLabel: target.Key})
	if locator != "" {
		u.SetAnnotations(map[string]string{identity.NamespaceLocatorAnnotation: locator})
	}
	return u
}

func TestReconcileClusterScopedPersistentVolume(t *testing.T) {
	f := newFixture(t, true)
	pvID := informers.ID{Side: informers.Downstream, GVR: PersistentVolumesGVR}
	f.inf.add(pvID, pv(locatorJSON(t, target, team, "")))
	key := queue.Key{Direction: queue.Up, GVR: PersistentVolumesGVR, Cluster: team, Name: "pv-1"}
	require.NoError(t, f.c.Reconcile(context.Background(), key))
	got := writes(f.up)
	require.Equal(t, []string{"create", "update/status", "update"}, verbs(got))
	obj := objectOf(t, got[0])
	assert.Empty(t, obj.GetNamespace())
	assert.NotContains(t, obj.GetAnnotations(), identity.NamespaceLocatorAnnotation, "the locator stays downstream")

	// The same PV seen from another workspace's key is not that workspace's.
	f2 := newFixture(t, true)
	f2.inf.add(pvID, pv(locatorJSON(t, target, team, "")))
	require.NoError(t, f2.c.Reconcile(context.Background(), queue.Key{Direction: queue.Up, GVR: PersistentVolumesGVR, Cluster: "root:other", Name: "pv-1"}))
	assert.Empty(t, writes(f2.up))
}

func TestDownstreamKeys(t *testing.T) {
	other := identity.NewTarget("root:loc", "cluster-2", "x")
	tests := []struct {
		name    string
		kcp     bool
		obj     *unstructured.Unstructured
		want    queue.Key
		wantErr string
	}{
		{name: "pod: workspace and namespace from its namespace's locator", kcp: true, obj: downPod("1", nil, nil), want: podKey},
		{name: "pv: from its own locator", kcp: true, obj: pv(locatorJSON(t, target, team, "")),
			want: queue.Key{Direction: queue.Up, GVR: PersistentVolumesGVR, Cluster: team, Name: "pv-1"}},
		{name: "pv without locator", kcp: true, obj: pv(""), wantErr: "has no kcp.io/namespace-locator annotation"},
		{name: "pv with another target's locator", kcp: true, obj: pv(locatorJSON(t, other, team, "")), wantErr: "not this one"},
		{name: "pv with a malformed locator", kcp: true, obj: pv("{"), wantErr: "parse"},
		{name: "pv naming no logical cluster", kcp: true, obj: pv(locatorJSON(t, target, "../../etc", "")), wantErr: "not a logical cluster"},
		{name: "plain hub: only --from-cluster exists", obj: pv(locatorJSON(t, target, team, "")), wantErr: "but the hub is"},
		{name: "pod in a namespace that is not this target's", kcp: true, obj: func() *unstructured.Unstructured {
			p := downPod("1", nil, nil)
			p.SetNamespace(otherNS)
			return p
		}(), wantErr: "not one of this sync target's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.kcp)
			gvr := PodsGVR
			if tt.obj.GetKind() == "PersistentVolume" {
				gvr = PersistentVolumesGVR
			}
			got, err := f.c.downstreamKey(gvr, tt.obj)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestDownstreamHandlerEnqueuesOnlyUpsyncedObjects(t *testing.T) {
	f := newFixture(t, true)
	h := f.c.downstreamHandler(PodsGVR)
	unlabelled := downPod("1", map[string]string{identity.DownstreamClusterLabel: target.Key}, nil)
	h.OnAdd(unlabelled, false)
	h.OnUpdate(unlabelled, unlabelled)
	h.OnDelete(unlabelled)
	assert.Equal(t, 0, f.c.runner.Len(), "nothing without the Upsync label")
	h.OnUpdate(downPod("1", nil, nil), unlabelled)
	assert.Equal(t, 1, f.c.runner.Len(), "a removed label is seen (the copy must go)")
	noLocator := pv("")
	f.c.downstreamHandler(PersistentVolumesGVR).OnAdd(noLocator, false)
	assert.Equal(t, 1, f.c.runner.Len(), "an object without locator is skipped (and logged)")
}

func TestEndpointsLabeller(t *testing.T) {
	svc := func(annotation string, owned bool) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{"name": "web", "namespace": downNS}}}
		if annotation != "" {
			u.SetAnnotations(map[string]string{UpsyncDerivedResourcesAnnotation: annotation})
		}
		if owned {
			u.SetOwnerReferences([]metav1.OwnerReference{{Kind: "Route", Name: "x"}})
		}
		return u
	}
	eps := func(labels map[string]string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Endpoints",
			"metadata": map[string]any{"name": "web", "namespace": downNS}}}
		u.SetLabels(labels)
		return u
	}
	ours := map[string]string{identity.DownstreamClusterLabel: target.Key}
	tests := []struct {
		name      string
		svc, eps  *unstructured.Unstructured
		wantPatch bool
	}{
		{name: "annotated service: its endpoints are labelled", svc: svc("pods, endpoints", false), eps: eps(ours), wantPatch: true},
		{name: "not annotated", svc: svc("", false), eps: eps(ours)},
		{name: "annotation names other resources", svc: svc("pods", false), eps: eps(ours)},
		{name: "service made downstream by a controller", svc: svc("endpoints", true), eps: eps(ours)},
		{name: "already labelled", svc: svc("endpoints", false), eps: eps(map[string]string{target.StateLabel(): "Upsync"})},
		{name: "no service", eps: eps(ours)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, true)
			l := f.c.labeller
			require.NotNil(t, l)
			f.inf.add(endpointsID, tt.eps)
			if tt.svc != nil {
				f.inf.add(servicesID, tt.svc)
			}
			require.NoError(t, l.Reconcile(context.Background(), queue.Key{GVR: EndpointsGVR, Namespace: downNS, Name: "web"}))
			got := writes(f.down)
			if !tt.wantPatch {
				assert.Empty(t, got)
				return
			}
			require.Len(t, got, 1)
			assert.JSONEq(t, `{"metadata":{"labels":{"`+target.StateLabel()+`":"Upsync"}}}`, string(got[0].(clienttesting.PatchAction).GetPatch()))
		})
	}
}
