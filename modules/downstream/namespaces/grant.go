package namespaces

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// RoleBindingsResource is the RoleBinding resource.
var RoleBindingsResource = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}

// SelfSubjectAccessReviewsResource is the SelfSubjectAccessReview resource.
var SelfSubjectAccessReviewsResource = schema.GroupVersionResource{Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"}

// Subject is who a namespace grant binds: an RBAC subject (kind ServiceAccount, User or
// Group; Namespace only for a ServiceAccount).
type Subject struct {
	Kind, Name, Namespace string
}

// Grant binds one ClusterRole to the syncer's own identity in every downstream namespace
// it manages, so that what the syncer writes (synced objects, Secrets, pod subresources)
// is granted there and nowhere else. The RoleBinding is named after the ClusterRole.
type Grant struct {
	// ClusterRole is the role bound in each managed namespace (the syncer needs `bind`
	// on it and `create` and `list` on rolebindings).
	ClusterRole string
	// Subject is the syncer's identity.
	Subject Subject
	// Probe is an access the role grants, asked with a SelfSubjectAccessReview after the
	// binding is made until allowed, so that the first writes are not refused while the
	// API server's authorizer catches up. Empty: create configmaps (always synced).
	Probe ResourceAccess
	// Wait bounds that wait (10 s when zero); once it passes, writes proceed and are
	// retried as any failed write.
	Wait time.Duration
}

// ResourceAccess is a verb on a resource (in the namespace being bound).
type ResourceAccess struct {
	Verb, Group, Resource string
}

// WithGrant makes the Ensurer bind g.ClusterRole to g.Subject in each namespace it
// manages, once per namespace and process, before anything else is written there.
// Call it before the Ensurer is used.
func (e *Ensurer) WithGrant(client dynamic.Interface, g Grant) error {
	if g.ClusterRole == "" || g.Subject.Kind == "" || g.Subject.Name == "" {
		return errors.New("namespace grant: ClusterRole and Subject kind and name are required")
	}
	if g.Probe == (ResourceAccess{}) {
		g.Probe = ResourceAccess{Verb: "create", Resource: "configmaps"}
	}
	if g.Wait <= 0 {
		g.Wait = 10 * time.Second
	}
	e.grant = &g
	e.roleBindings = client.Resource(RoleBindingsResource)
	e.reviews = client.Resource(SelfSubjectAccessReviewsResource)
	return nil
}

// RoleBinding is the RoleBinding g makes in namespace ns.
func (g Grant) RoleBinding(ns string) *unstructured.Unstructured {
	subject := map[string]any{"kind": g.Subject.Kind, "name": g.Subject.Name}
	if g.Subject.Namespace != "" {
		subject["namespace"] = g.Subject.Namespace
	} else {
		subject["apiGroup"] = "rbac.authorization.k8s.io"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"name": g.ClusterRole, "namespace": ns},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": g.ClusterRole},
		"subjects": []any{subject},
	}}
}

// BindManaged makes the grant's RoleBinding in ns when ns is one of this sync target's
// downstream namespaces (cached, labelled with its key, carrying a locator) and it was not
// bound by this process yet: for writes that do not go through Ensure (the start-up
// cleanup in a namespace an older syncer made). Any other namespace is never bound.
func (e *Ensurer) BindManaged(ctx context.Context, ns string) error {
	if e.grant == nil {
		return nil
	}
	if _, done := e.bound.Load(ns); done {
		return nil
	}
	item, ok, err := e.cache.GetByKey(ns)
	if err != nil || !ok {
		return nil //nolint:nilerr // not a namespace we know: nothing to bind
	}
	u := asNamespace(item)
	if u == nil || u.GetLabels()[identity.DownstreamClusterLabel] != e.key {
		return nil
	}
	if _, ok, err := namespace.LocatorFromNamespace(u); !ok || err != nil {
		return nil //nolint:nilerr // no readable locator: not ours
	}
	return e.bind(ctx, ns)
}

// bind makes the grant's RoleBinding in ns unless one of that name exists (it looks
// with a list by name first, so that a restart writes nothing), then waits until the
// grant is in effect.
func (e *Ensurer) bind(ctx context.Context, ns string) error {
	g := e.grant
	list, err := e.roleBindings.Namespace(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", g.ClusterRole).String(),
	})
	if err != nil {
		return fmt.Errorf("look up RoleBinding %s in %s: %w", g.ClusterRole, ns, err)
	}
	if len(list.Items) > 0 {
		e.bound.Store(ns, struct{}{})
		return nil
	}
	_, err = e.roleBindings.Namespace(ns).Create(ctx, g.RoleBinding(ns), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind ClusterRole %s in %s: %w", g.ClusterRole, ns, err)
	}
	// The authorizer learns of the binding through a watch: wait for it, bounded.
	_ = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, g.Wait, true, func(ctx context.Context) (bool, error) {
		return e.allowed(ctx, ns), nil
	})
	e.bound.Store(ns, struct{}{})
	return nil
}

func (e *Ensurer) allowed(ctx context.Context, ns string) bool {
	p := e.grant.Probe
	review := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
		"spec": map[string]any{"resourceAttributes": map[string]any{
			"namespace": ns, "verb": p.Verb, "group": p.Group, "resource": p.Resource,
		}},
	}}
	out, err := e.reviews.Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false
	}
	ok, _, _ := unstructured.NestedBool(out.Object, "status", "allowed")
	return ok
}
