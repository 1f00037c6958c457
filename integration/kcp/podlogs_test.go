package kcp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// workspaceUserToken creates ServiceAccount name in namespace ns of a workspace with a
// token Secret (filled by kcp's token controller), lets it get pods/log in ns when
// logRights, and returns its token: a user of that workspace (kcp's tokens are per
// workspace).
func workspaceUserToken(t *testing.T, kube kubernetes.Interface, ns, name string, logRights bool) string {
	t.Helper()
	ctx := context.Background()
	_, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-token", Annotations: map[string]string{corev1.ServiceAccountNameKey: name}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	if logRights {
		_, err = kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	var token string
	require.Eventually(t, func() bool {
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, name+"-token", metav1.GetOptions{})
		token = string(s.Data["token"])
		return err == nil && token != ""
	}, time.Minute, 250*time.Millisecond, "kcp's token controller fills %s/%s-token", ns, name)
	return token
}

// fromCluster is the --from-cluster kcp's plugin gives the syncer: the cluster of the
// SyncTarget in the syncer's tunnel endpoint.
func fromCluster(t *testing.T, st syncTarget) string {
	t.Helper()
	for _, a := range st.deployment.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--from-cluster="); ok {
			return v
		}
	}
	t.Fatalf("kcp's plugin gives the syncer no --from-cluster: %v", st.deployment.Spec.Template.Spec.Containers[0].Args)
	return ""
}

// A user of a workspace bound to compute reads the logs of a Pod of that workspace through
// our tunnel server, naming the workspace in the path
// (<target>/proxy/clusters/<workspace>/api/v1/namespaces/<ns>/pods/<pod>/log): the tunnel
// server reviews the user's token and asks the SubjectAccessReview in the workspace, maps
// the namespace with the syncer's own locator and sends the request through the syncer's
// tunnel; the physical kube-apiserver proxies it to a stub kubelet. kcp's own syncer has
// no way for a workspace user to read a synced pod's logs.
func TestKCPPodLogsFromTheWorkspaceThroughTheTunnelServer(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	ts := startKCPTunnelServer(t, env)
	st := installWithKcpsPlugin(t, env, "kcplogs", "deployments.apps", "services")
	markWorkspaceDNSReady(t, env, st)
	grantTunnel(t, st)
	p := runOurSyncer(t, env, st, "--tunnel-url="+ts.url, "--tunnel-ca-file="+ts.caFile, "--pod-api-bind-address=")
	waitComputeAccepted(t, st, p)

	lines := []string{"kcp log line 1", "kcp log line 2", "kcp log line 3"}
	node := "stub-node-kcplogs"
	kubelet := env.Physical.StartStubKubelet(t, node, func(_, _, container string) ([]string, bool) {
		return lines, container == "app"
	}, 50*time.Millisecond)

	team := userWorkspace(t, env, "team-kcplogs", st)
	kube := kubernetes.NewForConfigOrDie(team.Config)
	reader := workspaceUserToken(t, kube, "default", "log-reader", true)
	stranger := workspaceUserToken(t, kube, "default", "stranger", false)
	// The pod mutator projects the token Secret of the pod's ServiceAccount.
	workspaceUserToken(t, kube, "default", "app", false)
	// The physical cluster's controllers make the Pod (its template names the stub
	// kubelet's Node: the bed has no scheduler); with the tunnel on, the pod template is
	// labelled Upsync, so the Pod also appears in the workspace under the same name.
	replicas := int32(1)
	_, err := kube.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{
				NodeName: node, ServiceAccountName: "app", AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
			},
		},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	var pod string
	require.Eventually(t, func() bool {
		list, err := physical.CoreV1().Pods(downNS).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(list.Items) == 0 {
			return false
		}
		pod = list.Items[0].Name
		return true
	}, 2*time.Minute, 250*time.Millisecond, "the Deployment syncs down and its Pod is created; syncer output:\n%s", p.Output)

	// Another workspace, not bound to compute: its namespace is placed on no SyncTarget.
	other, err := env.KCP.CreateWorkspace(ctx, "root", "other-kcplogs")
	require.NoError(t, err)
	otherReader := workspaceUserToken(t, kubernetes.NewForConfigOrDie(other.Config), "default", "log-reader", true)

	hc := framework.HTTPClientTrusting(t, ts.caFile)
	target := tunnel.Target{Cluster: fromCluster(t, st), Name: st.name}
	logURL := func(workspace string) string {
		return ts.url + target.WorkspaceProxyPath(workspace) + "/api/v1/namespaces/default/pods/" + pod + "/log?container=app"
	}
	get := func(url, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	want := strings.Join(lines, "\n") + "\n"

	t.Run("a workspace user allowed to get pods/log reads the logs", func(t *testing.T) {
		var code int
		var body string
		// The tunnel comes up, and the syncer learns the namespace is managed, a moment
		// after the Pod lands.
		require.Eventually(t, func() bool {
			code, body = get(logURL(team.Path), reader)
			return code == http.StatusOK
		}, time.Minute, 250*time.Millisecond, "logs through the tunnel server; last answer %d %s\nsyncer output:\n%s\ntunnel-server output:\n%s",
			code, body, p.Output, ts.Output)
		assert.Equal(t, want, body)
	})

	t.Run("the workspace by its logical cluster name works too", func(t *testing.T) {
		code, body := get(logURL(team.Cluster), reader)
		assert.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, want, body)
	})

	t.Run("a workspace user without pods/log rights gets 403", func(t *testing.T) {
		code, body := get(logURL(team.Path), stranger)
		assert.Equal(t, http.StatusForbidden, code, body)
	})

	t.Run("a user naming another workspace, where it has no rights, gets 403", func(t *testing.T) {
		code, body := get(logURL(other.Path), reader)
		assert.Contains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, code, body)
	})

	t.Run("a user of another workspace whose namespace is not placed gets 404", func(t *testing.T) {
		code, body := get(logURL(other.Path), otherReader)
		assert.Equal(t, http.StatusNotFound, code, body)
		assert.Contains(t, body, "not placed on sync target")
	})

	t.Run("an invalid workspace name gets 400", func(t *testing.T) {
		code, body := get(ts.url+target.ProxyPath()+"/clusters/Root:X/api/v1/namespaces/default/pods/"+pod+"/log", reader)
		assert.Equal(t, http.StatusBadRequest, code, body)
	})

	for _, r := range kubelet.Requests() {
		assert.True(t, strings.HasPrefix(r, fmt.Sprintf("/containerLogs/%s/%s/app", downNS, pod)), "only the synced pod's logs reach the kubelet: %s", r)
	}
	require.NotEmpty(t, kubelet.Requests(), "kube-apiserver proxied pods/log to the stub kubelet")
}
