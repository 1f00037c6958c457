package kcp

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workspacedns "github.com/tmc-syncer/syncer/modules/downstream/dns"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// kcp's own e2e (test/e2e/syncer, test/e2e/reconciler/deployment), with our syncer: a
// user workspace bound to the compute export creates a Deployment, a Service, a
// ConfigMap and a Secret; they appear in the kcp-named downstream namespace, and the
// Deployment's status, made by the physical cluster's deployment controller, comes
// back to the user's workspace.
func TestKCPDeploymentServiceConfigMapSecretSyncAndStatusComesBack(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	st, p := startOurSyncer(t, env, "workload", "deployments.apps", "services")
	markWorkspaceDNSReady(t, env, st)

	stClient := dynamic.NewForConfigOrDie(st.location.Config).Resource(workloadv1alpha1.SyncTargetsResource)
	require.Eventually(t, func() bool {
		got, err := stClient.Get(ctx, st.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		accepted := acceptedResources(got)
		return accepted["deployments"] && accepted["services"] && accepted["pods"] && accepted["ingresses"] &&
			conditionStatus(got, "APIImporterReady") == "True" && conditionStatus(got, "SyncerAuthorized") == "True"
	}, 2*time.Minute, 500*time.Millisecond, "kcp accepts the v1.37 schemas our API importer publishes; output:\n%s", p.Output)

	team := userWorkspace(t, env, "team-workload", st)
	kube := kubernetes.NewForConfigOrDie(team.Config)
	createConfigMap(t, kube, "default", "web-config", "hello")
	_, err := kube.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-secret"}, StringData: map[string]string{"token": "s3cr3t"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"},
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	replicas := int32(2)
	_, err = kube.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
		},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	waitConfigMapValue(t, physical, downNS, "web-config", "hello", p)
	require.Eventually(t, func() bool {
		_, errS := physical.CoreV1().Secrets(downNS).Get(ctx, "web-secret", metav1.GetOptions{})
		_, errSvc := physical.CoreV1().Services(downNS).Get(ctx, "web", metav1.GetOptions{})
		d, errD := physical.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
		return errS == nil && errSvc == nil && errD == nil && *d.Spec.Replicas == 2
	}, time.Minute, 250*time.Millisecond, "Secret, Service and Deployment arrive in %s; output:\n%s", downNS, p.Output)

	// The pods resolve names through their workspace's DNS server, as under kcp.
	d, err := physical.AppsV1().Deployments(downNS).Get(ctx, "web", metav1.GetOptions{})
	require.NoError(t, err)
	dnsSvc, err := physical.CoreV1().Services(st.deployment.Namespace).Get(ctx, workspacedns.ID(team.Cluster, st.uid, st.name), metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, corev1.DNSNone, d.Spec.Template.Spec.DNSPolicy)
	require.NotNil(t, d.Spec.Template.Spec.DNSConfig)
	require.Equal(t, []string{dnsSvc.Spec.ClusterIP}, d.Spec.Template.Spec.DNSConfig.Nameservers)
	require.Equal(t, "default.svc.cluster.local", d.Spec.Template.Spec.DNSConfig.Searches[0], "the upstream namespace is searched first")

	require.Eventually(t, func() bool {
		d, err := kube.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.ObservedGeneration > 0 && d.Status.Replicas == 2
	}, 2*time.Minute, 500*time.Millisecond, "the physical cluster's Deployment status comes back to the workspace; output:\n%s", p.Output)
}
