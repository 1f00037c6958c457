package conflict

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FuzzAnnotations: malformed conflict-policy and ignore-fields annotations are errors that
// name the annotation, never panics; an accepted policy is one of the three.
func FuzzAnnotations(f *testing.F) {
	f.Add("Adopt", "spec.replicas")
	f.Add("adopt", `["spec.replicas"`)
	f.Add("", "[]")
	f.Add("Overwrite ", "..")
	f.Fuzz(func(t *testing.T, policy, ignore string) {
		u := &unstructured.Unstructured{Object: map[string]any{}}
		u.SetAnnotations(map[string]string{PolicyAnnotation: policy, IgnoreFieldsAnnotation: ignore})
		p, err := PolicyFor(u, Abort)
		if err != nil {
			require.ErrorContains(t, err, PolicyAnnotation, "error names the annotation")
		} else {
			require.Contains(t, []Policy{Abort, Adopt, Overwrite}, p)
		}
		if _, err := IgnoreFields(u); err != nil {
			require.ErrorContains(t, err, IgnoreFieldsAnnotation, "error names the annotation")
		}
	})
}
