package integration

import (
	"bytes"
	"context"
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/yaml"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// manifestsRBAC runs `syncer manifests` and applies its Namespace, ServiceAccount and RBAC
// objects (not the Deployment) to the physical cluster; it returns the ClusterRole's name.
func manifestsRBAC(t *testing.T, env *framework.Environment, args ...string) string {
	t.Helper()
	out, err := exec.Command(syncerBinary(t), append([]string{"manifests"}, args...)...).Output()
	require.NoError(t, err, "syncer manifests")
	dyn := env.Physical.Dynamic(t)
	clusterRole := ""
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
		default:
			continue
		}
		if u.GetKind() == "ClusterRole" {
			clusterRole = u.GetName()
		}
		_, err = dyn.Resource(gv.WithResource(resource)).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
		require.NoError(t, err, "apply %s %s", u.GetKind(), u.GetName())
		t.Cleanup(func() {
			_ = dyn.Resource(gv.WithResource(resource)).Namespace(u.GetNamespace()).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
		})
	}
	require.NotEmpty(t, clusterRole, "the manifests hold a ClusterRole")
	return clusterRole
}

// TestSyncerWithExactlyTheManifestsRBACSyncsEndToEnd runs the real binary in the physical
// cluster as the ServiceAccount of `syncer manifests`, with exactly the RBAC those manifests
// grant (and leader election, which uses the namespaced Role): ConfigMaps, Secrets, Services
// and Deployments are created, updated and deleted downstream, no request is forbidden, and
// verbs the syncer does not need are not granted.
func TestSyncerWithExactlyTheManifestsRBACSyncsEndToEnd(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	name := "rbac-" + rand.String(5)
	st := createSyncTarget(t, env, name)
	target := identity.NewTarget("root", name, st.GetUID())
	syncerNS := "tmc-syncer-" + name
	resources := "deployments.apps,services"
	clusterRole := manifestsRBAC(t, env, "--sync-target-name="+name, "--sync-target-uid="+string(st.GetUID()),
		"--from-cluster=root", "--from-kubeconfig="+env.KCP.Kubeconfig, "--resources="+resources, "--namespace="+syncerNS)
	kubeconfig, err := framework.ServiceAccountKubeconfig(ctx, env.Physical, syncerNS, "tmc-syncer", clusterRole, t.TempDir())
	require.NoError(t, err)

	out := &bytes.Buffer{}
	cmd := exec.Command(syncerBinary(t),
		"--from-kubeconfig="+env.KCP.Kubeconfig, "--to-kubeconfig="+kubeconfig,
		"--sync-target-name="+name, "--sync-target-uid="+string(st.GetUID()), "--resources="+resources,
		"--health-bind-address=127.0.0.1:0", "--metrics-bind-address=127.0.0.1:0", "--leader-elect")
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

	down := env.Physical.Kube(t)
	const wait = 90 * time.Second
	require.Eventually(t, func() bool {
		cm, err1 := down.CoreV1().ConfigMaps(downNS).Get(ctx, "cm", metav1.GetOptions{})
		_, err2 := down.CoreV1().Secrets(downNS).Get(ctx, "s", metav1.GetOptions{})
		_, err3 := down.CoreV1().Services(downNS).Get(ctx, "svc", metav1.GetOptions{})
		_, err4 := down.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		return err1 == nil && err2 == nil && err3 == nil && err4 == nil && cm.Data["v"] == "1"
	}, wait, 200*time.Millisecond, "all four objects reach the physical cluster")

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
	assert.NotContains(t, strings.ToLower(out.String()), "forbidden", "no request of the syncer was forbidden")

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
	for _, c := range []struct {
		verb, group, resource, sub, ns string
		want                           bool
	}{
		{"patch", "apps", "deployments", "", downNS, true},
		{"update", "", "services", "status", downNS, true},
		{"create", "", "namespaces", "", "", true},
		{"watch", "events.k8s.io", "events", "", "", true},
		{"create", "", "pods", "exec", downNS, true},
		{"get", "apps", "replicasets", "", downNS, true},
		{"list", "apps", "replicasets", "", downNS, false},
		{"get", "batch", "jobs", "", downNS, false},
		{"deletecollection", "", "configmaps", "", downNS, false},
		{"update", "", "namespaces", "", "", false},
		{"create", "", "pods", "", downNS, false},
		{"delete", "", "pods", "", downNS, false},
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
		{"get", "", "endpoints", "", downNS, false},
	} {
		assert.Equal(t, c.want, can(c.verb, c.group, c.resource, c.sub, c.ns), "%s %s.%s/%s in %q", c.verb, c.resource, c.group, c.sub, c.ns)
	}
}
