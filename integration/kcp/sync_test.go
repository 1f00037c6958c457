package kcp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workspacedns "github.com/tmc-syncer/syncer/modules/downstream/dns"
	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// startOurSyncer installs a SyncTarget with kcp's plugin and runs our syncer from
// the plugin's Deployment.
func startOurSyncer(t *testing.T, env *framework.KCPEnvironment, name string, resources ...string) (syncTarget, *framework.SyncerProcess) {
	t.Helper()
	st := installWithKcpsPlugin(t, env, name, resources...)
	return st, runOurSyncer(t, env, st)
}

// acceptedResources is the set of resources kcp marked Accepted in the SyncTarget's
// status.syncedResources.
func acceptedResources(st *unstructured.Unstructured) map[string]bool {
	accepted := map[string]bool{}
	entries, _, _ := unstructured.NestedSlice(st.Object, "status", "syncedResources")
	for _, e := range entries {
		if m, _ := e.(map[string]any); m["state"] == "Accepted" {
			r, _ := m["resource"].(string)
			accepted[r] = true
		}
	}
	return accepted
}

// markWorkspaceDNSReady plays the kubelet's and the endpoints controller's part for the
// per-workspace DNS servers the syncer deploys (the bed has neither), as kcp's own e2e
// does: every DNS Service in the syncer's namespace gets Endpoints with a ready address,
// so that workloads, which wait for their workspace's DNS as under kcp, sync.
func markWorkspaceDNSReady(t *testing.T, env *framework.KCPEnvironment, st syncTarget) {
	t.Helper()
	kube := env.Physical.Kube(t)
	ns := st.deployment.Namespace
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			svcs, err := kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, svc := range svcs.Items {
					if !strings.HasPrefix(svc.Name, "kcp-dns-") {
						continue
					}
					//nolint:staticcheck // Endpoints, not EndpointSlices: what the DNS readiness check reads.
					_, _ = kube.CoreV1().Endpoints(ns).Create(ctx, &corev1.Endpoints{
						ObjectMeta: metav1.ObjectMeta{Name: svc.Name},
						Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // see above
							Addresses: []corev1.EndpointAddress{{IP: "10.0.0.53"}},
							Ports:     []corev1.EndpointPort{{Name: "dns", Port: workspacedns.Port, Protocol: corev1.ProtocolUDP}},
						}},
					}, metav1.CreateOptions{})
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func createConfigMap(t *testing.T, kube kubernetes.Interface, ns, name, value string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"value": value}}
	require.Eventually(t, func() bool {
		_, err := kube.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{})
		return err == nil || apierrors.IsAlreadyExists(err)
	}, time.Minute, 500*time.Millisecond, "create ConfigMap %s/%s upstream", ns, name)
}

func waitConfigMapValue(t *testing.T, kube kubernetes.Interface, ns, name, value string, p *framework.SyncerProcess) {
	t.Helper()
	require.Eventually(t, func() bool {
		got, err := kube.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && got.Data["value"] == value
	}, time.Minute, 250*time.Millisecond, "ConfigMap %s/%s has value %q downstream; syncer output:\n%s", ns, name, value, p.Output)
}

// updateConfigMap sets the ConfigMap's value upstream.
func updateConfigMap(t *testing.T, kube kubernetes.Interface, ns, name, value string) {
	t.Helper()
	ctx := context.Background()
	got, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	got.Data["value"] = value
	_, err = kube.CoreV1().ConfigMaps(ns).Update(ctx, got, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// deleteConfigMapEverywhere deletes the ConfigMap upstream and waits until its
// downstream copy in downNS is deleted and the upstream object is gone (the syncer
// released its finalizer through the virtual workspace).
func deleteConfigMapEverywhere(t *testing.T, up, physical kubernetes.Interface, ns, downNS, name string, p *framework.SyncerProcess) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, up.CoreV1().ConfigMaps(ns).Delete(ctx, name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 250*time.Millisecond, "%s/%s is deleted downstream; output:\n%s", downNS, name, p.Output)
	require.Eventually(t, func() bool {
		_, err := up.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 250*time.Millisecond, "%s/%s is gone upstream (finalizer released); output:\n%s", ns, name, p.Output)
}

func conditionStatus(obj *unstructured.Unstructured, condType string) string {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == condType {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// Two workspaces hold a namespace and a ConfigMap of the same names: each syncs to
// its own downstream namespace, with its own content, and deleting one leaves the
// other alone. Deleting the user's namespace removes the downstream namespace.
func TestKCPTwoWorkspacesWithTheSameNamesSyncWithoutCollision(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	st, p := startOurSyncer(t, env, "collide", "configmaps")

	stClient := dynamic.NewForConfigOrDie(st.location.Config).Resource(workloadv1alpha1.SyncTargetsResource)
	require.Eventually(t, func() bool {
		got, err := stClient.Get(ctx, st.name, metav1.GetOptions{})
		return err == nil && conditionStatus(got, "Ready") == "True"
	}, 2*time.Minute, 500*time.Millisecond, "kcp's own controllers report the SyncTarget Ready; output:\n%s", p.Output)

	teamA := userWorkspace(t, env, "team-a", st)
	teamB := userWorkspace(t, env, "team-b", st)
	kubeA, kubeB := kubernetes.NewForConfigOrDie(teamA.Config), kubernetes.NewForConfigOrDie(teamB.Config)
	for _, kube := range []kubernetes.Interface{kubeA, kubeB} {
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	createConfigMap(t, kubeA, "shop", "settings", "from-a")
	createConfigMap(t, kubeB, "shop", "settings", "from-b")

	physical := env.Physical.Kube(t)
	nsA := downstreamNamespace(t, physical, st, teamA.Cluster, "shop")
	nsB := downstreamNamespace(t, physical, st, teamB.Cluster, "shop")
	require.NotEqual(t, nsA, nsB, "one downstream namespace per (workspace, namespace)")
	tenant := func(name string) string {
		ns, err := physical.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return ns.Labels["kcp.io/tenant-id"]
	}
	assert.NotEmpty(t, tenant(nsA), "downstream namespaces carry kcp's tenant id")
	assert.NotEqual(t, tenant(nsA), tenant(nsB), "two workspaces are two tenants")
	for _, ns := range []string{nsA, nsB} {
		// The policy is created right after the namespace, not with it.
		var np *networkingv1.NetworkPolicy
		require.Eventually(t, func() bool {
			var err error
			np, err = physical.NetworkingV1().NetworkPolicies(ns).Get(ctx, namespaces.IsolationPolicyName, metav1.GetOptions{})
			return err == nil
		}, time.Minute, 100*time.Millisecond, "%s has its tenant isolation NetworkPolicy", ns)
		require.Len(t, np.Spec.Ingress, 1)
		require.Len(t, np.Spec.Ingress[0].From, 2)
		assert.Equal(t, map[string]string{"kcp.io/tenant-id": tenant(ns)}, np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels,
			"%s admits only its own tenant's namespaces (and those of no tenant)", ns)
	}
	waitConfigMapValue(t, physical, nsA, "settings", "from-a", p)
	waitConfigMapValue(t, physical, nsB, "settings", "from-b", p)

	// An update in one workspace changes only its own copy.
	updateConfigMap(t, kubeA, "shop", "settings", "from-a-2")
	waitConfigMapValue(t, physical, nsA, "settings", "from-a-2", p)
	waitConfigMapValue(t, physical, nsB, "settings", "from-b", p)

	// Deleting upstream deletes downstream, in that workspace only.
	deleteConfigMapEverywhere(t, kubeA, physical, "shop", nsA, "settings", p)
	waitConfigMapValue(t, physical, nsB, "settings", "from-b", p)

	// Deleting the user's namespace removes the downstream namespace (after kcp's
	// --downstream-namespace-clean-delay, 30 s in kcp's generated Deployment).
	require.NoError(t, kubeB.CoreV1().Namespaces().Delete(ctx, "shop", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		ns, err := physical.CoreV1().Namespaces().Get(ctx, nsB, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && ns.DeletionTimestamp != nil)
	}, 2*time.Minute, time.Second, "team-b's downstream namespace goes with its upstream namespace; output:\n%s", p.Output)
	_, err := physical.CoreV1().Namespaces().Get(ctx, nsA, metav1.GetOptions{})
	assert.NoError(t, err, "team-a's namespace stays")
}
