package integration

import (
	"bytes"
	"context"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
)

// applyUpstreamRBAC runs `syncer upstream-rbac` and creates what it prints, and nothing
// else, in the control plane.
func applyUpstreamRBAC(t *testing.T, env *framework.Environment, args ...string) {
	t.Helper()
	out, err := exec.Command(syncerBinary(t), append([]string{"upstream-rbac"}, args...)...).Output()
	require.NoError(t, err, "syncer upstream-rbac")
	dyn := env.KCP.Dynamic(t)
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		require.NoError(t, yaml.Unmarshal(doc, &u.Object))
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		require.NoError(t, err)
		res := gv.WithResource(strings.ToLower(u.GetKind()) + "s")
		_, err = dyn.Resource(res).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
		require.NoError(t, err, "apply %s %s", u.GetKind(), u.GetName())
		t.Cleanup(func() {
			_ = dyn.Resource(res).Namespace(u.GetNamespace()).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
		})
	}
}

// TestSyncerWithExactlyTheUpstreamRBACCannotActAsSyncTargetB runs the real syncer binary
// on the plain hub as a ServiceAccount holding exactly what `syncer upstream-rbac` prints
// for its SyncTarget A (two SyncTargets, A and B, each with its own output), with the
// tunnel on (`syncer tunnel-server` reviewing against the hub): a ConfigMap and a
// Deployment reach the physical cluster, the Deployment's status comes back (written by
// tmc-syncer through the status subresource) and its Events are forwarded, deleting both
// upstream deletes them downstream and releases the upstream finalizer, A's heartbeats
// land, its tunnel is up, and nothing the syncer asked was forbidden. Then, with A's real
// credentials: B's tunnel is refused (403), B cannot be heartbeated or read (403), and no
// tunnel token can be minted for B's ServiceAccount (403).
func TestSyncerWithExactlyTheUpstreamRBACCannotActAsSyncTargetB(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	suffix := rand.String(5)
	nameA, nameB := "uprbac-a-"+suffix, "uprbac-b-"+suffix
	stA := createSyncTarget(t, env, nameA)
	createSyncTarget(t, env, nameB)
	ns := "syncers-" + suffix
	const resources = "deployments.apps"

	// Each syncer's ServiceAccount with exactly its `syncer upstream-rbac` output (the
	// kubeconfig helper binds the same per-target ClusterRole once more, nothing else).
	kubeconfigs := map[string]string{}
	for _, name := range []string{nameA, nameB} {
		path, err := framework.ServiceAccountKubeconfig(ctx, env.KCP, ns, name, "tmc-syncer:synctarget:"+name, t.TempDir())
		require.NoError(t, err)
		kubeconfigs[name] = path
		applyUpstreamRBAC(t, env, "--sync-target-name="+name, "--namespace="+ns, "--service-account="+name, "--resources="+resources)
	}
	cfgA, err := clientcmd.BuildConfigFromFlags("", kubeconfigs[nameA])
	require.NoError(t, err)
	kubeA, err := kubernetes.NewForConfig(cfgA)
	require.NoError(t, err)
	dynA, err := dynamic.NewForConfig(cfgA)
	require.NoError(t, err)
	// RBAC just created: wait until the authorizer knows it before the syncer starts.
	require.Eventually(t, func() bool {
		_, err = dynA.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, nameA, metav1.GetOptions{})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "A may read its SyncTarget: %v", err)

	ts := startTunnelServerBinary(t, env)
	p := startSyncerBinary(t, syncerArgsFor(kubeconfigs[nameA], env, nameA, string(stA.GetUID()),
		"--resources="+resources, "--tunnel-url="+ts.url, "--tunnel-ca-file="+ts.caFile)...)

	up := env.KCP.Kube(t)
	down := env.Physical.Kube(t)
	target := identity.NewTarget("root", nameA, stA.GetUID())
	upNS := env.KCP.CreateNamespace(t, "uprbac")
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: nameA, UID: string(stA.GetUID())}, Cluster: "root", Namespace: upNS,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = down.CoreV1().Namespaces().Delete(context.Background(), downNS, metav1.DeleteOptions{}) })
	labels := map[string]string{target.StateLabel(): "Sync"}
	_, err = up.CoreV1().ConfigMaps(upNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Labels: labels}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	replicas := int32(1)
	// The hub runs a deployment controller too: a spec-diff gives the downstream pod
	// template another annotation, so the downstream status (its ReplicaSet's name in the
	// Progressing message) differs from the one the hub computes and must be written up.
	specDiff := map[string]string{kcp.SpecDiffAnnotation(target.Key): `[{"op":"add","path":"/template/metadata/annotations","value":{"tmc.dev/side":"downstream"}}]`}
	_, err = up.AppsV1().Deployments(upNS).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels, Annotations: specDiff},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1"}}}},
		}}, metav1.CreateOptions{})
	require.NoError(t, err)

	const wait = 90 * time.Second
	require.Eventually(t, func() bool {
		cm, err1 := down.CoreV1().ConfigMaps(downNS).Get(ctx, "cm", metav1.GetOptions{})
		_, err2 := down.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		return err1 == nil && err2 == nil && cm.Data["v"] == "1"
	}, wait, 200*time.Millisecond, "the ConfigMap and the Deployment reach the physical cluster; syncer output:\n%s", p.Output)
	deployments := env.KCP.Dynamic(t).Resource(appsv1.SchemeGroupVersion.WithResource("deployments")).Namespace(upNS)
	downDeployments := env.Physical.Dynamic(t).Resource(appsv1.SchemeGroupVersion.WithResource("deployments")).Namespace(downNS)
	var lastDown, lastUp *unstructured.Unstructured
	if !assert.Eventually(t, func() bool {
		d, err := downDeployments.Get(ctx, "web", metav1.GetOptions{})
		if err != nil || statusField(d, "replicas") != 1 || statusField(d, "observedGeneration") != d.GetGeneration() {
			return false
		}
		u, err := deployments.Get(ctx, "web", metav1.GetOptions{})
		lastDown, lastUp = d, u
		return err == nil && reflect.DeepEqual(d.Object["status"], u.Object["status"]) && hasStatusManager(u, "tmc-syncer")
	}, wait, 50*time.Millisecond, "the downstream Deployment's status is written upstream by tmc-syncer") {
		if lastDown != nil && lastUp != nil {
			t.Fatalf("downstream status %v\nupstream status %v", lastDown.Object["status"], lastUp.Object["status"])
		}
		t.FailNow()
	}
	require.Eventually(t, func() bool {
		evs, err := up.CoreV1().Events(upNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web"})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Source.Component == "tmc-syncer/"+nameA {
				return true
			}
		}
		return false
	}, wait, 200*time.Millisecond, "the Deployment's downstream Events are forwarded upstream")
	require.Eventually(t, func() bool {
		st, err := env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, nameA, metav1.GetOptions{})
		if err != nil {
			return false
		}
		hb, _, _ := unstructured.NestedString(st.Object, "status", "lastSyncerHeartbeatTime")
		return hb != ""
	}, wait, 200*time.Millisecond, "A's heartbeat lands on its SyncTarget")
	require.Eventually(t, func() bool { return ts.srvConnected(t, "root", nameA) },
		wait, 100*time.Millisecond, "A's tunnel is up; tunnel-server output:\n%s", ts.Output)

	require.NoError(t, up.CoreV1().ConfigMaps(upNS).Delete(ctx, "cm", metav1.DeleteOptions{}))
	require.NoError(t, up.AppsV1().Deployments(upNS).Delete(ctx, "web", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, e1 := down.CoreV1().ConfigMaps(downNS).Get(ctx, "cm", metav1.GetOptions{})
		_, e2 := down.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		_, e3 := up.CoreV1().ConfigMaps(upNS).Get(ctx, "cm", metav1.GetOptions{})
		_, e4 := up.AppsV1().Deployments(upNS).Get(ctx, "web", metav1.GetOptions{})
		return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2) && apierrors.IsNotFound(e3) && apierrors.IsNotFound(e4)
	}, wait, 200*time.Millisecond, "the deletes go down and the upstream finalizers are released")
	// Upsync is opt-in (`--upsync`): without it the upsyncer says once a minute that its
	// resources are not available; any other refusal is a missing rule.
	for _, line := range strings.Split(p.Output.String(), "\n") {
		if strings.Contains(strings.ToLower(line), "forbidden") && !strings.Contains(line, "upsync: resource not available yet") {
			t.Errorf("a request of the syncer was forbidden upstream: %s", line)
		}
	}

	// A's real credentials cannot act as B. Tunnel tokens: for itself only.
	expiry := int64(600)
	tokenReq := func(sa string) (*authnv1.TokenRequest, error) {
		return kubeA.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			Audiences: []string{client.DefaultTunnelAudience}, ExpirationSeconds: &expiry,
		}}, metav1.CreateOptions{})
	}
	tokA, err := tokenReq(nameA)
	require.NoError(t, err, "A may request a tunnel token for its own ServiceAccount")
	_, err = tokenReq(nameB)
	assert.True(t, apierrors.IsForbidden(err), "A may not request a token for B's ServiceAccount: %v", err)

	// Tunnels: B's is refused to A's token (A's own is connected above).
	hc := ts.httpClient(t)
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	ws, resp, err := websocket.Dial(hctx, "wss"+strings.TrimPrefix(ts.url, "https")+tunnel.Target{Cluster: "root", Name: nameB}.Path(), &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tokA.Status.Token}}, Subprotocols: []string{tunnel.Subprotocol},
	})
	if ws != nil {
		_ = ws.CloseNow()
	}
	require.Error(t, err, "A's token must not open B's tunnel")
	require.NotNil(t, resp, "handshake for B: %v", err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "A cannot open B's tunnel")
	assert.False(t, ts.srvConnected(t, "root", nameB), "B has no tunnel")

	// Heartbeats and reads: A's own SyncTarget only.
	patch := []byte(`{"status":{"lastSyncerHeartbeatTime":"` + time.Now().UTC().Format(time.RFC3339) + `"}}`)
	sts := dynA.Resource(workloadv1alpha1.SyncTargetsResource)
	_, err = sts.Patch(ctx, nameB, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	assert.True(t, apierrors.IsForbidden(err), "A cannot heartbeat B: %v", err)
	_, err = sts.Get(ctx, nameB, metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "A cannot read B: %v", err)
	_, err = sts.Patch(ctx, nameA, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	assert.NoError(t, err, "A heartbeats its own SyncTarget")
}

// syncerArgsFor is syncerArgs with upstream identity kubeconfig instead of the admin's.
func syncerArgsFor(kubeconfig string, env *framework.Environment, name, uid string, extra ...string) []string {
	args := syncerArgs(env, name, uid, extra...)
	args[0] = "--from-kubeconfig=" + kubeconfig
	return args
}
