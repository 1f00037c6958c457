package manifests

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

var update = flag.Bool("update", false, "rewrite deploy/syncer/syncer.yaml from the manifests")

// Example is the configuration deploy/syncer is rendered from.
var Example = Config{
	SyncTargetName: "example",
	SyncTargetUID:  "00000000-0000-0000-0000-000000000000",
	FromCluster:    "root",
	UpstreamKubeconfig: []byte("# replace with the kubeconfig of the syncer's identity upstream\n" +
		"apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"),
	Resources: []string{"deployments.apps", "services"},
	Image:     "tmc-syncer/syncer:latest",
	Replicas:  2,
}

func TestDeployBaseMatchesManifests(t *testing.T) {
	got, err := YAML(Objects(Example))
	require.NoError(t, err)
	path := filepath.Join("..", "..", "..", "deploy", "syncer", "syncer.yaml")
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "deploy/syncer/syncer.yaml is stale: go test ./manifests -update")
}

func TestDeploymentIsHardenedAndProbed(t *testing.T) {
	var dep *appsv1.Deployment
	for _, o := range Objects(Example) {
		if d, ok := o.(*appsv1.Deployment); ok {
			dep = d
		}
	}
	require.NotNil(t, dep)
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	assert.Equal(t, int64(65532), *pod.SecurityContext.RunAsUser)
	assert.True(t, *pod.SecurityContext.RunAsNonRoot)
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	assert.Equal(t, "/livez", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Contains(t, c.Args, "--leader-elect", "two replicas elect a leader")
	assert.Contains(t, c.Args, "--sync-target-uid=00000000-0000-0000-0000-000000000000")
	assert.NotNil(t, c.Resources.Requests.Cpu())
}

func TestOnlyTheHealthPortIsExposedUnlessMetricsAreAskedFor(t *testing.T) {
	container := func(c Config) corev1.Container {
		for _, o := range Objects(c) {
			if d, ok := o.(*appsv1.Deployment); ok {
				return d.Spec.Template.Spec.Containers[0]
			}
		}
		t.Fatal("no Deployment")
		return corev1.Container{}
	}
	c := container(Example)
	assert.Contains(t, c.Args, "--health-bind-address=:8081", "the kubelet probes the pod's address")
	assert.Contains(t, c.Args, "--metrics-bind-address=127.0.0.1:8080", "metrics stay on loopback")
	assert.Equal(t, []corev1.ContainerPort{{Name: "health", ContainerPort: 8081}}, c.Ports)
	assert.Equal(t, "health", c.ReadinessProbe.HTTPGet.Port.String())

	exposed := Example
	exposed.ExposeMetrics = true
	c = container(exposed)
	assert.Contains(t, c.Args, "--metrics-bind-address=:8080")
	assert.Contains(t, c.Ports, corev1.ContainerPort{Name: "metrics", ContainerPort: 8080})
}

func TestClusterRulesGrantOnlyWhatIsSynced(t *testing.T) {
	rules := ClusterRules([]string{"deployments.apps", "services", "deployments.apps"})
	find := func(group, resource string) *rbacv1.PolicyRule {
		for i, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					if g == group && res == resource {
						return &rules[i]
					}
				}
			}
		}
		return nil
	}
	for _, gr := range [][2]string{{"apps", "deployments"}, {"", "services"}, {"", "configmaps"}, {"", "secrets"}, {"", "serviceaccounts"}, {"apps", "deployments/status"}} {
		r := find(gr[0], gr[1])
		require.NotNil(t, r, "%s.%s granted", gr[1], gr[0])
		assert.Contains(t, r.Verbs, "patch")
	}
	assert.Equal(t, []string{"get"}, find("apps", "replicasets").Verbs, "a Deployment's ReplicaSets are only read, for Event forwarding")
	assert.Nil(t, find("batch", "jobs"), "no CronJobs synced, no Jobs read")
	assert.Nil(t, find("apps", "statefulsets"), "nothing unsynced")
	assert.Nil(t, find("", "nodes"))
	assert.Equal(t, []string{"get", "list", "watch"}, find("", "events").Verbs, "events are only read")
	for _, r := range rules {
		assert.NotContains(t, r.Verbs, "*")
		assert.NotContains(t, r.Resources, "*")
	}
}

func TestNamespaceNameIsAValidLabel(t *testing.T) {
	for _, name := range []string{"a", "eu-1", strings.Repeat("x", 253)} {
		ns := NamespaceName("root:org", name)
		assert.Empty(t, validation.IsDNS1123Label(ns), ns)
		assert.Equal(t, ns, NamespaceName("root:org", name), "deterministic")
	}
	assert.NotEqual(t, NamespaceName("a", "x"), NamespaceName("b", "x"), "per logical cluster")
}
