package informers

import (
	"reflect"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// OnlyStatusChanged reports an update event whose objects differ in .status alone (besides
// metadata.resourceVersion and metadata.managedFields, which every write changes): a
// controller that never reads status, such as the spec syncer, has nothing to do for it.
// Objects other than *unstructured.Unstructured (metadata-only caches, tombstones) never
// qualify, since their status cannot be seen.
func OnlyStatusChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*unstructured.Unstructured)
	n, ok2 := newObj.(*unstructured.Unstructured)
	if !ok1 || !ok2 || o == nil || n == nil {
		return false
	}
	if reflect.DeepEqual(o.Object["status"], n.Object["status"]) {
		// Nothing in status changed: whatever did is not status.
		return false
	}
	return equalExcept(o.Object, n.Object, "status", "metadata") &&
		equalExcept(asMap(o.Object["metadata"]), asMap(n.Object["metadata"]), "resourceVersion", "managedFields")
}

// equalExcept reports whether a and b hold the same keys and values, skipping the keys
// named in except.
func equalExcept(a, b map[string]any, except ...string) bool {
	skipped := func(k string) bool {
		for _, e := range except {
			if k == e {
				return true
			}
		}
		return false
	}
	for k, av := range a {
		if skipped(k) {
			continue
		}
		bv, ok := b[k]
		if !ok || !reflect.DeepEqual(av, bv) {
			return false
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && !skipped(k) {
			return false
		}
	}
	return true
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
