package namespaces

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

func grantKinds() map[schema.GroupVersionResource]string {
	k := kinds()
	k[RoleBindingsResource] = "RoleBindingList"
	return k
}

// allowAfter answers SelfSubjectAccessReviews "denied" n times, then "allowed".
func allowAfter(client *dynamicfake.FakeDynamicClient, n int) *int {
	asked := 0
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		asked++
		review := a.(clienttesting.CreateAction).GetObject().(*unstructured.Unstructured).DeepCopy()
		_ = unstructured.SetNestedField(review.Object, asked > n, "status", "allowed")
		return true, review, nil
	})
	return &asked
}

var syncerSA = Subject{Kind: "ServiceAccount", Name: "tmc-syncer", Namespace: "tmc-syncer-east"}

// With a grant, the first use of a namespace binds the ClusterRole to the syncer there
// before anything else is written (the isolation policy may be granted only through it),
// waits until the authorizer knows the binding, and does so once per namespace and
// process; an existing binding is kept.
func TestGrantBindsTheNamespaceRoleFirstAndOnce(t *testing.T) {
	ctx := context.Background()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), grantKinds())
	asked := allowAfter(client, 2)
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	e := NewEnsurer(client, store, target.Key)
	require.NoError(t, e.WithGrant(client, Grant{ClusterRole: "tmc-syncer:tmc-syncer-east:namespace", Subject: syncerSA}))
	name, err := e.Ensure(ctx, locator("team"))
	require.NoError(t, err)

	rb, err := client.Resource(RoleBindingsResource).Namespace(name).Get(ctx, "tmc-syncer:tmc-syncer-east:namespace", metav1.GetOptions{})
	require.NoError(t, err)
	ref, _, _ := unstructured.NestedStringMap(rb.Object, "roleRef")
	assert.Equal(t, map[string]string{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tmc-syncer:tmc-syncer-east:namespace"}, ref)
	subjects, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
	assert.Equal(t, []any{map[string]any{"kind": "ServiceAccount", "name": "tmc-syncer", "namespace": "tmc-syncer-east"}}, subjects)
	assert.Equal(t, 3, *asked, "waited until the review allowed")

	var order []string
	for _, a := range client.Actions() {
		if a.GetNamespace() == name && (a.GetVerb() == "create" || a.GetVerb() == "list") {
			order = append(order, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	assert.Equal(t, []string{"list rolebindings", "create rolebindings", "list networkpolicies", "create networkpolicies"}, order,
		"the binding comes before anything else in the namespace")

	created, err := client.Resource(Resource).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, store.Add(created))
	before := len(client.Actions())
	_, err = e.Ensure(ctx, locator("team"))
	require.NoError(t, err)
	assert.Len(t, client.Actions(), before, "bound once per namespace and process")

	// A new process finds the binding by name and creates nothing.
	e2 := NewEnsurer(client, store, target.Key)
	require.NoError(t, e2.WithGrant(client, Grant{ClusterRole: "tmc-syncer:tmc-syncer-east:namespace", Subject: syncerSA}))
	before = len(client.Actions())
	_, err = e2.Ensure(ctx, locator("team"))
	require.NoError(t, err)
	for _, a := range client.Actions()[before:] {
		assert.False(t, a.GetVerb() == "create" && a.GetResource() == RoleBindingsResource, "no RoleBinding created again")
	}
}

// A namespace the syncer may not use (a collision) never gets a binding; a failed
// binding fails the object's sync (retried) and nothing else is written there; a grant
// never allowed within Wait lets the sync go on (its writes are retried as any).
func TestGrantIsNeverMadeInAForeignNamespaceAndFailuresAreRetried(t *testing.T) {
	ctx := context.Background()
	g := Grant{ClusterRole: "ns-role", Subject: Subject{Kind: "User", Name: "syncer"}, Wait: 200 * time.Millisecond}

	name, err := namespace.DownstreamName(locator("other"))
	require.NoError(t, err)
	foreign := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), grantKinds(), foreign)
	e := NewEnsurer(client, cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}), target.Key)
	require.NoError(t, e.WithGrant(client, g))
	_, err = e.Ensure(ctx, locator("other"))
	require.Error(t, err)
	for _, a := range client.Actions() {
		assert.NotEqual(t, "rolebindings", a.GetResource().Resource, "a foreign namespace is never bound")
	}

	client = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), grantKinds())
	client.PrependReactor("create", "rolebindings", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("forbidden: bind")
	})
	e = NewEnsurer(client, cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}), target.Key)
	require.NoError(t, e.WithGrant(client, g))
	_, err = e.Ensure(ctx, locator("team"))
	require.ErrorContains(t, err, "bind ClusterRole ns-role")
	for _, a := range client.Actions() {
		assert.NotEqual(t, NetworkPoliciesResource, a.GetResource(), "nothing written before the binding")
	}

	client = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), grantKinds())
	allowAfter(client, 1<<30)
	e = NewEnsurer(client, cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}), target.Key)
	require.NoError(t, e.WithGrant(client, g))
	start := time.Now()
	_, err = e.Ensure(ctx, locator("team"))
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "the wait is bounded")

	rb := g.RoleBinding("x")
	subjects, _, _ := unstructured.NestedSlice(rb.Object, "subjects")
	assert.Equal(t, []any{map[string]any{"kind": "User", "name": "syncer", "apiGroup": "rbac.authorization.k8s.io"}}, subjects)
	require.Error(t, e.WithGrant(client, Grant{ClusterRole: "x"}), "a subject is required")
}

// Writes that do not go through Ensure (the start-up cleanup) bind the grant first in a
// namespace of this sync target, once; a namespace of anyone else is never bound.
func TestBindManagedBindsOnlyThisTargetsNamespaces(t *testing.T) {
	ctx := context.Background()
	ours := ourNamespace(t, "team")
	foreign := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "kube-system"}}}
	labelledOnly := foreign.DeepCopy()
	labelledOnly.SetName("labelled")
	labelledOnly.SetLabels(ours.GetLabels()) // our label but no locator
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, ns := range []*unstructured.Unstructured{ours, foreign, labelledOnly} {
		require.NoError(t, store.Add(ns))
	}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), grantKinds())
	allowAfter(client, 0)
	e := NewEnsurer(client, store, target.Key)
	require.NoError(t, e.BindManaged(ctx, ours.GetName()), "no grant: nothing to do")
	assert.Empty(t, client.Actions())

	require.NoError(t, e.WithGrant(client, Grant{ClusterRole: "ns-role", Subject: syncerSA}))
	for _, ns := range []string{"kube-system", "labelled", "unknown"} {
		require.NoError(t, e.BindManaged(ctx, ns))
	}
	assert.Empty(t, client.Actions(), "other namespaces are never bound")
	require.NoError(t, e.BindManaged(ctx, ours.GetName()))
	_, err := client.Resource(RoleBindingsResource).Namespace(ours.GetName()).Get(ctx, "ns-role", metav1.GetOptions{})
	require.NoError(t, err)
	before := len(client.Actions())
	require.NoError(t, e.BindManaged(ctx, ours.GetName()))
	_, err = e.Ensure(ctx, locator("team"))
	require.NoError(t, err)
	for _, a := range client.Actions()[before:] {
		assert.NotEqual(t, RoleBindingsResource, a.GetResource(), "bound once per process, Ensure included")
	}
}
