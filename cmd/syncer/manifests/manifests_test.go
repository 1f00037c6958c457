package manifests

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
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

func findRule(rules []rbacv1.PolicyRule, group, resource string) *rbacv1.PolicyRule {
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

// Cluster-wide, the syncer reads what it syncs and manages namespaces; it writes
// nothing else cluster-wide but RoleBindings of the one namespace role.
func TestClusterRulesGrantReadsAndNamespacesOnly(t *testing.T) {
	rules := ClusterRules([]string{"deployments.apps", "services", "deployments.apps"}, "ns-role")
	for _, gr := range [][2]string{{"apps", "deployments"}, {"", "services"}, {"", "configmaps"}, {"", "secrets"}, {"", "serviceaccounts"}} {
		r := findRule(rules, gr[0], gr[1])
		require.NotNil(t, r, "%s.%s read", gr[1], gr[0])
		assert.Equal(t, []string{"get", "list", "watch"}, r.Verbs, "%s.%s only read cluster-wide", gr[1], gr[0])
	}
	assert.Equal(t, []string{"get", "list", "watch", "create", "patch", "delete"}, findRule(rules, "", "namespaces").Verbs)
	bind := findRule(rules, "rbac.authorization.k8s.io", "clusterroles")
	require.NotNil(t, bind)
	assert.Equal(t, []string{"bind"}, bind.Verbs)
	assert.Equal(t, []string{"ns-role"}, bind.ResourceNames, "only the namespace role may be bound")
	assert.Equal(t, []string{"get", "list", "create"}, findRule(rules, "rbac.authorization.k8s.io", "rolebindings").Verbs)
	writes := map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true, "*": true}
	for _, r := range rules {
		assert.NotContains(t, r.Resources, "*")
		if slices.Contains(r.Resources, "namespaces") || slices.Contains(r.Resources, "rolebindings") {
			continue
		}
		for _, v := range r.Verbs {
			assert.False(t, writes[v] && !slices.Contains(r.ResourceNames, "ns-role"), "no cluster-wide %s of %v", v, r.Resources)
		}
	}
	for _, sub := range []string{"pods/log", "pods/exec", "secrets/status", "deployments/status"} {
		for _, g := range []string{"", "apps"} {
			assert.Nil(t, findRule(rules, g, sub), "%s not granted cluster-wide", sub)
		}
	}
}

// Per managed namespace, the syncer writes what it syncs, reaches pods for the tunnel
// and reads the Event forwarder's intermediates: only what is synced.
func TestNamespaceRulesGrantOnlyWhatIsSynced(t *testing.T) {
	rules := NamespaceRules([]string{"deployments.apps", "services", "deployments.apps"})
	for _, gr := range [][2]string{{"apps", "deployments"}, {"", "services"}, {"", "configmaps"}, {"", "secrets"}, {"", "serviceaccounts"}, {"apps", "deployments/status"}} {
		r := findRule(rules, gr[0], gr[1])
		require.NotNil(t, r, "%s.%s granted", gr[1], gr[0])
		assert.Contains(t, r.Verbs, "patch")
	}
	assert.Equal(t, []string{"get", "create"}, findRule(rules, "", "pods/exec").Verbs)
	assert.Equal(t, []string{"get"}, findRule(rules, "", "pods/log").Verbs)
	assert.Equal(t, []string{"list", "create"}, findRule(rules, "networking.k8s.io", "networkpolicies").Verbs)
	assert.Equal(t, []string{"get"}, findRule(rules, "apps", "replicasets").Verbs, "a Deployment's ReplicaSets are only read, for Event forwarding")
	assert.Nil(t, findRule(rules, "batch", "jobs"), "no CronJobs synced, no Jobs read")
	assert.Nil(t, findRule(rules, "apps", "statefulsets"), "nothing unsynced")
	assert.Nil(t, findRule(rules, "", "pods"), "pods are not written unless synced")
	assert.Nil(t, findRule(rules, "", "events"))
	for _, r := range rules {
		assert.NotContains(t, r.Verbs, "*")
		assert.NotContains(t, r.Verbs, "deletecollection")
		assert.NotContains(t, r.Resources, "*")
	}
}

func TestManifestsHoldTheNamespaceRoleUnboundAndNameIt(t *testing.T) {
	var roles []*rbacv1.ClusterRole
	var bindings []*rbacv1.ClusterRoleBinding
	var args []string
	for _, o := range Objects(Example) {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			roles = append(roles, o)
		case *rbacv1.ClusterRoleBinding:
			bindings = append(bindings, o)
		case *appsv1.Deployment:
			args = o.Spec.Template.Spec.Containers[0].Args
		}
	}
	require.Len(t, roles, 2)
	require.Len(t, bindings, 1)
	ns := NamespaceName("root", "example")
	assert.Equal(t, NamespaceRoleName(ns), roles[1].Name)
	assert.Equal(t, roles[0].Name, bindings[0].RoleRef.Name, "only the cluster-wide role is bound cluster-wide")
	assert.Contains(t, args, "--downstream-namespace-role="+NamespaceRoleName(ns))
	assert.Equal(t, []string{NamespaceRoleName(ns)}, findRule(roles[0].Rules, "rbac.authorization.k8s.io", "clusterroles").ResourceNames)
}

func TestNamespaceNameIsAValidLabel(t *testing.T) {
	for _, name := range []string{"a", "eu-1", strings.Repeat("x", 253)} {
		ns := NamespaceName("root:org", name)
		assert.Empty(t, validation.IsDNS1123Label(ns), ns)
		assert.Equal(t, ns, NamespaceName("root:org", name), "deterministic")
	}
	assert.NotEqual(t, NamespaceName("a", "x"), NamespaceName("b", "x"), "per logical cluster")
}

func TestUpstreamObjectRulesGrantOnlyWhatTheSyncerDoesUpstream(t *testing.T) {
	rules := UpstreamObjectRules([]string{"deployments.apps"}, false)
	find := func(group, resource string) []string {
		for _, r := range rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) {
				return r.Verbs
			}
		}
		return nil
	}
	for _, c := range []struct {
		group, resource string
		verbs           []string
	}{
		{"", "namespaces", []string{"list", "watch"}},
		{"", "events", []string{"create", "get", "patch"}},
		{"", "configmaps", []string{"get", "list", "watch", "patch"}},
		{"", "secrets/status", []string{"update"}},
		{"apps", "deployments", []string{"get", "list", "watch", "patch"}},
		{"apps", "deployments/status", []string{"update"}},
		{"", "pods", nil},
		{"", "persistentvolumes", nil},
		{"apps", "replicasets", nil},
	} {
		assert.Equal(t, c.verbs, find(c.group, c.resource), "%s.%s", c.resource, c.group)
	}
	for _, r := range rules {
		assert.NotContains(t, r.Verbs, "delete", "the syncer deletes nothing upstream without upsync: %v", r)
		if !slices.Contains(r.Resources, "events") {
			assert.NotContains(t, r.Verbs, "create", "nor creates anything but Events: %v", r)
		}
	}
	withUpsync := UpstreamObjectRules(nil, true)
	assert.Len(t, withUpsync, len(UpstreamObjectRules(nil, false))+len(UpstreamUpsyncRules()))
}

func TestUpstreamObjectsAreOptional(t *testing.T) {
	cfg := UpstreamConfig{SyncTargetName: "a", Namespace: "n", ServiceAccount: "sa"}
	assert.Len(t, UpstreamObjects(cfg), 4, "per-target ClusterRole, token Role and their bindings")
	cfg.SyncedObjects = true
	objs := UpstreamObjects(cfg)
	require.Len(t, objs, 6)
	cr, ok := objs[4].(*rbacv1.ClusterRole)
	require.True(t, ok)
	assert.Equal(t, UpstreamObjectsRoleName("a"), cr.Name)
	crb, ok := objs[5].(*rbacv1.ClusterRoleBinding)
	require.True(t, ok)
	assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "sa", Namespace: "n"}}, crb.Subjects)
}
