package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// installedRBAC is what manifestsRBAC applied: the ClusterRole bound cluster-wide and
// the args of the manifests' Deployment.
type installedRBAC struct {
	clusterRole string
	args        []string
}

// arg is the Deployment's --name=value argument ("" when absent).
func (r installedRBAC) arg(name string) string {
	for _, a := range r.args {
		if strings.HasPrefix(a, "--"+name+"=") {
			return a
		}
	}
	return ""
}

// manifestsRBAC runs `syncer manifests` and applies its Namespace, ServiceAccount and RBAC
// objects (not the Deployment) to the physical cluster.
func manifestsRBAC(t *testing.T, env *framework.Environment, args ...string) installedRBAC {
	t.Helper()
	out, err := exec.Command(syncerBinary(t), append([]string{"manifests"}, args...)...).Output()
	require.NoError(t, err, "syncer manifests")
	dyn := env.Physical.Dynamic(t)
	var installed installedRBAC
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		require.NoError(t, yaml.Unmarshal(doc, &u.Object))
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		require.NoError(t, err)
		var resource string
		switch u.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			resource = strings.ToLower(u.GetKind()) + "s"
		case "Deployment":
			containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			require.Len(t, containers, 1)
			installed.args, _, _ = unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
			continue
		default:
			continue
		}
		if u.GetKind() == "ClusterRoleBinding" {
			installed.clusterRole, _, _ = unstructured.NestedString(u.Object, "roleRef", "name")
		}
		_, err = dyn.Resource(gv.WithResource(resource)).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
		require.NoError(t, err, "apply %s %s", u.GetKind(), u.GetName())
		t.Cleanup(func() {
			_ = dyn.Resource(gv.WithResource(resource)).Namespace(u.GetNamespace()).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
		})
	}
	require.NotEmpty(t, installed.clusterRole, "the manifests bind a ClusterRole")
	require.NotEmpty(t, installed.args, "the manifests hold a Deployment")
	return installed
}

// TestSyncerWithExactlyTheManifestsRBACSyncsEndToEnd runs the real binary against the
// physical cluster as the ServiceAccount of `syncer manifests`, with exactly the RBAC
// those manifests grant and the Deployment's --downstream-namespace-role (and leader
// election, which uses the namespaced Role, and a tunnel): ConfigMaps, Secrets,
// ServiceAccounts, Services, Deployments and Pods are created, updated and deleted
// downstream, pod logs are read through the tunnel, no request is forbidden, and verbs the
// syncer does not need are not granted. Its writes are granted only in the namespaces it
// manages (the RoleBinding it makes there): it cannot write a Secret, a ServiceAccount or
// reach a pod anywhere else.
func TestSyncerWithExactlyTheManifestsRBACSyncsEndToEnd(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	name := "rbac-" + rand.String(5)
	st := createSyncTarget(t, env, name)
	target := identity.NewTarget("root", name, st.GetUID())
	syncerNS := "tmc-syncer-" + name
	resources := "deployments.apps,services,pods"
	rbac := manifestsRBAC(t, env, "--sync-target-name="+name, "--sync-target-uid="+string(st.GetUID()),
		"--from-cluster=root", "--from-kubeconfig="+env.KCP.Kubeconfig, "--resources="+resources, "--namespace="+syncerNS)
	nsRoleArg := rbac.arg("downstream-namespace-role")
	require.NotEmpty(t, nsRoleArg, "the manifests' Deployment names the namespace role")
	nsRole := strings.TrimPrefix(nsRoleArg, "--downstream-namespace-role=")
	kubeconfig, err := framework.ServiceAccountKubeconfig(ctx, env.Physical, syncerNS, "tmc-syncer", rbac.clusterRole, t.TempDir())
	require.NoError(t, err)

	node := "stub-node-" + strings.ToLower(string(st.GetUID())[:8])
	env.Physical.StartStubKubelet(t, node, func(_, _, container string) ([]string, bool) {
		return podLogLines(3), container == "app"
	}, 10*time.Millisecond)
	ts := startTunnelServerBinary(t, env)

	out := &bytes.Buffer{}
	cmd := exec.Command(syncerBinary(t),
		"--from-kubeconfig="+syncerIdentity(t, env, name), "--to-kubeconfig="+kubeconfig,
		"--sync-target-name="+name, "--sync-target-uid="+string(st.GetUID()), "--resources="+resources,
		"--health-bind-address=127.0.0.1:0", "--metrics-bind-address=127.0.0.1:0", "--leader-elect", nsRoleArg,
		"--tunnel-url="+ts.url, "--tunnel-ca-file="+ts.caFile)
	cmd.Env = append(os.Environ(), "NAMESPACE="+syncerNS)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("syncer output:\n%s", out)
		}
	})

	ns := env.KCP.CreateNamespace(t, "rbac")
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: name, UID: string(st.GetUID())}, Cluster: "root", Namespace: ns,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = env.Physical.Kube(t).CoreV1().Namespaces().Delete(context.Background(), downNS, metav1.DeleteOptions{})
	})
	labels := map[string]string{target.StateLabel(): "Sync"}
	up := env.KCP.Kube(t)
	_, err = up.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Labels: labels}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = up.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Labels: labels}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = up.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sa", Labels: labels}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = up.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc", Labels: labels},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}, Selector: map[string]string{"app": "web"}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	replicas := int32(1)
	_, err = up.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1"}}}},
		}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = up.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "logger", Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	down := env.Physical.Kube(t)
	const wait = 90 * time.Second
	require.Eventually(t, func() bool {
		cm, err1 := down.CoreV1().ConfigMaps(downNS).Get(ctx, "cm", metav1.GetOptions{})
		_, err2 := down.CoreV1().Secrets(downNS).Get(ctx, "s", metav1.GetOptions{})
		_, err3 := down.CoreV1().Services(downNS).Get(ctx, "svc", metav1.GetOptions{})
		_, err4 := down.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		_, err5 := down.CoreV1().ServiceAccounts(downNS).Get(ctx, "sa", metav1.GetOptions{})
		_, err6 := down.CoreV1().Pods(downNS).Get(ctx, "logger", metav1.GetOptions{})
		return err1 == nil && err2 == nil && err3 == nil && err4 == nil && err5 == nil && err6 == nil && cm.Data["v"] == "1"
	}, wait, 200*time.Millisecond, "all six objects reach the physical cluster")

	// The writes were granted by the RoleBinding the syncer made in the namespace.
	rb, err := down.RbacV1().RoleBindings(downNS).Get(ctx, nsRole, metav1.GetOptions{})
	require.NoError(t, err, "the syncer binds the namespace role in the namespace it manages")
	assert.Equal(t, rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: nsRole}, rb.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "tmc-syncer", Namespace: syncerNS}}, rb.Subjects)

	cm, err := up.CoreV1().ConfigMaps(ns).Get(ctx, "cm", metav1.GetOptions{})
	require.NoError(t, err)
	cm.Data["v"] = "2"
	_, err = up.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cm, err := down.CoreV1().ConfigMaps(downNS).Get(ctx, "cm", metav1.GetOptions{})
		return err == nil && cm.Data["v"] == "2"
	}, wait, 200*time.Millisecond, "the update goes down")
	require.NoError(t, up.CoreV1().Services(ns).Delete(ctx, "svc", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, errDown := down.CoreV1().Services(downNS).Get(ctx, "svc", metav1.GetOptions{})
		_, errUp := up.CoreV1().Services(ns).Get(ctx, "svc", metav1.GetOptions{})
		return apierrors.IsNotFound(errDown) && apierrors.IsNotFound(errUp)
	}, wait, 200*time.Millisecond, "the delete goes down and the upstream finalizer is released")
	require.Eventually(t, func() bool {
		l, err := down.CoordinationV1().Leases(syncerNS).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) > 0
	}, wait, 200*time.Millisecond, "leader election holds its Lease with the namespaced Role")

	// Pod logs through the tunnel: the syncer reads pods/log with its own credentials,
	// granted in the managed namespace only.
	require.Eventually(t, func() bool {
		return ts.srvConnected(t, "root", name)
	}, wait, 100*time.Millisecond, "the syncer's tunnel is up; tunnel-server output:\n%s", ts.Output)
	users := env.KCP.CreateNamespace(t, "rbac-users")
	reader := upstreamUserToken(t, env, users, "log-reader", ns)
	hc := ts.httpClient(t)
	var code int
	var body string
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+tunnel.Target{Cluster: "root", Name: name}.ProxyPath()+
			"/api/v1/namespaces/"+ns+"/pods/logger/log?container=app", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+reader)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, string(b)
		return code == http.StatusOK
	}, wait, 200*time.Millisecond, "pod logs through the tunnel with the manifests' RBAC")
	assert.Equal(t, strings.Join(podLogLines(3), "\n")+"\n", body)
	assert.NotContains(t, strings.ToLower(out.String()), "forbidden", "no request of the syncer was forbidden")

	// Outside the namespaces it manages, the syncer's own token writes nothing: before
	// the namespace role, the ClusterRole let it write Secrets everywhere.
	syncerCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	asSyncer, err := kubernetes.NewForConfig(syncerCfg)
	require.NoError(t, err)
	_, err = asSyncer.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted-" + name}}, metav1.CreateOptions{})
	require.True(t, apierrors.IsForbidden(err), "the syncer cannot create a Secret in a namespace it does not manage: %v", err)
	_, err = asSyncer.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "planted-" + name}}, metav1.CreateOptions{})
	require.True(t, apierrors.IsForbidden(err), "nor a ServiceAccount: %v", err)
	_, err = asSyncer.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "escalate-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "tmc-syncer", Namespace: syncerNS}},
	}, metav1.CreateOptions{})
	require.True(t, apierrors.IsForbidden(err), "it binds no role but the namespace role: %v", err)

	// Least privilege: what the syncer needs is granted, what it does not is absent.
	user := "system:serviceaccount:" + syncerNS + ":tmc-syncer"
	can := func(verb, group, resource, sub, ns string) bool {
		sar, err := down.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + syncerNS, "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Subresource: sub, Namespace: ns},
		}}, metav1.CreateOptions{})
		require.NoError(t, err)
		return sar.Status.Allowed
	}
	const unmanaged = "default"
	for _, c := range []struct {
		verb, group, resource, sub, ns string
		want                           bool
	}{
		{"patch", "apps", "deployments", "", downNS, true},
		{"update", "", "services", "status", downNS, true},
		{"create", "", "secrets", "", downNS, true},
		{"create", "", "namespaces", "", "", true},
		{"watch", "events.k8s.io", "events", "", "", true},
		{"create", "", "pods", "exec", downNS, true},
		{"get", "", "pods", "log", downNS, true},
		{"get", "apps", "replicasets", "", downNS, true},
		{"list", "", "secrets", "", "", true},
		{"list", "apps", "deployments", "", "", true},
		// Writes outside the managed namespaces.
		{"create", "", "secrets", "", unmanaged, false},
		{"update", "", "secrets", "", "kube-system", false},
		{"delete", "", "secrets", "", unmanaged, false},
		{"create", "", "serviceaccounts", "", unmanaged, false},
		{"patch", "", "configmaps", "", unmanaged, false},
		{"create", "apps", "deployments", "", unmanaged, false},
		{"create", "", "pods", "exec", unmanaged, false},
		{"get", "", "pods", "log", unmanaged, false},
		{"create", "", "pods", "portforward", "kube-system", false},
		{"create", "networking.k8s.io", "networkpolicies", "", unmanaged, false},
		{"patch", "", "endpoints", "", unmanaged, false},
		{"get", "apps", "replicasets", "", unmanaged, false},
		{"bind", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
		{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
		{"delete", "rbac.authorization.k8s.io", "rolebindings", "", downNS, false},
		// Not needed anywhere.
		{"list", "apps", "replicasets", "", downNS, false},
		{"get", "batch", "jobs", "", downNS, false},
		{"deletecollection", "", "configmaps", "", downNS, false},
		{"update", "", "namespaces", "", "", false},
		{"list", "", "nodes", "", "", false},
		{"get", "networking.k8s.io", "ingresses", "", downNS, false},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", false},
		{"impersonate", "", "users", "", "", false},
		{"create", "", "events", "", downNS, false},
		{"update", "coordination.k8s.io", "leases", "", "kube-system", false},
		{"delete", "coordination.k8s.io", "leases", "", syncerNS, false},
		// Per-workspace DNS (--dns-image): its objects in the syncer's namespace only.
		{"create", "rbac.authorization.k8s.io", "roles", "", syncerNS, true},
		{"create", "rbac.authorization.k8s.io", "roles", "", downNS, false},
		{"delete", "networking.k8s.io", "networkpolicies", "", syncerNS, true},
		{"delete", "networking.k8s.io", "networkpolicies", "", downNS, false},
		{"create", "apps", "deployments", "", syncerNS, true},
		// Endpoints are read everywhere for upsync (derived from annotated Services).
		{"get", "", "endpoints", "", downNS, true},
	} {
		assert.Equal(t, c.want, can(c.verb, c.group, c.resource, c.sub, c.ns), "%s %s.%s/%s in %q", c.verb, c.resource, c.group, c.sub, c.ns)
	}
}
