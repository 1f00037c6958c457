package namespaces

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// Resource is the namespaces resource.
var Resource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// Store reads cached objects by key (a cache.Indexer satisfies it).
type Store interface {
	GetByKey(key string) (item any, exists bool, err error)
}

// Ensurer creates downstream namespaces on first use.
type Ensurer struct {
	client   dynamic.ResourceInterface
	cache    Store
	key      string
	tenantID string
}

// NewEnsurer returns an Ensurer creating namespaces through client (the downstream
// cluster), reading them first from cache (our labelled namespaces), labelled for the sync
// target key and, when not empty, tenantID.
func NewEnsurer(client dynamic.Interface, cache Store, key, tenantID string) *Ensurer {
	return &Ensurer{client: client.Resource(Resource), cache: cache, key: key, tenantID: tenantID}
}

// TerminatingError reports a downstream namespace that is being deleted; retry later.
type TerminatingError struct{ Name string }

// Error implements error.
func (e *TerminatingError) Error() string {
	return fmt.Sprintf("downstream namespace %s is terminating", e.Name)
}

// Ensure returns the name of l's downstream namespace, creating it when missing. A
// namespace of that name with another locator (or none) is an error wrapping
// namespace.ErrCollision: it is never adopted.
func (e *Ensurer) Ensure(ctx context.Context, l namespace.Locator) (string, error) {
	want, err := namespace.DownstreamNamespace(l, e.key, e.tenantID)
	if err != nil {
		return "", fmt.Errorf("ensure downstream namespace: %w", err)
	}
	name := want.GetName()
	if item, ok, err := e.cache.GetByKey(name); err == nil && ok {
		if u := asNamespace(item); u != nil {
			return name, check(u, l)
		}
	}
	existing, err := e.client.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return name, check(existing, l)
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("get downstream namespace %s: %w", name, err)
	}
	_, err = e.client.Create(ctx, want, metav1.CreateOptions{})
	switch {
	case err == nil:
		return name, nil
	case apierrors.IsAlreadyExists(err):
		existing, err = e.client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("get downstream namespace %s: %w", name, err)
		}
		return name, check(existing, l)
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

func check(ns *unstructured.Unstructured, l namespace.Locator) error {
	if err := namespace.CheckCollision(ns, l); err != nil {
		return err
	}
	if ns.GetDeletionTimestamp() != nil {
		return &TerminatingError{Name: ns.GetName()}
	}
	return nil
}
