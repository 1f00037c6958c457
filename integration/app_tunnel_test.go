package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// TestSyncerBinarySyncsAnAppThroughTheTunnel runs the real binary with all upstream
// traffic through the tunnel, as the demo does: a Deployment, a Service, a ConfigMap
// and a Secret arrive in the physical cluster, and the Deployment's status written
// there by the physical cluster's deployment controller comes back upstream.
func TestSyncerBinarySyncsAnAppThroughTheTunnel(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	st := createSyncTarget(t, env, "app-tunnelled")
	target := identity.NewTarget("root", "app-tunnelled", st.GetUID())
	ts := startTunnelServer(t, env, "")
	p := startSyncerBinary(t,
		"--from-kubeconfig="+syncerIdentity(t, env, "app-tunnelled"), "--to-kubeconfig="+env.Physical.Kubeconfig,
		"--sync-target-name=app-tunnelled", "--sync-target-uid="+string(st.GetUID()),
		"--resources=deployments.apps,services",
		"--health-bind-address=", "--metrics-bind-address=",
		"--tunnel-url=http://"+ts.addr, "--tunnel-insecure")
	require.Eventually(t, func() bool { return ts.connected("root", "app-tunnelled") }, 60*time.Second, 50*time.Millisecond,
		"the syncer connects to the tunnel server; output:\n%s", p.Output)

	ns := env.KCP.CreateNamespace(t, "app")
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "app-tunnelled", UID: string(st.GetUID())},
		Cluster:    "root", Namespace: ns,
	})
	require.NoError(t, err)
	sync := map[string]string{target.StateLabel(): "Sync"}
	up := env.KCP.Kube(t)
	_, err = up.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "web-config", Labels: sync}, Data: map[string]string{"greeting": "hello"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = up.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "web-secret", Labels: sync}, StringData: map[string]string{"token": "s3cr3t"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = up.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: sync},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	dep := deployment("web", 2)
	dep.SetLabels(sync)
	// The control plane runs a deployment controller too, writing the same status from
	// its own ReplicaSets. A spec-diff gives the downstream pod template an annotation,
	// so the downstream ReplicaSet (named in the Progressing message) tells them apart.
	dep.SetAnnotations(map[string]string{kcp.SpecDiffAnnotation(target.Key): `[{"op":"add","path":"/template/metadata/annotations","value":{"tmc.dev/side":"downstream"}}]`})
	deployments := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	_, err = env.KCP.Dynamic(t).Resource(deployments).Namespace(ns).Create(ctx, dep, metav1.CreateOptions{})
	require.NoError(t, err)

	down := env.Physical.Kube(t)
	require.Eventually(t, func() bool {
		cm, err1 := down.CoreV1().ConfigMaps(downNS).Get(ctx, "web-config", metav1.GetOptions{})
		sec, err2 := down.CoreV1().Secrets(downNS).Get(ctx, "web-secret", metav1.GetOptions{})
		svc, err3 := down.CoreV1().Services(downNS).Get(ctx, "web", metav1.GetOptions{})
		_, err4 := down.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		return err1 == nil && err2 == nil && err3 == nil && err4 == nil &&
			cm.Data["greeting"] == "hello" && string(sec.Data["token"]) == "s3cr3t" && svc.Spec.Ports[0].Port == 80
	}, 60*time.Second, 100*time.Millisecond, "the app arrives in the physical cluster; output:\n%s", p.Output)

	var explain string
	if !assert.Eventually(t, func() bool {
		d, err := down.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			explain = err.Error()
			return false
		}
		u, err := env.KCP.Dynamic(t).Resource(deployments).Namespace(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			explain = err.Error()
			return false
		}
		explain = fmt.Sprintf("downstream status %+v\nupstream status %v, status managers %v", d.Status, u.Object["status"], u.GetManagedFields())
		return d.Status.Replicas == 2 && hasStatusManager(u, "tmc-syncer") && statusField(u, "replicas") == 2 &&
			progressingMessage(u) == downstreamProgressing(d.Status.Conditions)
	}, 60*time.Second, 100*time.Millisecond, "the downstream Deployment status comes back upstream through the tunnel") {
		t.Fatalf("%s\noutput:\n%s", explain, p.Output)
	}
}

func downstreamProgressing(conds []appsv1.DeploymentCondition) string {
	for _, c := range conds {
		if c.Type == appsv1.DeploymentProgressing {
			return c.Message
		}
	}
	return "none"
}

func progressingMessage(obj *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Progressing" {
			msg, _ := m["message"].(string)
			return msg
		}
	}
	return ""
}
