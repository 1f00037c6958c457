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
	// Resources are the syncer's --resources (resource.group); with SyncedObjects they
	// are granted upstream, after the always-synced ones.
	Resources []string
	// SyncedObjects adds the grant on a plain hub to read and write the synced objects
	// themselves (UpstreamObjectRules). Under kcp the syncer reaches them only through
	// kcp's syncer virtual workspace, which kcp authorizes itself: leave it off there.
	SyncedObjects bool
	// Upsync adds UpstreamUpsyncRules to the synced objects' grant (off: least privilege;
	// upsync is opt-in on a plain hub).
	Upsync bool
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

// UpstreamObjectsRoleName is the name of the ClusterRole (and its binding) that lets one
// syncer read and write the objects it syncs on a plain hub.
func UpstreamObjectsRoleName(syncTarget string) string {
	return "tmc-syncer:synctarget:" + syncTarget + ":objects"
}

// UpstreamObjectRules are what the syncer needs on a plain hub (kube-apiserver, no kcp)
// to sync resources (the always-synced ConfigMaps, Secrets and ServiceAccounts first),
// each rule found by running the syncer binary with exactly these rules
// (integration upstream_rbac_test.go). Cluster-wide: the syncer's informers list and
// watch every namespace selecting by label, which RBAC cannot restrict. With upsync,
// UpstreamUpsyncRules are added.
func UpstreamObjectRules(resources []string, upsync bool) []rbacv1.PolicyRule {
	byGroup, groups := syncedByGroup(resources)
	rules := []rbacv1.PolicyRule{
		// The engine's upstream namespace informer (metadata): a namespace being deleted
		// upstream.
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"list", "watch"}},
		// Forwarded downstream Events and the syncer's own (sync errors) on the synced
		// objects: created, repeats patched, a copy that exists already (a restarted
		// syncer's create answers AlreadyExists) read.
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "get", "patch"}},
	}
	for _, g := range groups {
		res := byGroup[g]
		// Informers (list, watch); get re-reads an object (spec sync, a status conflict);
		// the finalizer, the state/ownership annotations and several targets' status
		// annotations are merge patches of the object itself.
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{g}, Resources: append([]string(nil), res...),
			Verbs: []string{"get", "list", "watch", "patch"},
		})
		status := make([]string, 0, len(res))
		for _, r := range res {
			status = append(status, r+"/status")
		}
		// The downstream status goes up with UpdateStatus (whole status, resourceVersion).
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{g}, Resources: status, Verbs: []string{"update"}})
	}
	if upsync {
		rules = append(rules, UpstreamUpsyncRules()...)
	}
	return rules
}

// UpstreamUpsyncRules are what the upsyncer needs on a plain hub: objects labelled Upsync
// downstream (Pods, PersistentVolumes, the Endpoints of annotated Services) are watched
// upstream by label, created, updated (spec, then status through its subresource),
// their finalizer patched away, and deleted when their downstream copy goes (Endpoints
// have no status). Without these
// rules the upsyncer logs that the resources are not available and tries again every
// minute; nothing else is affected.
func UpstreamUpsyncRules() []rbacv1.PolicyRule {
	upsynced := []string{"pods", "persistentvolumes", "endpoints"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: upsynced, Verbs: []string{"list", "watch", "create", "update", "patch", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods/status", "persistentvolumes/status"}, Verbs: []string{"update"}},
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
	objs := []runtime.Object{
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
	if c.SyncedObjects {
		objName := UpstreamObjectsRoleName(c.SyncTargetName)
		objs = append(objs,
			&rbacv1.ClusterRole{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
				ObjectMeta: metav1.ObjectMeta{Name: objName, Labels: labels},
				Rules:      UpstreamObjectRules(c.Resources, c.Upsync),
			},
			&rbacv1.ClusterRoleBinding{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
				ObjectMeta: metav1.ObjectMeta{Name: objName, Labels: labels},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: objName},
				Subjects:   subject,
			})
	}
	return objs
}
