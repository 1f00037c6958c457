package events

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSet"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Node"}, meta.RESTScopeRoot)
	m.Add(schema.GroupVersionKind{Group: "test.tmc.dev", Version: "v1", Kind: "Cluster"}, meta.RESTScopeRoot)
	return m
}

// objects is a fake downstream cluster for metadata lookups.
type objects struct {
	byKey map[string]*metav1.PartialObjectMetadata
	calls int
	err   error
}

func (o *objects) add(gvr schema.GroupVersionResource, obj *metav1.PartialObjectMetadata) {
	if o.byKey == nil {
		o.byKey = map[string]*metav1.PartialObjectMetadata{}
	}
	o.byKey[gvr.Resource+"|"+obj.Namespace+"/"+obj.Name] = obj
}

func (o *objects) get(_ context.Context, gvr schema.GroupVersionResource, ns, name string) (*metav1.PartialObjectMetadata, error) {
	o.calls++
	if o.err != nil {
		return nil, o.err
	}
	obj, ok := o.byKey[gvr.Resource+"|"+ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	return obj, nil
}

var (
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	replicasetsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	podsGVR        = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	owner          = ownership.Owner{Cluster: "root:org", Namespace: "team-a", Name: "web", UID: "up-uid"}
)

func controllerRef(apiVersion, kind, name, uid string) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: &yes}}
}

// chain is a synced Deployment web with ReplicaSet web-1 and Pod web-1-a in kcp-ns.
func chain() *objects {
	o := &objects{}
	o.add(deploymentsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "kcp-ns", UID: "d-uid",
		Labels: map[string]string{identity.DownstreamClusterLabel: "k1"}, Annotations: owner.Annotations()}})
	o.add(replicasetsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "kcp-ns", UID: "rs-uid",
		OwnerReferences: controllerRef("apps/v1", "Deployment", "web", "d-uid")}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "web-1-a", Namespace: "kcp-ns", UID: "pod-uid",
		OwnerReferences: controllerRef("apps/v1", "ReplicaSet", "web-1", "rs-uid")}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "loner", Namespace: "kcp-ns", UID: "l-uid"}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "kcp-ns", UID: "o-uid",
		OwnerReferences: controllerRef("apps/v1", "ReplicaSet", "gone", "g-uid")}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "stale-owner", Namespace: "kcp-ns", UID: "s-uid",
		OwnerReferences: controllerRef("apps/v1", "ReplicaSet", "web-1", "older-rs-uid")}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "on-node", Namespace: "kcp-ns", UID: "n-uid",
		OwnerReferences: controllerRef("v1", "Node", "n1", "node-uid")}})
	o.add(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "node-uid"}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "alien", Namespace: "kcp-ns", UID: "a-uid",
		OwnerReferences: controllerRef("example.com/v1", "Thing", "t", "t-uid")}})
	return o
}

func TestResolveFollowsOwnersToTheSyncedObject(t *testing.T) {
	rs := corev1.ObjectReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Namespace: "kcp-ns", Name: "web-1", UID: "rs-uid"}
	pod := corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "web-1-a", UID: "pod-uid"}
	tests := []struct {
		name  string
		ref   corev1.ObjectReference
		ok    bool
		child *corev1.ObjectReference
	}{
		{"the synced object itself", corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "kcp-ns", Name: "web", UID: "d-uid"}, true, nil},
		{"its ReplicaSet", rs, true, &rs},
		{"its Pod, two owners up", pod, true, &pod},
		{"a Pod owned by nothing", corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "loner"}, false, nil},
		{"an owner that is gone", corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "orphan"}, false, nil},
		{"an owner re-created since", corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "stale-owner"}, false, nil},
		{"a cluster-scoped owner", corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "on-node"}, false, nil},
		{"an unknown owner kind", corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "alien"}, false, nil},
		{"an object re-created since the Event", corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "kcp-ns", Name: "web", UID: "old"}, false, nil},
		{"an unknown kind", corev1.ObjectReference{APIVersion: "example.com/v1", Kind: "Thing", Namespace: "kcp-ns", Name: "t"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResolver(testMapper(), chain().get, "k1", 100)
			got, ok, err := r.Resolve(context.Background(), tt.ref)
			require.NoError(t, err)
			assert.Equal(t, tt.ok, ok)
			if !tt.ok {
				return
			}
			assert.Equal(t, owner, got.Owner)
			assert.Equal(t, "Deployment", got.Kind)
			assert.Equal(t, "apps/v1", got.APIVersion)
			assert.Equal(t, tt.child, got.Child)
			assert.Equal(t, "root:org|team-a/Deployment/web/up-uid", got.ID())
		})
	}
}

func TestResolveCachesLookups(t *testing.T) {
	o := chain()
	r := NewResolver(testMapper(), o.get, "k1", 100)
	now := time.Now()
	r.now = func() time.Time { return now }
	pod := corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "web-1-a"}
	for range 3 {
		_, ok, err := r.Resolve(context.Background(), pod)
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, 3, o.calls, "pod, ReplicaSet, Deployment looked up once each")

	missing := corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "later"}
	_, _, _ = r.Resolve(context.Background(), missing)
	_, _, _ = r.Resolve(context.Background(), missing)
	assert.Equal(t, 4, o.calls, "not found is cached too")
	now = now.Add(time.Minute)
	_, _, _ = r.Resolve(context.Background(), missing)
	assert.Equal(t, 5, o.calls, "briefly: the object may appear")
}

func TestResolveErrors(t *testing.T) {
	o := chain()
	o.err = errors.New("connection refused")
	r := NewResolver(testMapper(), o.get, "k1", 100)
	_, _, err := r.Resolve(context.Background(), corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "x"})
	require.ErrorContains(t, err, "connection refused")
	_, _, err = r.Resolve(context.Background(), corev1.ObjectReference{APIVersion: "a/b/c", Kind: "Pod", Name: "x"})
	require.Error(t, err)

	bad := chain()
	bad.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "bad-owner", Namespace: "kcp-ns",
		OwnerReferences: controllerRef("a/b/c", "X", "x", "")}})
	r = NewResolver(testMapper(), bad.get, "k1", 100)
	_, _, err = r.Resolve(context.Background(), corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "bad-owner"})
	require.Error(t, err)
}

// TestResolveForbiddenOwnerIsNotSyncedAndNotRetried: without RBAC to read an owner, the
// Event belongs to nothing we can see; that is an answer (no error, no hot retry), cached
// for forbiddenTTL: longer than the negative TTL, short enough that a 403 of a starting
// API server does not hide an owner for long.
func TestResolveForbiddenOwnerIsNotSyncedAndNotRetried(t *testing.T) {
	o := chain()
	forbidden := &objects{byKey: o.byKey}
	r := NewResolver(testMapper(), func(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (*metav1.PartialObjectMetadata, error) {
		if gvr.Resource == "replicasets" {
			forbidden.calls++
			return nil, apierrors.NewForbidden(gvr.GroupResource(), name, errors.New("RBAC"))
		}
		return o.get(ctx, gvr, ns, name)
	}, "k1", 100)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	pod := corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "web-1-a"}
	for range 3 {
		_, ok, err := r.Resolve(context.Background(), pod)
		require.NoError(t, err)
		assert.False(t, ok)
		now = now.Add(20 * time.Second)
	}
	assert.Equal(t, 1, forbidden.calls, "the forbidden lookup is cached beyond the negative TTL")
	now = now.Add(forbiddenTTL)
	_, _, err := r.Resolve(context.Background(), pod)
	require.NoError(t, err)
	assert.Equal(t, 2, forbidden.calls, "asked again after forbiddenTTL")
}

func TestResolveToClusterScopedSyncedObject(t *testing.T) {
	o := &objects{}
	o.add(schema.GroupVersionResource{Group: "test.tmc.dev", Version: "v1", Resource: "clusters"}, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: "c", UID: "c-uid", Labels: map[string]string{identity.DownstreamClusterLabel: "k1"},
		Annotations: ownership.Owner{Cluster: "root:org", Name: "c", UID: "up-c"}.Annotations()}})
	o.add(podsGVR, &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "kcp-ns", UID: "p-uid",
		OwnerReferences: controllerRef("test.tmc.dev/v1", "Cluster", "c", "c-uid")}})
	r := NewResolver(testMapper(), o.get, "k1", 100)
	got, ok, err := r.Resolve(context.Background(), corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "kcp-ns", Name: "p"})
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "c", got.Owner.Name)
	assert.Equal(t, "default", upstreamNamespace(got), "Events of cluster-scoped objects live in default")
}
