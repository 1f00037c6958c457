package kcp

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
)

// kcpTunnelServer is `syncer tunnel-server --kcp` next to the test kcp, serving HTTPS
// with a certificate of the physical cluster's CA.
type kcpTunnelServer struct {
	*framework.SyncerProcess
	url    string
	caFile string
}

// startKCPTunnelServer runs the tunnel server as a platform team would under kcp: with
// an admin identity of kcp's bare host (context "base" of kcp's admin kubeconfig) (it reviews tokens and writes relayed Events in
// whichever workspace a request names).
func startKCPTunnelServer(t *testing.T, env *framework.KCPEnvironment) *kcpTunnelServer {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := env.Physical.IssueServingCert(dir, "tunnel-server")
	require.NoError(t, err)
	addr, err := framework.FreeAddr()
	require.NoError(t, err)
	internal, err := framework.FreeAddr()
	require.NoError(t, err)
	p := framework.StartSyncer(t, framework.SyncerBinary(t, env.Root), nil, "tunnel-server", "--kcp", "-v=2",
		"--bind-address="+addr, "--internal-bind-address="+internal, "--kubeconfig="+env.KCP.Kubeconfig, "--context=base",
		"--tls-cert-file="+cert, "--tls-private-key-file="+key)
	ts := &kcpTunnelServer{SyncerProcess: p, url: "https://" + addr, caFile: env.Physical.CAFile()}
	hc := framework.HTTPClientTrusting(t, ts.caFile)
	require.Eventually(t, func() bool {
		resp, err := hc.Get(ts.url + "/livez") //nolint:noctx // readiness poll
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "tunnel-server --kcp serves; output:\n%s", p.Output)
	return ts
}

// grantEventsDownstream is the operator's one addition to kcp's install for Events
// (docs/kcp.md): the syncer may list and watch Events on the physical cluster.
func grantEventsDownstream(t *testing.T, env *framework.KCPEnvironment, st syncTarget) {
	t.Helper()
	ctx := context.Background()
	kube := env.Physical.Kube(t)
	name := "tmc-syncer-events-" + st.name
	_, err := kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"get", "list", "watch"}},
			// An Event about a Pod or ReplicaSet goes to the synced object that owns it.
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"get"}},
		}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: st.deployment.Namespace, Name: st.deployment.Spec.Template.Spec.ServiceAccountName}}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// Under kcp the syncer virtual workspace serves no Events and kcp's install lets the
// syncer write nothing in a user's workspace, so kcp's own syncer forwards none. Ours
// sends them through its tunnel server, which writes them with its own identity into
// namespaces placed on the syncer's SyncTarget: the Events the physical cluster's
// deployment controller records on the Deployment come back to the user's workspace.
func TestKCPEventsComeBackToTheWorkspaceThroughTheTunnelServer(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	ts := startKCPTunnelServer(t, env)
	st := installWithKcpsPlugin(t, env, "events", "deployments.apps")
	markWorkspaceDNSReady(t, env, st)
	grantEventsDownstream(t, env, st)
	grantTunnel(t, st)
	p := runOurSyncer(t, env, st, "--tunnel-url="+ts.url, "--tunnel-ca-file="+ts.caFile, "--pod-api-bind-address=")

	team := userWorkspace(t, env, "team-events", st)
	kube := kubernetes.NewForConfigOrDie(team.Config)
	replicas := int32(1)
	_, err := kube.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
		},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	var got corev1.Event
	require.Eventually(t, func() bool {
		list, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, ev := range list.Items {
			if ev.InvolvedObject.Kind == "Deployment" && ev.InvolvedObject.Name == "web" && ev.ReportingController == "tmc-syncer/events" &&
				ev.Reason == "ScalingReplicaSet" {
				got = ev
				return true
			}
		}
		return false
	}, 2*time.Minute, 500*time.Millisecond, "the downstream Deployment's Events come back to the workspace; syncer output:\n%s\ntunnel-server output:\n%s", p.Output, ts.Output)
	dep, err := kube.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, dep.UID, got.InvolvedObject.UID, "the Event is about the user's Deployment")
}
