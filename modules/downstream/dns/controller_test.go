package dns

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
)

const syncerNS = "kcp-syncer-west-1234abcd"

var target = identity.NewTarget("root:loc", "west", "st-uid")

type fixture struct {
	kube    *fake.Clientset
	c       *Controller
	mu      sync.Mutex
	ns      []metav1.Object
	svcs    map[string][]metav1.Object
	queued  []queue.Key
	cancel  context.CancelFunc
	stopped chan struct{}
}

func newFixture(t *testing.T, image string, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{kube: fake.NewClientset(objs...), svcs: map[string][]metav1.Object{}}
	// The fake assigns no UIDs; the API server does (ownerReferences need them).
	f.kube.PrependReactor("create", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if m, err := meta.Accessor(a.(clienttesting.CreateAction).GetObject()); err == nil && m.GetUID() == "" {
			m.SetUID(types.UID("uid-" + m.GetName()))
		}
		return false, nil, nil
	})
	c, err := New(Config{Target: target, FromCluster: "root:loc", Namespace: syncerNS, Image: image, Kube: f.kube},
		Sources{
			Namespaces: func() []metav1.Object { f.mu.Lock(); defer f.mu.Unlock(); return append([]metav1.Object(nil), f.ns...) },
			Services:   func(ns string) []metav1.Object { f.mu.Lock(); defer f.mu.Unlock(); return f.svcs[ns] },
		},
		func(k queue.Key, _ time.Duration) { f.mu.Lock(); f.queued = append(f.queued, k); f.mu.Unlock() })
	require.NoError(t, err)
	f.c = c
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.stopped = cancel, make(chan struct{})
	go func() { _ = c.Run(ctx); close(f.stopped) }()
	t.Cleanup(func() { cancel(); <-f.stopped })
	if image != "" {
		require.Eventually(t, c.synced, 5*time.Second, 10*time.Millisecond)
	}
	return f
}

func downstreamNS(t *testing.T, name, cluster, upstream string) metav1.Object {
	t.Helper()
	loc, err := target.Locator(cluster, upstream).JSON()
	require.NoError(t, err)
	return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{identity.NamespaceLocatorAnnotation: loc}}}
}

func service(name, ns string, spec map[string]any) metav1.Object {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec,
	}}
}

// reconcile runs Reconcile once the informers saw what the previous one wrote.
func (f *fixture) reconcile(t *testing.T, cluster string) {
	t.Helper()
	require.Eventually(t, func() bool { return f.c.Reconcile(context.Background(), Key(cluster)) == nil }, 5*time.Second, 20*time.Millisecond)
}

func TestControllerDeploysPerWorkspaceAndDeletesWithTheLastNamespace(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "ghcr.io/tmc-syncer/syncer:v1",
		&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"}, Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // kcp reads Endpoints
			Addresses: []corev1.EndpointAddress{{IP: "192.168.1.10"}}, Ports: []corev1.EndpointPort{{Port: 6443, Protocol: corev1.ProtocolTCP}},
		}}})
	f.ns = []metav1.Object{
		downstreamNS(t, "kcp-aaaa", "ws1", "shop"),
		downstreamNS(t, "kcp-bbbb", "ws1", "db"),
		downstreamNS(t, "kcp-cccc", "ws2", "shop"),
	}
	f.svcs["kcp-aaaa"] = []metav1.Object{
		service("web", "kcp-aaaa", map[string]any{"clusterIP": "10.96.0.10", "clusterIPs": []any{"10.96.0.10"}}),
		service("pg", "kcp-aaaa", map[string]any{"clusterIP": "None"}),
		service("ext", "kcp-aaaa", map[string]any{"type": "ExternalName", "externalName": "example.com"}),
	}
	name := ID("ws1", "st-uid", "west")
	f.reconcile(t, "ws1")

	cm, err := f.kube.CoreV1().ConfigMaps(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"shop": "kcp-aaaa", "db": "kcp-bbbb", "web.shop": "10.96.0.10", "pg.shop": "", "ext.shop": ""}, cm.Data,
		"only ws1's namespaces and Services")
	assert.Equal(t, "ws1", cm.Annotations[ClusterAnnotation])

	dep, err := f.kube.AppsV1().Deployments(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	ctr := dep.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "ghcr.io/tmc-syncer/syncer:v1", ctr.Image)
	assert.Equal(t, []string{"/ko-app/syncer"}, ctr.Command)
	assert.Equal(t, []string{"dns", "start", "--configmap-name", name}, ctr.Args, "kcp's command line")
	assert.Equal(t, name, dep.Spec.Template.Spec.ServiceAccountName)
	require.Len(t, dep.OwnerReferences, 1)
	assert.Equal(t, "ConfigMap", dep.OwnerReferences[0].Kind)

	role, err := f.kube.RbacV1().Roles(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, RoleRules(name), role.Rules, "the DNS pods read their ConfigMap only")
	rb, err := f.kube.RbacV1().RoleBindings(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, name, rb.Subjects[0].Name)
	_, err = f.kube.CoreV1().ServiceAccounts(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	svc, err := f.kube.CoreV1().Services(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"app": name}, svc.Spec.Selector)
	np, err := f.kube.NetworkingV1().NetworkPolicies(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, np.Spec.Egress, 2)
	assert.Equal(t, "192.168.1.10/32", np.Spec.Egress[1].To[0].IPBlock.CIDR, "the API server's endpoints")
	require.Len(t, np.Spec.Ingress, 1)
	assert.NotEmpty(t, np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels[identity.TenantIDLabel], "queries from the tenant only")

	// ws2 gets its own.
	f.reconcile(t, "ws2")
	cm2, err := f.kube.CoreV1().ConfigMaps(syncerNS).Get(ctx, ID("ws2", "st-uid", "west"), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"shop": "kcp-cccc"}, cm2.Data)

	// A namespace goes: the table follows.
	f.mu.Lock()
	f.ns = f.ns[1:]
	f.mu.Unlock()
	require.Eventually(t, func() bool {
		_ = f.c.Reconcile(ctx, Key("ws1"))
		cm, err := f.kube.CoreV1().ConfigMaps(syncerNS).Get(ctx, name, metav1.GetOptions{})
		return err == nil && len(cm.Data) == 1 && cm.Data["db"] == "kcp-bbbb"
	}, 5*time.Second, 20*time.Millisecond, "the table follows the namespaces")

	// The last one goes: everything goes (the NetworkPolicy may be left to the garbage
	// collector, as under kcp's RBAC; here the delete is allowed).
	f.mu.Lock()
	f.ns = f.ns[1:]
	f.mu.Unlock()
	f.reconcile(t, "ws1")
	require.Eventually(t, func() bool {
		_ = f.c.Reconcile(ctx, Key("ws1"))
		for _, get := range []func() error{
			func() error {
				_, err := f.kube.CoreV1().ConfigMaps(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := f.kube.AppsV1().Deployments(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := f.kube.CoreV1().Services(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := f.kube.CoreV1().ServiceAccounts(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := f.kube.RbacV1().Roles(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := f.kube.RbacV1().RoleBindings(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := f.kube.NetworkingV1().NetworkPolicies(syncerNS).Get(ctx, name, metav1.GetOptions{})
				return err
			},
		} {
			if !apierrors.IsNotFound(get()) {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond, "ws1's DNS objects are deleted with its last namespace")
	_, err = f.kube.AppsV1().Deployments(syncerNS).Get(ctx, ID("ws2", "st-uid", "west"), metav1.GetOptions{})
	assert.NoError(t, err, "ws2's DNS stays")
}

func TestTeardownLeavesForbiddenNetworkPolicyToTheGarbageCollector(t *testing.T) {
	f := newFixture(t, "img")
	f.ns = []metav1.Object{downstreamNS(t, "kcp-aaaa", "ws1", "shop")}
	f.reconcile(t, "ws1")
	f.kube.PrependReactor("delete", "networkpolicies", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.k8s.io", Resource: "networkpolicies"}, "x", errors.New("kcp's RBAC"))
	})
	f.mu.Lock()
	f.ns = nil
	f.mu.Unlock()
	f.reconcile(t, "ws1")
	_, err := f.kube.CoreV1().ConfigMaps(syncerNS).Get(context.Background(), ID("ws1", "st-uid", "west"), metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the owner ConfigMap is deleted even when the NetworkPolicy may not be")
}

func TestNameserverContract(t *testing.T) {
	ctx := context.Background()
	t.Run("off", func(t *testing.T) {
		f := newFixture(t, "")
		ip, err := f.c.Nameserver("ws1")
		require.NoError(t, err)
		assert.Empty(t, ip, "no --dns-image: pods keep the physical cluster's DNS")
		assert.Empty(t, f.queued)
	})

	name := ID("ws1", "st-uid", "west")
	tests := []struct {
		desc    string
		objs    []runtime.Object
		wantIP  string
		wantErr bool
	}{
		{desc: "nothing deployed yet", wantErr: true},
		{desc: "Service without endpoints", wantErr: true, objs: []runtime.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.53"}},
		}},
		{desc: "endpoints without a ready address", wantErr: true, objs: []runtime.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.53"}},
			&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: name}, Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // kcp reads Endpoints
				NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.244.0.5"}},
			}}},
		}},
		{desc: "ready", wantIP: "10.96.0.53", objs: []runtime.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.53"}},
			&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: name}, Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // kcp reads Endpoints
				Addresses: []corev1.EndpointAddress{{IP: "10.244.0.5"}},
			}}},
		}},
		{desc: "another workspace's DNS is not ours", wantErr: true, objs: []runtime.Object{
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: ID("ws2", "st-uid", "west")}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.54"}},
			&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: syncerNS, Name: ID("ws2", "st-uid", "west")}, Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // kcp reads Endpoints
				Addresses: []corev1.EndpointAddress{{IP: "10.244.0.6"}},
			}}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			f := newFixture(t, "img", tt.objs...)
			ip, err := f.c.Nameserver("ws1")
			assert.Equal(t, tt.wantIP, ip)
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, transformation.ErrPodInputsNotReady, "the pod mutator retries later")
			assert.Contains(t, err.Error(), name)
			assert.Contains(t, f.queued, Key("ws1"), "asking deploys it")
			// Asked for, a workspace without namespace (its first workload is on its way)
			// gets its DNS.
			f.reconcile(t, "ws1")
			_, err = f.kube.AppsV1().Deployments(syncerNS).Get(ctx, name, metav1.GetOptions{})
			require.NoError(t, err, "deployed on demand")
		})
	}
}

func TestDemandExpires(t *testing.T) {
	f := newFixture(t, "img")
	now := time.Now()
	f.c.now = func() time.Time { return now }
	_, err := f.c.Nameserver("ws1")
	require.Error(t, err)
	f.reconcile(t, "ws1")
	name := ID("ws1", "st-uid", "west")
	_, err = f.kube.AppsV1().Deployments(syncerNS).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	now = now.Add(DefaultDemandTTL + time.Second)
	require.Eventually(t, func() bool {
		_ = f.c.Reconcile(context.Background(), Key("ws1"))
		_, err := f.kube.AppsV1().Deployments(syncerNS).Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 5*time.Second, 20*time.Millisecond, "a workspace that never got a namespace loses its DNS")
}

func TestTakeoverUpdatesKcpsDeployment(t *testing.T) {
	name := ID("ws1", "st-uid", "west")
	kcps := Deployment(name, syncerNS, "ws1", "ghcr.io/kcp-dev/kcp/syncer:v0.11.0", nil)
	kcps.Annotations = nil
	kcps.Spec.Template.Spec.Containers[0].Args = []string{"dns", "start", "--configmap-name", name}
	f := newFixture(t, "ghcr.io/tmc-syncer/syncer:v1", kcps)
	f.ns = []metav1.Object{downstreamNS(t, "kcp-aaaa", "ws1", "shop")}
	f.reconcile(t, "ws1")
	got, err := f.kube.AppsV1().Deployments(syncerNS).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "ghcr.io/tmc-syncer/syncer:v1", got.Spec.Template.Spec.Containers[0].Image, "kcp's DNS Deployment now runs our image")
	// Events on kcp's objects (no ClusterAnnotation) map back to their workspace.
	f.c.onOwnObject(kcps)
	assert.Contains(t, f.queued, Key("ws1"))
}
