package namespaces

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// Resource is the namespaces resource.
var Resource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// Store reads cached objects by key (a cache.Indexer satisfies it).
type Store interface {
	GetByKey(key string) (item any, exists bool, err error)
}

// ByLocatorIndex is the name of the namespace cache index by upstream namespace, the
// engine's (informers.ByLocator); IndexByLocator computes its values.
const ByLocatorIndex = informers.ByLocator

// IndexByLocator indexes a downstream namespace by the upstream (logical cluster, namespace)
// of its locator, as the engine's downstream namespace informers do.
func IndexByLocator(obj any) ([]string, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil //nolint:nilerr // non-objects are simply not indexed
	}
	l, ok, err := namespace.LocatorFromAnnotations(m.GetAnnotations())
	if !ok || err != nil {
		return nil, nil //nolint:nilerr // an unreadable locator is not ours to fix here
	}
	return []string{informers.LocatorKey(l.Cluster, l.Namespace)}, nil
}

// IsolationPolicyName names the NetworkPolicy every downstream namespace gets: it
// admits traffic only from namespaces of its own tenant (kcp.io/tenant-id) and from
// namespaces of no tenant (the cluster's own: ingress controllers, monitoring), so
// that one workspace's pods cannot reach another's.
const IsolationPolicyName = "tmc-syncer-tenant-isolation"

// NetworkPoliciesResource is the NetworkPolicy resource.
var NetworkPoliciesResource = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}

// Ensurer creates downstream namespaces on first use and finds existing ones by locator.
type Ensurer struct {
	client   dynamic.ResourceInterface
	policies dynamic.NamespaceableResourceInterface
	cache    Store
	key      string
	// isolated holds the namespaces whose isolation policy this process made or
	// found: one create per namespace and process, and no namespace patch (kcp's
	// plugin grants create on NetworkPolicies, not patch on namespaces).
	isolated sync.Map
	// prepare, when set, runs with the isolation policy, once per namespace and process.
	prepare func(ctx context.Context, namespace string) error
	// grant, when set, is bound in each namespace first, once per namespace and process.
	grant        *Grant
	bound        sync.Map // namespaces bound by this process
	roleBindings dynamic.NamespaceableResourceInterface
	reviews      dynamic.ResourceInterface
	// flights shares one Ensure among the callers asking for the same locator at once
	// (the workers syncing the first objects of a new namespace): one GET, one POST.
	flights singleflight.Group
}

// OnFirstUse sets a function that prepares each downstream namespace for its workloads
// (objects the syncer keeps in every namespace), run once per namespace and process when
// an object first needs the namespace; an error fails that object's sync (it is retried).
// Call it before the Ensurer is used.
func (e *Ensurer) OnFirstUse(prepare func(ctx context.Context, namespace string) error) {
	e.prepare = prepare
}

var _ namespace.Lookup = (*Ensurer)(nil)

// NewEnsurer returns an Ensurer creating namespaces through client (the downstream
// cluster), reading them first from cache (our labelled namespaces; when it is an Indexer
// with ByLocatorIndex, namespaces an older kcp named otherwise are found too), labelled for
// the sync target key and with kcp's tenant ID.
func NewEnsurer(client dynamic.Interface, cache Store, key string) *Ensurer {
	return &Ensurer{client: client.Resource(Resource), policies: client.Resource(NetworkPoliciesResource), cache: cache, key: key}
}

// TerminatingError reports a downstream namespace that is being deleted; retry later.
type TerminatingError struct{ Name string }

// Error implements error.
func (e *TerminatingError) Error() string {
	return fmt.Sprintf("downstream namespace %s is terminating", e.Name)
}

// Existing implements namespace.Lookup: the cached namespace whose locator (legacy
// syncTarget.path read as the cluster) is l, whatever its name. kcp up to v0.6 named
// namespaces after a locator spelled differently; kcp finds them by locator too.
func (e *Ensurer) Existing(l namespace.Locator) (string, bool) {
	idx, ok := e.cache.(Indexer) // a cache.Indexer with ByLocatorIndex
	if !ok {
		return "", false
	}
	items, err := idx.ByIndex(ByLocatorIndex, informers.LocatorKey(l.Cluster, l.Namespace))
	if err != nil {
		return "", false
	}
	return namespace.FindExisting(items, l)
}

// Ensure returns the name of l's downstream namespace, creating it when missing: the
// existing namespace carrying l (Existing), else the one named after l. A namespace of that
// name with another locator (or none) is an error wrapping namespace.ErrCollision: it is
// never adopted. An existing namespace whose kcp.io/tenant-id is missing or wrong gets it,
// as kcp's syncer does after an upgrade.
//
// Concurrent calls for the same locator share one run (keyed by the locator's canonical
// JSON: its sync target, logical cluster and namespace, so callers of another locator,
// whose namespace may collide, never share its answer); the shared run uses the context
// of the call that started it.
func (e *Ensurer) Ensure(ctx context.Context, l namespace.Locator) (string, error) {
	key, err := l.JSON()
	if err != nil {
		return "", fmt.Errorf("ensure downstream namespace: %w", err)
	}
	// The name goes with the error too (a collision names the namespace it hit).
	var name string
	res, _, _ := e.flights.Do(string(key), func() (any, error) {
		n, err := e.ensure(ctx, l)
		return ensured{name: n, err: err}, nil
	})
	if r, ok := res.(ensured); ok {
		name, err = r.name, r.err
	}
	return name, err
}

type ensured struct {
	name string
	err  error
}

func (e *Ensurer) ensure(ctx context.Context, l namespace.Locator) (string, error) {
	want, err := namespace.DownstreamNamespace(l, e.key)
	if err != nil {
		return "", fmt.Errorf("ensure downstream namespace: %w", err)
	}
	tenant := want.GetLabels()[kcp.TenantIDLabel]
	name := want.GetName()
	if existing, ok := e.Existing(l); ok {
		name = existing
	}
	if item, ok, err := e.cache.GetByKey(name); err == nil && ok {
		if u := asNamespace(item); u != nil {
			return name, e.check(ctx, u, l, tenant)
		}
	}
	existing, err := e.client.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return name, e.check(ctx, existing, l, tenant)
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("get downstream namespace %s: %w", name, err)
	}
	created, err := e.client.Create(ctx, want, metav1.CreateOptions{})
	switch {
	case err == nil:
		return name, e.check(ctx, created, l, tenant)
	case apierrors.IsAlreadyExists(err):
		existing, err = e.client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("get downstream namespace %s: %w", name, err)
		}
		return name, e.check(ctx, existing, l, tenant)
	}
	return "", fmt.Errorf("create downstream namespace %s: %w", name, err)
}

// asNamespace returns a cached namespace (full or metadata-only) as an Unstructured
// carrying what the checks read: name, annotations, deletion timestamp.
func asNamespace(item any) *unstructured.Unstructured {
	if u, ok := item.(*unstructured.Unstructured); ok {
		return u
	}
	m, err := meta.Accessor(item)
	if err != nil {
		return nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetName(m.GetName())
	u.SetAnnotations(m.GetAnnotations())
	u.SetLabels(m.GetLabels())
	u.SetDeletionTimestamp(m.GetDeletionTimestamp())
	return u
}

func (e *Ensurer) check(ctx context.Context, ns *unstructured.Unstructured, l namespace.Locator, tenant string) error {
	if err := namespace.CheckCollision(ns, l); err != nil {
		return err
	}
	if ns.GetDeletionTimestamp() != nil {
		return &TerminatingError{Name: ns.GetName()}
	}
	if _, done := e.isolated.Load(ns.GetName()); !done {
		if _, bound := e.bound.Load(ns.GetName()); e.grant != nil && !bound {
			// First: what follows (the policy, prepare, the objects) may be granted
			// only through this binding.
			if err := e.bind(ctx, ns.GetName()); err != nil {
				return err
			}
		}
		if err := e.isolate(ctx, ns.GetName(), tenant); err != nil {
			return err
		}
		if e.prepare != nil {
			if err := e.prepare(ctx, ns.GetName()); err != nil {
				return fmt.Errorf("prepare downstream namespace %s: %w", ns.GetName(), err)
			}
		}
		e.isolated.Store(ns.GetName(), struct{}{})
	}
	if ns.GetLabels()[kcp.TenantIDLabel] == tenant {
		return nil
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{kcp.TenantIDLabel: tenant}}})
	if err != nil {
		return fmt.Errorf("encode tenant label patch: %w", err)
	}
	if _, err := e.client.Patch(ctx, ns.GetName(), types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("label downstream namespace %s with %s: %w", ns.GetName(), kcp.TenantIDLabel, err)
	}
	return nil
}

// isolate creates the namespace's tenant isolation NetworkPolicy unless it exists (a
// policy of that name is the syncer's). It looks first, with a list by name (kcp's
// plugin grants list and create on NetworkPolicies, not get), so that a restart
// writes nothing for namespaces that have it.
func (e *Ensurer) isolate(ctx context.Context, ns, tenant string) error {
	list, err := e.policies.Namespace(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", IsolationPolicyName).String(),
	})
	if err != nil {
		return fmt.Errorf("look up tenant isolation NetworkPolicy in %s: %w", ns, err)
	}
	if len(list.Items) > 0 {
		return nil
	}
	_, err = e.policies.Namespace(ns).Create(ctx, IsolationPolicy(ns, tenant), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create tenant isolation NetworkPolicy in %s: %w", ns, err)
	}
	return nil
}

// IsolationPolicy is the NetworkPolicy of a downstream namespace of tenant: every pod
// of the namespace accepts traffic from its own tenant's namespaces and from namespaces
// without a tenant, and from nobody else; egress is not restricted.
func IsolationPolicy(ns, tenant string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": IsolationPolicyName, "namespace": ns},
		"spec": map[string]any{
			"podSelector": map[string]any{},
			"policyTypes": []any{"Ingress"},
			"ingress": []any{map[string]any{"from": []any{
				map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{kcp.TenantIDLabel: tenant}}},
				map[string]any{"namespaceSelector": map[string]any{"matchExpressions": []any{
					map[string]any{"key": kcp.TenantIDLabel, "operator": "DoesNotExist"},
				}}},
			}}},
		},
	}}
}
