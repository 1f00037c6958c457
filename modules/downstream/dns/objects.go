package dns

import (
	"net/netip"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

const (
	// ClusterAnnotation on every per-workspace DNS object names its logical cluster, so that
	// objects left by a workspace that went while the syncer was down are found and deleted.
	ClusterAnnotation = "syncer.tmc.dev/dns-cluster"
	// ContainerName is the DNS container's name (kcp's, so that a takeover updates kcp's
	// Deployments in place).
	ContainerName = "kcp-dns"
	// Port is where the DNS server listens in its pod; the Service maps port 53 to it.
	Port = 5353
	// Command is the DNS container's command: kcp's path of the syncer in its image, which
	// ours has too.
	Command = "/ko-app/syncer"
)

// objectMeta is the metadata every per-workspace object carries; owner is the table
// ConfigMap (nil for the ConfigMap itself), so that deleting it deletes the rest even where
// the syncer may not delete some kind itself (kcp's RBAC lets it create NetworkPolicies only).
func objectMeta(name, namespace, cluster string, owner *corev1.ConfigMap) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: map[string]string{ClusterAnnotation: cluster}}
	if owner != nil && owner.UID != "" {
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}}
	}
	return m
}

// ConfigMap is the workspace's table.
func ConfigMap(name, namespace, cluster string, t Table) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: objectMeta(name, namespace, cluster, nil), Data: t.Data()}
}

// ServiceAccount is the identity of the workspace's DNS pods.
func ServiceAccount(name, namespace, cluster string, owner *corev1.ConfigMap) *corev1.ServiceAccount {
	no := false
	return &corev1.ServiceAccount{ObjectMeta: objectMeta(name, namespace, cluster, owner), AutomountServiceAccountToken: &no}
}

// Role lets the DNS pods read their table ConfigMap, nothing else (kcp's rule).
func Role(name, namespace, cluster string, owner *corev1.ConfigMap) *rbacv1.Role {
	return &rbacv1.Role{ObjectMeta: objectMeta(name, namespace, cluster, owner), Rules: RoleRules(name)}
}

// RoleRules are the DNS pods' permissions: get, list and watch of ConfigMap name.
func RoleRules(name string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{name}, Verbs: []string{"get", "list", "watch"}}}
}

// RoleBinding binds Role to ServiceAccount.
func RoleBinding(name, namespace, cluster string, owner *corev1.ConfigMap) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: objectMeta(name, namespace, cluster, owner),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
	}
}

// Deployment runs `syncer dns start --configmap-name <name>` (kcp's command line) from image.
func Deployment(name, namespace, cluster, image string, owner *corev1.ConfigMap) *appsv1.Deployment {
	one, yes, no, uid := int32(1), true, false, int64(65532)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: objectMeta(name, namespace, cluster, owner),
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       podSpec(name, image, &yes, &no, &uid),
			},
		},
	}
}

func podSpec(name, image string, yes, no *bool, uid *int64) corev1.PodSpec {
	return corev1.PodSpec{
		ServiceAccountName:           name,
		AutomountServiceAccountToken: yes,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot: yes, RunAsUser: uid, RunAsGroup: uid,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:    ContainerName,
			Image:   image,
			Command: []string{Command},
			Args:    []string{"dns", "start", "--configmap-name", name},
			Env: []corev1.EnvVar{{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
			}}},
			Ports: []corev1.ContainerPort{
				{Name: "dns", ContainerPort: Port, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", ContainerPort: Port, Protocol: corev1.ProtocolTCP},
			},
			// The server listens once its table is loaded: ready means it answers.
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(Port)}}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: no, ReadOnlyRootFilesystem: yes,
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			ImagePullPolicy:          corev1.PullIfNotPresent,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}},
	}
}

// Service exposes the DNS pods on port 53 (UDP and TCP), kcp's Service.
func Service(name, namespace, cluster string, owner *corev1.ConfigMap) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: objectMeta(name, namespace, cluster, owner),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(Port)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(Port)},
			},
		},
	}
	s.Labels = map[string]string{"app": name}
	return s
}

// NetworkPolicy admits queries from the workspace's own namespaces only (its tenant id) and
// lets the DNS pods reach the cluster's DNS (forwarding) and the API server endpoints
// apiServer (watching their ConfigMap) and nothing else.
//
//nolint:staticcheck // apiServer are default/kubernetes Endpoints subsets, as kcp reads them
func NetworkPolicy(name, namespace, cluster, tenantID string, apiServer []corev1.EndpointSubset, owner *corev1.ConfigMap) *networkingv1.NetworkPolicy {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	port := func(p int32, proto *corev1.Protocol) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(p)
		return networkingv1.NetworkPolicyPort{Port: &v, Protocol: proto}
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: objectMeta(name, namespace, cluster, owner),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{identity.TenantIDLabel: tenantID}}}},
				Ports: []networkingv1.NetworkPolicyPort{port(Port, &tcp), port(Port, &udp)},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				// The cluster's DNS: kube-dns pods in kube-system (one peer: both selectors).
				To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "kube-system"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{port(53, &tcp), port(53, &udp)},
			}},
		},
	}
	var to []networkingv1.NetworkPolicyPeer
	var ports []networkingv1.NetworkPolicyPort
	for _, s := range apiServer {
		for _, a := range s.Addresses {
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				continue
			}
			to = append(to, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()}})
		}
		for _, p := range s.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = tcp
			}
			ports = append(ports, port(p.Port, &proto))
		}
	}
	if len(to) > 0 {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports})
	}
	return np
}
