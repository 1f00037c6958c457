// Package manifests renders what installs a syncer into a physical cluster for one
// SyncTarget (what `kubectl kcp workload sync` printed for kcp's syncer): Namespace,
// ServiceAccount, least-privilege RBAC, the upstream kubeconfig Secret and a
// Deployment with probes, resources and a restricted security context.
package manifests

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Config is what the manifests depend on.
type Config struct {
	SyncTargetName string
	SyncTargetUID  string
	// FromCluster is the logical cluster of the SyncTarget.
	FromCluster string
	// UpstreamKubeconfig is the kubeconfig the syncer uses upstream (stored in a Secret).
	UpstreamKubeconfig []byte
	// Resources are the --resources of the syncer (resource.group).
	Resources []string
	Image     string
	// Namespace is the syncer's namespace; empty means a name derived from the target.
	Namespace string
	Replicas  int32
	TunnelURL string
	// ExposeMetrics serves /metrics on every interface (and declares the port) for a
	// scraper in the cluster; by default it stays on the pod's loopback.
	ExposeMetrics bool
}

// Always-synced resources, as in kcp.
var alwaysSynced = []string{"configmaps", "secrets", "serviceaccounts"}

// NamespaceName is the syncer's namespace for a SyncTarget when none is given:
// readable, unique per (cluster, name), and a valid DNS label.
func NamespaceName(cluster, name string) string {
	sum := sha256.Sum256([]byte(cluster + ":" + name))
	base := "tmc-syncer-" + name
	if len(base) > 54 {
		base = base[:54]
	}
	return strings.TrimRight(base, "-") + "-" + fmt.Sprintf("%x", sum[:4])
}

// Objects returns the manifests in the order they must be applied.
func Objects(c Config) []runtime.Object {
	ns := c.Namespace
	if ns == "" {
		ns = NamespaceName(c.FromCluster, c.SyncTargetName)
	}
	name := "tmc-syncer"
	labels := map[string]string{"app.kubernetes.io/name": "tmc-syncer", "syncer.tmc.dev/sync-target": c.SyncTargetName}
	replicas := c.Replicas
	if replicas == 0 {
		replicas = 1
	}
	args := []string{
		"--from-kubeconfig=/etc/tmc-syncer/upstream/kubeconfig",
		"--from-cluster=" + c.FromCluster,
		"--sync-target-name=" + c.SyncTargetName,
		"--sync-target-uid=" + c.SyncTargetUID,
		// The kubelet's probes need the health port on the pod's address; the metrics
		// stay on loopback unless asked for.
		"--health-bind-address=:8081",
		"--metrics-bind-address=127.0.0.1:8080",
		"--downstream-namespace-role=" + NamespaceRoleName(ns),
	}
	ports := []corev1.ContainerPort{{Name: "health", ContainerPort: 8081}}
	if c.ExposeMetrics {
		args[slices.Index(args, "--metrics-bind-address=127.0.0.1:8080")] = "--metrics-bind-address=:8080"
		ports = append(ports, corev1.ContainerPort{Name: "metrics", ContainerPort: 8080})
	}
	if len(c.Resources) > 0 {
		args = append(args, "--resources="+strings.Join(c.Resources, ","))
	}
	if replicas > 1 {
		args = append(args, "--leader-elect")
	}
	if c.TunnelURL != "" {
		args = append(args, "--tunnel-url="+c.TunnelURL)
	}
	meta := func(n string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: n, Namespace: ns, Labels: labels}
	}
	clusterMeta := metav1.ObjectMeta{Name: "tmc-syncer:" + ns, Labels: labels}
	nsRole := metav1.ObjectMeta{Name: NamespaceRoleName(ns), Labels: labels}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("health")}},
			PeriodSeconds:    10,
			FailureThreshold: 3,
		}
	}
	no, yes := false, true
	uid := int64(65532)
	return []runtime.Object{
		&corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name)},
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: clusterMeta, Rules: ClusterRules(c.Resources, nsRole.Name)},
		&rbacv1.ClusterRoleBinding{
			TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: clusterMeta,
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterMeta.Name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		// Not bound here: the syncer binds it in each namespace it manages.
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: nsRole, Rules: NamespaceRules(c.Resources)},
		&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: meta(name), Rules: OwnNamespaceRules()},
		&rbacv1.RoleBinding{
			TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: meta(name),
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		&corev1.Secret{
			TypeMeta: typeMeta("v1", "Secret"), ObjectMeta: meta(name + "-upstream"),
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"kubeconfig": c.UpstreamKubeconfig},
		},
		&appsv1.Deployment{
			TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: meta(name),
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						ServiceAccountName: name,
						SecurityContext: &corev1.PodSecurityContext{
							RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
							SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						Containers: []corev1.Container{{
							Name:  "syncer",
							Image: c.Image,
							Args:  args,
							Env: []corev1.EnvVar{{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{
								FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"},
							}}},
							Ports:          ports,
							LivenessProbe:  probe("/livez"),
							ReadinessProbe: probe("/readyz"),
							Resources: corev1.ResourceRequirements{
								Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
								Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
							},
							SecurityContext: &corev1.SecurityContext{
								AllowPrivilegeEscalation: &no,
								ReadOnlyRootFilesystem:   &yes,
								Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							},
							VolumeMounts: []corev1.VolumeMount{{Name: "upstream", MountPath: "/etc/tmc-syncer/upstream", ReadOnly: true}},
						}},
						Volumes: []corev1.Volume{{Name: "upstream", VolumeSource: corev1.VolumeSource{
							Secret: &corev1.SecretVolumeSource{SecretName: name + "-upstream"},
						}}},
					},
				},
			},
		},
	}
}

// NamespaceRoleName is the ClusterRole the syncer binds to itself in each downstream
// namespace it manages (the RoleBinding there has the same name).
func NamespaceRoleName(syncerNamespace string) string {
	return "tmc-syncer:" + syncerNamespace + ":namespace"
}

// syncedByGroup groups the always-synced resources and resources by API group.
func syncedByGroup(resources []string) (map[string][]string, []string) {
	byGroup := map[string][]string{}
	for _, r := range append(append([]string(nil), alwaysSynced...), resources...) {
		res, group, _ := strings.Cut(r, ".")
		byGroup[group] = appendUnique(byGroup[group], res)
	}
	groups := make([]string, 0, len(byGroup))
	for g := range byGroup {
		groups = append(groups, g)
		sort.Strings(byGroup[g])
	}
	sort.Strings(groups)
	return byGroup, groups
}

// ClusterRules is the least privilege the syncer needs cluster-wide in the physical
// cluster: reading what it syncs (its informers watch every namespace), namespaces it
// creates and deletes, reading Events to forward them, pods for the tunnel and upsync,
// and binding namespaceRole (and nothing else) in the namespaces it manages, which
// is where every write of the syncer is granted (NamespaceRules).
func ClusterRules(resources []string, namespaceRole string) []rbacv1.PolicyRule {
	byGroup, groups := syncedByGroup(resources)
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch", "create", "patch", "delete"}},
		// The RoleBinding of namespaceRole in each managed namespace, looked up by name first.
		{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"rolebindings"}, Verbs: []string{"get", "list", "create"}},
		{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, ResourceNames: []string{namespaceRole}, Verbs: []string{"bind"}},
		// The API server's addresses, for the per-workspace DNS NetworkPolicy (--dns-image).
		{APIGroups: []string{""}, Resources: []string{"endpoints"}, ResourceNames: []string{"kubernetes"}, Verbs: []string{"get"}},
		{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
		// Upsync: PersistentVolumes (and the pods above) labelled Upsync go up; Endpoints of
		// a Service annotated upsync-derived-resources are labelled (patch, per namespace).
		{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"endpoints"}, Verbs: []string{"get", "list", "watch"}},
	}
	for _, g := range groups {
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{g}, Resources: append([]string(nil), byGroup[g]...),
			Verbs: []string{"get", "list", "watch"},
		})
	}
	return rules
}

// NamespaceRules are the rules of the namespace role (NamespaceRoleName), which the
// syncer binds to itself in each downstream namespace it manages before it writes
// anything there: every write of the syncer to the physical cluster outside its own
// namespace (synced objects and their status, the tenant isolation NetworkPolicy, pod
// subresources for the tunnel, Endpoints labelled for upsync), and the reads of Event
// forwarding's intermediate objects.
func NamespaceRules(resources []string) []rbacv1.PolicyRule {
	byGroup, groups := syncedByGroup(resources)
	rules := []rbacv1.PolicyRule{
		// One NetworkPolicy per downstream namespace keeps other tenants' pods out.
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "create"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach", "pods/portforward"}, Verbs: []string{"get", "create"}},
		{APIGroups: []string{""}, Resources: []string{"endpoints"}, Verbs: []string{"patch"}},
	}
	for _, g := range groups {
		res := byGroup[g]
		withStatus := append([]string(nil), res...)
		for _, r := range res {
			withStatus = append(withStatus, r+"/status")
		}
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{g}, Resources: withStatus,
			Verbs: []string{"get", "create", "update", "patch", "delete"},
		})
	}
	// Events of a synced object's children (a Deployment's Pods) are forwarded to it by
	// walking ownerReferences, which reads the metadata of the objects in between.
	for _, r := range sortedKeys(eventIntermediates) {
		if res, group, _ := strings.Cut(r, "."); slices.Contains(byGroup[group], res) {
			mid := eventIntermediates[r]
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{mid.Group}, Resources: []string{mid.Resource}, Verbs: []string{"get"}})
		}
	}
	return rules
}

// eventIntermediates maps a synced resource to the resource between it and its Pods in the
// ownerReference chain, whose metadata the Event forwarder reads.
var eventIntermediates = map[string]schema.GroupResource{
	"deployments.apps": {Group: "apps", Resource: "replicasets"},
	"cronjobs.batch":   {Group: "batch", Resource: "jobs"},
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// OwnNamespaceRules are what the syncer needs in its own namespace: the leader-election
// Lease, and the per-workspace DNS objects (--dns-image; the same verbs as kcp's plugin's
// DNS Role, plus delete of the NetworkPolicies, and the DNS ServiceAccounts and table
// ConfigMaps, which the cluster rules no longer let it write).
func OwnNamespaceRules() []rbacv1.PolicyRule {
	dnsVerbs := []string{"get", "list", "watch", "create", "update", "delete"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"services", "serviceaccounts", "configmaps"}, Verbs: dnsVerbs},
		{APIGroups: []string{""}, Resources: []string{"endpoints"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: dnsVerbs},
		{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"roles", "rolebindings"}, Verbs: dnsVerbs},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
	}
}

// YAML renders objects as one multi-document YAML stream.
func YAML(objs []runtime.Object) ([]byte, error) {
	var buf bytes.Buffer
	for i, obj := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return nil, fmt.Errorf("convert %T: %w", obj, err)
		}
		// Typed objects carry empty server fields; a manifest has none.
		delete(u, "status")
		if spec, ok := u["spec"].(map[string]any); ok && len(spec) == 0 {
			delete(u, "spec")
		}
		if m, ok := u["metadata"].(map[string]any); ok {
			delete(m, "creationTimestamp")
		}
		if tmpl, ok := nested(u, "spec", "template", "metadata"); ok {
			delete(tmpl, "creationTimestamp")
		}
		out, err := yaml.Marshal(u)
		if err != nil {
			return nil, fmt.Errorf("marshal %T: %w", obj, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(out)
	}
	return buf.Bytes(), nil
}

func nested(m map[string]any, path ...string) (map[string]any, bool) {
	for _, p := range path {
		next, ok := m[p].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	return m, true
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
