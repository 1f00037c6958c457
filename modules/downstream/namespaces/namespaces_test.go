package namespaces

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

var cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

var target = identity.NewTarget("root", "east", "st-uid")

func locator(ns string) namespace.Locator {
	return namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "east", UID: "st-uid"}, Cluster: "root", Namespace: ns}
}

func kinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList", Resource: "NamespaceList", NetworkPoliciesResource: "NetworkPolicyList"}
}

func TestEnsureCreatesOnceAndRefusesCollisions(t *testing.T) {
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	e := NewEnsurer(client, store, target.Key)
	name, err := e.Ensure(context.Background(), locator("team"))
	require.NoError(t, err)
	created, err := client.Resource(Resource).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, target.Key, created.GetLabels()[identity.DownstreamClusterLabel])
	tenant, err := namespace.TenantID(locator("team"))
	require.NoError(t, err)
	assert.Equal(t, tenant, created.GetLabels()[identity.TenantIDLabel])

	// Cached: no request.
	require.NoError(t, store.Add(created))
	before := len(client.Actions())
	_, err = e.Ensure(context.Background(), locator("team"))
	require.NoError(t, err)
	assert.Len(t, client.Actions(), before)

	// Exists but not cached (the cache lags): read, not created again.
	store2 := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_, err = NewEnsurer(client, store2, target.Key).Ensure(context.Background(), locator("team"))
	require.NoError(t, err)

	// A foreign namespace of that name is a collision.
	otherName, err := namespace.DownstreamName(locator("other"))
	require.NoError(t, err)
	require.NoError(t, client.Tracker().Add(&unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": otherName},
	}}))
	_, err = e.Ensure(context.Background(), locator("other"))
	require.ErrorIs(t, err, namespace.ErrCollision)

	// Terminating: retry later.
	term := created.DeepCopy()
	now := metav1.Now()
	term.SetDeletionTimestamp(&now)
	require.NoError(t, store.Update(term))
	_, err = e.Ensure(context.Background(), locator("team"))
	var te *TerminatingError
	require.ErrorAs(t, err, &te)
}

func TestEnsureHandlesCreateRaceAndErrors(t *testing.T) {
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	want, err := namespace.DownstreamNamespace(locator("team"), target.Key)
	require.NoError(t, err)
	client.PrependReactor("create", "namespaces", func(clienttesting.Action) (bool, runtime.Object, error) {
		// Someone else created it between our read and our create.
		require.NoError(t, client.Tracker().Add(want))
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "namespaces"}, want.GetName())
	})
	_, err = NewEnsurer(client, store, target.Key).Ensure(context.Background(), locator("team"))
	require.NoError(t, err)

	failing := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	failing.PrependReactor("get", "namespaces", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("down")
	})
	_, err = NewEnsurer(failing, store, target.Key).Ensure(context.Background(), locator("team"))
	require.ErrorContains(t, err, "down")
	failing = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	failing.PrependReactor("create", "namespaces", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("denied")
	})
	_, err = NewEnsurer(failing, store, target.Key).Ensure(context.Background(), locator("team"))
	require.ErrorContains(t, err, "denied")
}

// Workers syncing the first objects of a new upstream namespace all ensure its downstream
// namespace at once: one GET, one namespace POST and one isolation policy POST per
// namespace, whatever the number of workers. The API holds the answer of every namespace
// GET until all workers read (or 200ms passed), which without shared ensures makes each
// worker find the namespace missing and POST it.
func TestConcurrentEnsuresOfANewNamespaceCreateItOnce(t *testing.T) {
	const workers = 8
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	fake := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	var (
		mu    sync.Mutex
		posts = map[string]int{}
	)
	fake.PrependReactor("create", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		posts[a.GetResource().Resource]++
		return false, nil, nil
	})
	client := &heldGets{Interface: fake, all: 2 * workers, arrived: make(chan struct{})}
	e := NewEnsurer(client, store, target.Key)

	namespaces := []string{"team", "other"}
	names := make([]string, 2*workers)
	errs := make([]error, 2*workers)
	var wg sync.WaitGroup
	for i := range 2 * workers {
		wg.Go(func() { names[i], errs[i] = e.Ensure(context.Background(), locator(namespaces[i%2])) })
	}
	wg.Wait()
	for i := range 2 * workers {
		require.NoError(t, errs[i])
		want, err := namespace.DownstreamName(locator(namespaces[i%2]))
		require.NoError(t, err)
		assert.Equal(t, want, names[i])
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{"namespaces": 2, "networkpolicies": 2}, posts, "one namespace and one policy POST per new namespace")
	assert.Equal(t, 2, client.gets(), "one namespace GET per new namespace")
}

// heldGets holds the answers of namespace GETs until all of them were read or 200ms
// passed (the fake client runs one request at a time, so the hold is outside it).
type heldGets struct {
	dynamic.Interface
	all     int
	arrived chan struct{}
	mu      sync.Mutex
	n       int
}

func (h *heldGets) gets() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func (h *heldGets) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	r := h.Interface.Resource(gvr)
	if gvr != Resource {
		return r
	}
	return heldResource{NamespaceableResourceInterface: r, h: h}
}

type heldResource struct {
	dynamic.NamespaceableResourceInterface
	h *heldGets
}

func (r heldResource) Get(ctx context.Context, name string, opts metav1.GetOptions, sub ...string) (*unstructured.Unstructured, error) {
	obj, err := r.NamespaceableResourceInterface.Get(ctx, name, opts, sub...)
	r.h.mu.Lock()
	r.h.n++
	if r.h.n == r.h.all {
		close(r.h.arrived)
	}
	r.h.mu.Unlock()
	select {
	case <-r.h.arrived:
	case <-time.After(200 * time.Millisecond):
	}
	return obj, err
}

type nsFixture struct {
	nsStore, up, down cache.Indexer
	upAPI, downAPI    *dynamicfake.FakeDynamicClient
	now               time.Time
	deleted           int
	ctl               *Controller
	name              string
}

func (f *nsFixture) NamespaceDeleted() { f.deleted++ }

func newNSFixture(t *testing.T, ns *unstructured.Unstructured) *nsFixture {
	t.Helper()
	f := &nsFixture{
		nsStore: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		up:      cache.NewIndexer(informers.StoreKeyFunc("root"), cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		down:    cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		now:     time.Unix(1000, 0),
		name:    ns.GetName(),
	}
	require.NoError(t, f.nsStore.Add(ns))
	f.upAPI = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	f.downAPI = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), ns)
	f.ctl = NewController(Config{
		Target: target, FallbackCluster: "root", Namespaces: f.nsStore,
		Upstream: []Indexer{f.up}, Downstream: []Indexer{f.down}, Resources: []schema.GroupVersionResource{cmGVR},
		UpstreamClient: f.upAPI, DownstreamClient: f.downAPI, Delay: 30 * time.Second, Metrics: f,
		Now: func() time.Time { return f.now },
	})
	return f
}

func ourNamespace(t *testing.T, upstreamNS string) *unstructured.Unstructured {
	t.Helper()
	ns, err := namespace.DownstreamNamespace(locator(upstreamNS), target.Key)
	require.NoError(t, err)
	ns.SetUID("ns-uid")
	return ns
}

func cm(ns string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c", "namespace": ns}}}
	u.SetLabels(labels)
	return u
}

func (f *nsFixture) exists(t *testing.T) bool {
	_, err := f.downAPI.Resource(Resource).Get(context.Background(), f.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

func TestUnusedNamespaceIsDeletedAfterTheDelay(t *testing.T) {
	f := newNSFixture(t, ourNamespace(t, "team"))
	err := f.ctl.Reconcile(context.Background(), Key(f.name))
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, err, &ra)
	assert.Equal(t, 30*time.Second, ra.After)
	assert.True(t, f.exists(t))

	f.now = f.now.Add(10 * time.Second)
	require.ErrorAs(t, f.ctl.Reconcile(context.Background(), Key(f.name)), &ra)
	assert.Equal(t, 20*time.Second, ra.After)

	f.now = f.now.Add(20 * time.Second)
	require.NoError(t, f.ctl.Reconcile(context.Background(), Key(f.name)))
	assert.False(t, f.exists(t))
	assert.Equal(t, 1, f.deleted)
}

func TestNamespaceInUseIsKept(t *testing.T) {
	tests := map[string]func(t *testing.T, f *nsFixture){
		"upstream object assigned in the upstream namespace": func(t *testing.T, f *nsFixture) {
			require.NoError(t, f.up.Add(cm("team", nil)))
		},
		"our object left downstream": func(t *testing.T, f *nsFixture) {
			require.NoError(t, f.down.Add(cm(f.name, nil)))
		},
		"upstream object appears right before the delete": func(t *testing.T, f *nsFixture) {
			require.NoError(t, f.upAPI.Tracker().Add(cm("team", map[string]string{target.StateLabel(): "Sync"})))
		},
		"downstream object appears right before the delete": func(t *testing.T, f *nsFixture) {
			require.NoError(t, f.downAPI.Tracker().Add(cm(f.name, map[string]string{identity.DownstreamClusterLabel: target.Key})))
		},
	}
	for name, setup := range tests {
		t.Run(name, func(t *testing.T) {
			f := newNSFixture(t, ourNamespace(t, "team"))
			f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
			setup(t, f)
			var ra *queue.RequeueAfterError
			require.ErrorAs(t, f.ctl.Reconcile(context.Background(), Key(f.name)), &ra)
			assert.Equal(t, InUseRecheck, ra.After, "looked at again even if no event comes")
			assert.True(t, f.exists(t))
			assert.NotContains(t, f.ctl.unusedSince, f.name, "the clock restarts once it is unused again")
		})
	}
}

func TestNamespacesWeDidNotCreateAreNeverDeleted(t *testing.T) {
	other := ourNamespace(t, "team")
	other.SetAnnotations(map[string]string{identity.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"root","name":"west","uid":"x"},"cluster":"root","namespace":"team"}`})
	noLocator := ourNamespace(t, "team")
	noLocator.SetAnnotations(nil)
	otherLabel := ourNamespace(t, "team")
	otherLabel.SetLabels(map[string]string{identity.DownstreamClusterLabel: "someone"})
	terminating := ourNamespace(t, "team")
	now := metav1.Now()
	terminating.SetDeletionTimestamp(&now)
	for name, ns := range map[string]*unstructured.Unstructured{"other target": other, "no locator": noLocator, "other label": otherLabel, "terminating": terminating} {
		t.Run(name, func(t *testing.T) {
			f := newNSFixture(t, ns)
			f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
			require.NoError(t, f.ctl.Reconcile(context.Background(), Key(f.name)))
			assert.True(t, f.exists(t))
		})
	}
	f := newNSFixture(t, ourNamespace(t, "team"))
	require.NoError(t, f.ctl.Reconcile(context.Background(), Key("not-cached")))
	assert.Equal(t, "downstream-namespaces", f.ctl.Name())
	assert.Equal(t, 1, f.ctl.Workers())
}

func TestNamespaceDeleteUsesUIDPreconditionAndReportsErrors(t *testing.T) {
	f := newNSFixture(t, ourNamespace(t, "team"))
	f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
	var pre *metav1.Preconditions
	f.downAPI.PrependReactor("delete", "namespaces", func(a clienttesting.Action) (bool, runtime.Object, error) {
		pre = a.(clienttesting.DeleteActionImpl).DeleteOptions.Preconditions
		return true, nil, errors.New("boom")
	})
	require.ErrorContains(t, f.ctl.Reconcile(context.Background(), Key(f.name)), "boom")
	require.NotNil(t, pre)
	assert.Equal(t, "ns-uid", string(*pre.UID))

	f = newNSFixture(t, ourNamespace(t, "team"))
	f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
	f.upAPI.PrependReactor("list", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("upstream down")
	})
	require.ErrorContains(t, f.ctl.Reconcile(context.Background(), Key(f.name)), "upstream down")
	assert.True(t, f.exists(t))
}

func TestLookupAndMetadataOnlyNamespaces(t *testing.T) {
	full := ourNamespace(t, "team")
	f := newNSFixture(t, full)
	meta := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
		Name: full.GetName(), UID: full.GetUID(), Labels: full.GetLabels(), Annotations: full.GetAnnotations(),
	}}
	require.NoError(t, f.nsStore.Update(meta))
	f.ctl.cfg.Lookup = func() ([]schema.GroupVersionResource, []Indexer, []Indexer) {
		return []schema.GroupVersionResource{cmGVR}, []Indexer{f.up}, []Indexer{f.down}
	}
	f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
	require.NoError(t, f.ctl.Reconcile(context.Background(), Key(f.name)))
	assert.False(t, f.exists(t), "a metadata-only cache entry is enough")

	// The Ensurer reads metadata-only entries too, without a request.
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	require.NoError(t, store.Add(meta))
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	_, err := NewEnsurer(client, store, target.Key).Ensure(context.Background(), locator("team"))
	require.NoError(t, err)
	for _, a := range client.Actions() {
		assert.Equal(t, NetworkPoliciesResource, a.GetResource(), "no namespace request, only the isolation policy (once)")
	}
}

func TestTheSameUpstreamNamespaceInAnotherClusterDoesNotKeepANamespace(t *testing.T) {
	f := newNSFixture(t, ourNamespace(t, "team")) // the downstream namespace of root|team
	elsewhere := cm("team", map[string]string{target.StateLabel(): "Sync"})
	elsewhere.SetAnnotations(map[string]string{identity.LogicalClusterAnnotation: "root:other"})
	require.NoError(t, f.up.Add(elsewhere))
	require.NoError(t, f.upAPI.Tracker().Add(elsewhere))
	f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
	require.NoError(t, f.ctl.Reconcile(context.Background(), Key(f.name)))
	assert.False(t, f.exists(t), "root:other|team is another workspace's namespace")

	f = newNSFixture(t, ourNamespace(t, "team"))
	require.NoError(t, f.up.Add(elsewhere))
	require.NoError(t, f.up.Add(cm("team", map[string]string{target.StateLabel(): "Sync"}))) // root|team
	require.Len(t, f.up.ListKeys(), 2, "both clusters' team/c are cached")
	f.ctl.unusedSince[f.name] = f.now.Add(-time.Hour)
	var ra *queue.RequeueAfterError
	require.ErrorAs(t, f.ctl.Reconcile(context.Background(), Key(f.name)), &ra)
	assert.True(t, f.exists(t))
}

// Tenant isolation: each downstream namespace gets a NetworkPolicy that admits its
// own tenant's namespaces and namespaces of no tenant; the policy is created once per
// namespace and process (an existing one is kept), and no namespace is patched for it.
func TestNamespacesAreIsolatedByTenant(t *testing.T) {
	ctx := context.Background()
	tenant, err := namespace.TenantID(locator("team"))
	require.NoError(t, err)

	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	e := NewEnsurer(client, store, target.Key)
	name, err := e.Ensure(ctx, locator("team"))
	require.NoError(t, err)
	policy, err := client.Resource(NetworkPoliciesResource).Namespace(name).Get(ctx, IsolationPolicyName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, IsolationPolicy(name, tenant).Object["spec"], policy.Object["spec"])
	from, _, _ := unstructured.NestedSlice(policy.Object, "spec", "ingress")
	require.Len(t, from, 1)
	assert.Contains(t, fmt.Sprint(from), tenant, "its own tenant is let in")
	assert.Contains(t, fmt.Sprint(from), "DoesNotExist", "so are namespaces of no tenant")

	created, err := client.Resource(Resource).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, store.Add(created))
	before := len(client.Actions())
	_, err = e.Ensure(ctx, locator("team"))
	require.NoError(t, err)
	assert.Len(t, client.Actions(), before, "isolated once: no more requests")
	for _, a := range client.Actions() {
		assert.NotEqual(t, "patch", a.GetVerb(), "no namespace patch")
	}

	// A namespace an earlier run made, with its policy: a new process creates it again
	// once, and AlreadyExists is fine.
	existing := ourNamespace(t, "team")
	client = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), existing, IsolationPolicy(existing.GetName(), tenant))
	store = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	require.NoError(t, store.Add(existing))
	_, err = NewEnsurer(client, store, target.Key).Ensure(ctx, locator("team"))
	require.NoError(t, err)
}
