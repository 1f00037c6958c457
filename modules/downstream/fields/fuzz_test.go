package fields

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseListAndPaths feeds arbitrary ignore-fields annotation values (JSON arrays, comma
// lists, garbage) through ParseList and then uses every accepted path on an object: nothing
// panics, every accepted path has a segment, and Set then Get returns what was set unless Set
// refused because a non-map sits in the way.
func FuzzParseListAndPaths(f *testing.F) {
	for _, s := range []string{
		"spec.replicas", " .spec.paused, spec.template.spec.containers", `["spec.replicas","metadata.labels.x"]`,
		`["spec.replicas"`, "spec.replicas,..", `[1,2]`, `["a..b", " "]`, ",,,", "\x00.\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		paths, err := ParseList(raw)
		if err != nil {
			return
		}
		for _, p := range paths {
			require.NotEmpty(t, Split(p), "accepted path %q has a segment", p)
			obj := map[string]any{"spec": map[string]any{"replicas": int64(1), "list": []any{1}}, "metadata": map[string]any{}}
			_, _ = Get(obj, p)
			if err := Set(obj, p, "x"); err == nil {
				got, ok := Get(obj, p)
				require.True(t, ok, "set %q then get", p)
				require.Equal(t, "x", got)
			}
			Remove(obj, p)
			_, err := json.Marshal(obj)
			require.NoError(t, err)
		}
	})
}
