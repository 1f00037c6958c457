package informers

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

// KeepManagedFieldsFunc reports whether the cache of informer id keeps the objects'
// metadata.managedFields whole; elsewhere TrimManagedFields trims them.
type KeepManagedFieldsFunc func(id ID) bool

// servicesGR is the core Service resource.
var servicesGR = schema.GroupResource{Resource: "services"}

// DefaultKeepManagedFields keeps whole managedFields only for full upstream Services: the
// transformation reads their fieldsV1 to tell the values a client set (kept) from the
// ones the upstream apiserver allocated (clusterIP, nodePort: dropped going down).
func DefaultKeepManagedFields(id ID) bool {
	return id.Side == Upstream && !id.MetadataOnly && id.GVR.GroupResource() == servicesGR
}

// TrimManagedFields is the cache transform of the informers (see Options.KeepManagedFields).
// It reduces every metadata.managedFields entry to its manager, operation and subresource,
// in place and in order: the cache still tells who manages an object (the take-over from
// kcp's syncer looks for its manager and removes its entries by index, with the
// resourceVersion read here), but no longer holds what each manager owns (fieldsV1, the
// bulk of an object's metadata, which no reader of the caches needs). Objects of other
// types (tombstones) pass unchanged. Idempotent.
func TrimManagedFields(obj any) (any, error) {
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		md, ok := o.Object["metadata"].(map[string]any)
		if !ok {
			return obj, nil
		}
		entries, ok := md["managedFields"].([]any)
		if !ok {
			return obj, nil
		}
		for i, e := range entries {
			m, ok := e.(map[string]any)
			if !ok || trimmedEntry(m) {
				continue
			}
			trimmed := make(map[string]any, 3)
			for _, k := range []string{"manager", "operation", "subresource"} {
				if v, ok := m[k]; ok {
					trimmed[k] = v
				}
			}
			entries[i] = trimmed
		}
	case *metav1.PartialObjectMetadata:
		for i, e := range o.ManagedFields {
			o.ManagedFields[i] = metav1.ManagedFieldsEntry{Manager: e.Manager, Operation: e.Operation, Subresource: e.Subresource}
		}
	}
	return obj, nil
}

var _ cache.TransformFunc = TrimManagedFields

// trimmedEntry reports whether a managedFields entry holds nothing TrimManagedFields drops
// (paged lists trim before the cache does).
func trimmedEntry(m map[string]any) bool {
	for k := range m {
		if k != "manager" && k != "operation" && k != "subresource" {
			return false
		}
	}
	return true
}

// transformFor returns the cache transform of informer id: TrimManagedFields unless the
// cache keeps them whole, then the Manager's Interner.
func (m *Manager) transformFor(id ID) cache.TransformFunc {
	keep := m.opts.KeepManagedFields
	if keep == nil {
		keep = DefaultKeepManagedFields
	}
	if keep(id) {
		return m.interner.Transform
	}
	return func(obj any) (any, error) {
		obj, err := TrimManagedFields(obj)
		if err != nil {
			return nil, err
		}
		return m.interner.Transform(obj)
	}
}
