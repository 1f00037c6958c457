package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
)

// namespaceGrant is what --downstream-namespace-role binds in each managed downstream
// namespace: that ClusterRole, to the syncer's own identity on the physical cluster
// (asked with a SelfSubjectReview). Without the flag, or when the syncer may not make
// such bindings (create rolebindings, bind that ClusterRole: asked once here), it binds
// nothing and says so: the physical cluster's RBAC must then grant the writes itself
// (kcp's plugin grants them cluster-wide).
func namespaceGrant(ctx context.Context, role string, kube kubernetes.Interface, log logr.Logger) *namespaces.Grant {
	if role == "" {
		return nil
	}
	warn := func(why string) *namespaces.Grant {
		log.Info("WARNING: --downstream-namespace-role is not bound in the downstream namespaces; the syncer's writes there need RBAC of their own (docs/rbac.md)", "clusterRole", role, "reason", why)
		return nil
	}
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "rolebindings"},
		{Verb: "list", Group: "rbac.authorization.k8s.io", Resource: "rolebindings"},
		{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: role},
	} {
		r, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs},
		}, metav1.CreateOptions{})
		if err != nil {
			return warn(fmt.Sprintf("ask whether %s %s is allowed: %v", attrs.Verb, attrs.Resource, err))
		}
		if !r.Status.Allowed {
			return warn(fmt.Sprintf("%s %s denied", attrs.Verb, attrs.Resource))
		}
	}
	me, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return warn(fmt.Sprintf("ask who the syncer is (SelfSubjectReview): %v", err))
	}
	subject, ok := subjectOf(me.Status.UserInfo.Username)
	if !ok {
		return warn("the syncer's identity has no user name")
	}
	log.Info("binding the namespace role in each downstream namespace", "clusterRole", role, "subject", subject)
	return &namespaces.Grant{ClusterRole: role, Subject: subject}
}

// subjectOf is the RBAC subject of a user name: a ServiceAccount for
// system:serviceaccount:<namespace>:<name>, else a User.
func subjectOf(user string) (namespaces.Subject, bool) {
	if user == "" {
		return namespaces.Subject{}, false
	}
	if rest, ok := strings.CutPrefix(user, "system:serviceaccount:"); ok {
		if ns, name, ok := strings.Cut(rest, ":"); ok && ns != "" && name != "" && !strings.Contains(name, ":") {
			return namespaces.Subject{Kind: "ServiceAccount", Namespace: ns, Name: name}, true
		}
	}
	return namespaces.Subject{Kind: "User", Name: user}, true
}
