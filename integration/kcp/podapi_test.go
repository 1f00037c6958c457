package kcp

import (
	"context"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// probeCommand is where the pod spec says the probe program lives in its image.
const probeCommand = "/podprobe/podprobe"

// waitComputeAccepted waits until kcp accepts every resource of its compute export on the
// SyncTarget (so that `kubectl kcp bind compute` schedules).
func waitComputeAccepted(t *testing.T, st syncTarget, p *framework.SyncerProcess) {
	t.Helper()
	stClient := dynamic.NewForConfigOrDie(st.location.Config).Resource(workloadv1alpha1.SyncTargetsResource)
	require.Eventually(t, func() bool {
		got, err := stClient.Get(context.Background(), st.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		accepted := acceptedResources(got)
		return accepted["deployments"] && accepted["services"] && accepted["pods"] && accepted["ingresses"]
	}, 2*time.Minute, 500*time.Millisecond, "kcp accepts the compute export's resources; output:\n%s", p.Output)
}

// runOurSyncer runs our syncer from the plugin's Deployment, its health and metrics
// listeners off (their default ports may be taken on a shared machine), with extra
// arguments appended to the plugin's.
func runOurSyncer(t *testing.T, env *framework.KCPEnvironment, st syncTarget, extraArgs ...string) *framework.SyncerProcess {
	t.Helper()
	dep := st.deployment.DeepCopy()
	ctr := &dep.Spec.Template.Spec.Containers[0]
	ctr.Args = append(append(ctr.Args, "--health-bind-address=", "--metrics-bind-address="), extraArgs...)
	return framework.RunDeployment(t, env.Physical, dep, map[string]string{"/ko-app/syncer": framework.SyncerBinary(t, env.Root)})
}

// prober is a ServiceAccount of the user's workspace with a token Secret and the right to
// list ConfigMaps in its namespace, and a Deployment running the probe as it.
type prober struct {
	namespace, serviceAccount, tokenSecret string
}

func createProber(t *testing.T, kube kubernetes.Interface, ns string) prober {
	t.Helper()
	ctx := context.Background()
	pr := prober{namespace: ns, serviceAccount: "prober", tokenSecret: "prober-token"}
	_, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pr.serviceAccount}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: pr.tokenSecret, Annotations: map[string]string{corev1.ServiceAccountNameKey: pr.serviceAccount}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, pr.tokenSecret, metav1.GetOptions{})
		return err == nil && len(s.Data["token"]) > 0
	}, time.Minute, 250*time.Millisecond, "kcp's token controller fills %s/%s", ns, pr.tokenSecret)
	_, err = kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "list-configmaps"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prober-lists-configmaps"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "list-configmaps"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: pr.serviceAccount, Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	replicas := int32(1)
	_, err = kube.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "prober"}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "prober"}},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "prober"}},
			Spec: corev1.PodSpec{
				ServiceAccountName: pr.serviceAccount,
				Containers: []corev1.Container{{Name: "probe", Image: "example.com/podprobe", Command: []string{probeCommand},
					Env: []corev1.EnvVar{{Name: "MY_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}}},
			},
		},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	return pr
}

// downstreamProberSpec waits for the prober Deployment downstream with the mutated pod
// template (pointing at apiURL, with its CA from caConfigMap) and for the Secret and
// ConfigMap its projected volume names, and returns the pod spec.
func downstreamProberSpec(t *testing.T, physical kubernetes.Interface, downNS string, pr prober, apiURL *url.URL, caConfigMap string, p *framework.SyncerProcess) corev1.PodSpec {
	t.Helper()
	ctx := context.Background()
	var spec corev1.PodSpec
	require.Eventually(t, func() bool {
		d, err := physical.AppsV1().Deployments(downNS).Get(ctx, "prober", metav1.GetOptions{})
		if err != nil {
			return false
		}
		spec = d.Spec.Template.Spec
		return spec.AutomountServiceAccountToken != nil
	}, time.Minute, 250*time.Millisecond, "the prober Deployment arrives mutated in %s; output:\n%s", downNS, p.Output)

	assert.False(t, *spec.AutomountServiceAccountToken, "no physical-cluster token")
	assert.Empty(t, spec.ServiceAccountName, "the ServiceAccount lives upstream")
	env := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		assert.Nil(t, e.ValueFrom, "env %s is a value", e.Name)
		env[e.Name] = e.Value
	}
	assert.Equal(t, map[string]string{
		"MY_NAMESPACE":                  pr.namespace, // the upstream namespace, not downNS
		"KUBERNETES_SERVICE_HOST":       apiURL.Hostname(),
		"KUBERNETES_SERVICE_PORT":       apiURL.Port(),
		"KUBERNETES_SERVICE_PORT_HTTPS": apiURL.Port(),
	}, env)
	require.Len(t, spec.Volumes, 1)
	vol := spec.Volumes[0]
	assert.Equal(t, "kcp-api-access", vol.Name)
	require.NotNil(t, vol.Projected)
	require.Len(t, vol.Projected.Sources, 2)
	require.NotNil(t, vol.Projected.Sources[0].Secret)
	require.NotNil(t, vol.Projected.Sources[1].ConfigMap)
	assert.Equal(t, pr.tokenSecret, vol.Projected.Sources[0].Secret.Name, "the ServiceAccount's own token Secret, under its downstream name")
	assert.Equal(t, caConfigMap, vol.Projected.Sources[1].ConfigMap.Name)
	assert.Equal(t, []corev1.VolumeMount{{Name: "kcp-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
		spec.Containers[0].VolumeMounts)
	assert.Equal(t, corev1.DNSNone, spec.DNSPolicy, "the workspace's DNS, not the cluster's")
	require.NotNil(t, spec.DNSConfig)
	assert.Len(t, spec.DNSConfig.Nameservers, 1)

	require.Eventually(t, func() bool {
		_, errS := physical.CoreV1().Secrets(downNS).Get(ctx, pr.tokenSecret, metav1.GetOptions{})
		_, errC := physical.CoreV1().ConfigMaps(downNS).Get(ctx, caConfigMap, metav1.GetOptions{})
		return errS == nil && errC == nil
	}, time.Minute, 250*time.Millisecond, "Secret %s and ConfigMap %s the volume names exist in %s; output:\n%s", pr.tokenSecret, caConfigMap, downNS, p.Output)
	return spec
}

// runProbe runs the probe from spec as a kubelet would in downNS and returns its output,
// requiring that it listed the workspace's ConfigMaps: the upstream namespace, the
// ConfigMap only the workspace has, and the workspace's kcp.io/cluster on it.
func runProbe(t *testing.T, env *framework.KCPEnvironment, downNS string, spec corev1.PodSpec, overrides map[string]string, pr prober, cluster, marker string) string {
	t.Helper()
	probe := framework.RunPodContainer(t, env.Physical, downNS, spec,
		map[string]string{probeCommand: framework.CommandBinary(t, env.Root, "podprobe")}, overrides)
	code := probe.ExitCode(t, time.Minute)
	out := probe.Output.String()
	require.Equal(t, 0, code, "the probe lists ConfigMaps; output:\n%s", out)
	assert.Contains(t, out, "namespace "+pr.namespace+"\n", "the token Secret's namespace: the upstream one")
	assert.Contains(t, out, "configmap "+marker+" "+cluster+"\n", "the workspace's own ConfigMap, from the workspace")
	return out
}

// kcp's pod mutator, end to end: a Deployment of the user's workspace runs as its
// ServiceAccount prober downstream; its pod template points at kcp's address with prober's
// own token (its token Secret synced under the name the projected volume uses) and kcp's
// CA; a program started as the kubelet would start the container, in-cluster client and
// all, lists the ConfigMaps of its namespace in the workspace.
func TestKCPPodsReachTheirWorkspaceWithTheirOwnToken(t *testing.T) {
	env := framework.SharedKCP(t)
	st := installWithKcpsPlugin(t, env, "podapi", "deployments.apps", "services")
	markWorkspaceDNSReady(t, env, st)
	p := runOurSyncer(t, env, st)
	waitComputeAccepted(t, st, p)

	team := userWorkspace(t, env, "team-podapi", st)
	kube := kubernetes.NewForConfigOrDie(team.Config)
	createConfigMap(t, kube, "default", "only-in-the-workspace", "x")
	pr := createProber(t, kube, "default")

	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	kcpURL, err := url.Parse(env.KCP.Host)
	require.NoError(t, err)
	spec := downstreamProberSpec(t, physical, downNS, pr, kcpURL, "kcp-root-ca.crt", p)

	// The physical cluster holds only the synced copy under the downstream namespace: the
	// probe's "default" namespace downstream has no such ConfigMap.
	out := runProbe(t, env, downNS, spec, nil, pr, team.Cluster, "only-in-the-workspace")
	assert.Contains(t, out, "server "+strings.TrimSuffix(env.KCP.Host, "/")+"\n", "straight to kcp")
}

// freeAddr is a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// grantTunnel is the operator's one addition to kcp's install for the tunnel: kcp's
// plugin already grants get on synctargets/tunnel (what tunnel-server --kcp asks), and
// the syncer shows the tunnel server a short-lived token bound to the tunnel's audience,
// which it requests for its own ServiceAccount (create serviceaccounts/token on itself).
func grantTunnel(t *testing.T, st syncTarget) {
	t.Helper()
	ctx := context.Background()
	kube := kubernetes.NewForConfigOrDie(st.location.Config)
	name := "tmc-syncer-tunnel-token-" + st.name
	sa := st.deployment.Spec.Template.Spec.ServiceAccountName
	_, err := kube.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"},
			ResourceNames: []string{sa}, Verbs: []string{"create"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: sa}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// The same, with the syncer's tunnel: pods reach their workspace through the syncer (a
// Service in its namespace, HTTPS with the syncer's own CA, which every downstream
// namespace gets as a ConfigMap), which forwards their requests with their own token
// through the tunnel to kcp. The test bed has no kube-proxy: the program is started with
// the pod spec's env, except that the Service address it names is replaced by the syncer's
// listener behind it (KUBERNETES_SERVICE_HOST/PORT); everything else is as the pod spec says.
func TestKCPPodsReachTheirWorkspaceThroughTheTunnel(t *testing.T) {
	env := framework.SharedKCP(t)
	st := installWithKcpsPlugin(t, env, "podtunnel", "deployments.apps", "services")
	markWorkspaceDNSReady(t, env, st)
	grantTunnel(t, st)
	tunnelURL := startKCPTunnelServer(t, env).url
	podAPIAddr := freeAddr(t)
	p := runOurSyncer(t, env, st, "--tunnel-url="+tunnelURL, "--tunnel-ca-file="+env.Physical.CAFile(),
		"--pod-api-bind-address="+podAPIAddr, "--pod-api-selector=app=tmc-syncer")
	waitComputeAccepted(t, st, p)

	team := userWorkspace(t, env, "team-podtunnel", st)
	kube := kubernetes.NewForConfigOrDie(team.Config)
	createConfigMap(t, kube, "default", "only-in-the-workspace", "x")
	pr := createProber(t, kube, "default")

	ctx := context.Background()
	physical := env.Physical.Kube(t)
	var svc corev1.Service
	require.Eventually(t, func() bool {
		list, err := physical.CoreV1().Services(st.deployment.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=pod-api"})
		if err != nil || len(list.Items) != 1 {
			return false
		}
		svc = list.Items[0]
		return true
	}, time.Minute, 250*time.Millisecond, "the syncer creates its pod API Service; output:\n%s", p.Output)
	assert.Equal(t, map[string]string{"app": "tmc-syncer"}, svc.Spec.Selector)
	_, port, err := net.SplitHostPort(podAPIAddr)
	require.NoError(t, err)
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, int32(443), svc.Spec.Ports[0].Port)
	assert.Equal(t, port, svc.Spec.Ports[0].TargetPort.String())

	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	apiURL := &url.URL{Scheme: "https", Host: net.JoinHostPort(svc.Spec.ClusterIP, "443")}
	spec := downstreamProberSpec(t, physical, downNS, pr, apiURL, "tmc-syncer-pod-api-ca.crt", p)

	out := runProbe(t, env, downNS, spec, map[string]string{"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, pr, team.Cluster, "only-in-the-workspace")
	assert.Contains(t, out, "server https://"+podAPIAddr+"\n", "through the syncer's endpoint")
}
