package informers

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestOnlyStatusChanged(t *testing.T) {
	base := func() *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.com/v1", "kind": "Widget",
			"metadata": map[string]any{
				"name": "w", "namespace": "ns", "resourceVersion": "1", "generation": int64(1),
				"labels":        map[string]any{"a": "b"},
				"managedFields": []any{map[string]any{"manager": "x"}},
			},
			"spec":   map[string]any{"size": int64(1)},
			"status": map[string]any{"n": int64(1)},
		}}
	}
	tests := []struct {
		name   string
		change func(u *unstructured.Unstructured)
		old    any
		want   bool
	}{
		{name: "status and resourceVersion", want: true, change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			u.SetResourceVersion("2")
		}},
		{name: "status and managedFields", want: true, change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "y"}})
		}},
		{name: "status appears", want: true, change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(1), "ready": true}
		}},
		{name: "status removed", want: true, change: func(u *unstructured.Unstructured) { delete(u.Object, "status") }},
		{name: "nothing but resourceVersion", change: func(u *unstructured.Unstructured) { u.SetResourceVersion("2") }},
		{name: "spec too", change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			u.Object["spec"] = map[string]any{"size": int64(2)}
		}},
		{name: "spec only", change: func(u *unstructured.Unstructured) { u.Object["spec"] = map[string]any{"size": int64(2)} }},
		{name: "labels too", change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			u.SetLabels(map[string]string{"a": "c"})
		}},
		{name: "annotation added too", change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			u.SetAnnotations(map[string]string{"x": "y"})
		}},
		{name: "deletion started too", change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			now := metav1.Now()
			u.SetDeletionTimestamp(&now)
		}},
		{name: "top-level field added too", change: func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"n": int64(2)}
			u.Object["data"] = map[string]any{"k": "v"}
		}},
		{name: "metadata-only objects never qualify", old: &metav1.PartialObjectMetadata{}},
		{name: "tombstones never qualify", old: "not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, n := base(), base()
			if tt.change != nil {
				tt.change(n)
			}
			var oldObj any = o
			if tt.old != nil {
				oldObj = tt.old
			}
			assert.Equal(t, tt.want, OnlyStatusChanged(oldObj, n))
			if tt.old == nil {
				assert.Equal(t, tt.want, OnlyStatusChanged(n, o), "symmetric")
			}
		})
	}
}
