package manifests

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// UpstreamConfig is what the upstream RBAC of one syncer depends on.
type UpstreamConfig struct {
	// SyncTargetName is the syncer's SyncTarget.
	SyncTargetName string
	// Namespace and ServiceAccount are the syncer's identity upstream (in the SyncTarget's
	// logical cluster under kcp).
	Namespace, ServiceAccount string
}

// UpstreamRoleName is the name of the ClusterRole (and its binding) that lets one syncer
// act as its SyncTarget, and only as it.
func UpstreamRoleName(syncTarget string) string { return "tmc-syncer:synctarget:" + syncTarget }

// UpstreamTargetRules are what a syncer may do to its own SyncTarget: read it, heartbeat
// (patch its status) and open its tunnel, all restricted by resourceNames, so that one
// syncer's credentials can neither heartbeat nor take the tunnel of another SyncTarget.
func UpstreamTargetRules(syncTarget string) []rbacv1.PolicyRule {
	names := []string{syncTarget}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"workload.kcp.io"}, Resources: []string{"synctargets"}, ResourceNames: names, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"workload.kcp.io"}, Resources: []string{"synctargets/status"}, ResourceNames: names, Verbs: []string{"get", "patch", "update"}},
		{APIGroups: []string{"workload.kcp.io"}, Resources: []string{"synctargets/tunnel"}, ResourceNames: names, Verbs: []string{"update"}},
	}
}

// UpstreamTokenRules let the syncer request tokens for its own ServiceAccount only (the
// token bound to the tunnel's audience it shows the tunnel server).
func UpstreamTokenRules(serviceAccount string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{serviceAccount}, Verbs: []string{"create"}},
	}
}

// UpstreamObjects returns the control plane's RBAC for one syncer's SyncTarget: a
// ClusterRole with UpstreamTargetRules bound to the syncer's ServiceAccount, and a Role
// with UpstreamTokenRules in the ServiceAccount's namespace. The syncer also needs to
// read and write the objects it syncs; that grant is not per SyncTarget and is not part
// of these objects (docs/rbac.md).
func UpstreamObjects(c UpstreamConfig) []runtime.Object {
	name := UpstreamRoleName(c.SyncTargetName)
	labels := map[string]string{"app.kubernetes.io/name": "tmc-syncer", "syncer.tmc.dev/sync-target": c.SyncTargetName}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: c.ServiceAccount, Namespace: c.Namespace}}
	return []runtime.Object{
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Rules:      UpstreamTargetRules(c.SyncTargetName),
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects:   subject,
		},
		&rbacv1.Role{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
			ObjectMeta: metav1.ObjectMeta{Name: "tmc-syncer:token:" + c.ServiceAccount, Namespace: c.Namespace, Labels: labels},
			Rules:      UpstreamTokenRules(c.ServiceAccount),
		},
		&rbacv1.RoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
			ObjectMeta: metav1.ObjectMeta{Name: "tmc-syncer:token:" + c.ServiceAccount, Namespace: c.Namespace, Labels: labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tmc-syncer:token:" + c.ServiceAccount},
			Subjects:   subject,
		},
	}
}
