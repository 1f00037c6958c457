package transformation

import "fmt"

// asMap returns v as a JSON object, or nil when it is anything else. Stages walk user input
// with it so that an unexpected shape is left alone (the apiserver will reject it) instead of
// panicking.
func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// asSlice returns v as a JSON array, or nil when it is anything else.
func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// renameField replaces m[key] by fn(m[key]) when it is a string.
func renameField(m map[string]any, key string, fn func(string) string) {
	if s, ok := m[key].(string); ok {
		m[key] = fn(s)
	}
}

// metadata returns obj's metadata object, creating it when absent.
func metadata(obj map[string]any) (map[string]any, error) {
	return childMap(obj, "metadata")
}

// childMap returns parent[key] as an object, creating it when absent, and an error when it
// holds something else.
func childMap(parent map[string]any, key string) (map[string]any, error) {
	switch v := parent[key].(type) {
	case map[string]any:
		return v, nil
	case nil:
		m := map[string]any{}
		parent[key] = m
		return m, nil
	default:
		return nil, fmt.Errorf("%s is a %T, not an object", key, v)
	}
}

// stringValues checks that every value of m is a string, as labels and annotations must be.
func stringValues(what string, m map[string]any) error {
	for k, v := range m {
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s %q is a %T, not a string", what, k, v)
		}
	}
	return nil
}
