package transformation

import (
	"encoding/json"
	"fmt"
	"maps"
)

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

// renameField replaces m[key] by fn(m[key]) when it is a string. It writes only on change:
// storing a string in an interface allocates, and most names are not renamed.
func renameField(m map[string]any, key string, fn func(string) string) {
	if s, ok := m[key].(string); ok {
		if renamed := fn(s); renamed != s {
			m[key] = renamed
		}
	}
}

// metaString returns obj.metadata.<field>.<key> when it is a string, without copying the map
// as GetLabels and GetAnnotations do.
func metaString(obj map[string]any, field, key string) (string, bool) {
	s, ok := asMap(asMap(obj["metadata"])[field])[key].(string)
	return s, ok
}

// label returns one label of obj.
func label(obj map[string]any, key string) (string, bool) { return metaString(obj, "labels", key) }

// annotation returns one annotation of obj.
func annotation(obj map[string]any, key string) (string, bool) {
	return metaString(obj, "annotations", key)
}

// copyObject deep-copies src. Going down it leaves out .status and metadata.managedFields:
// they never reach the downstream object, and copying them is wasted work.
func copyObject(src map[string]any, dir Direction) (map[string]any, error) {
	out := make(map[string]any, len(src))
	for k, v := range src {
		switch {
		case dir == Down && k == "status":
			continue
		case dir == Down && k == "metadata":
			if md, ok := v.(map[string]any); ok {
				copied := make(map[string]any, len(md))
				for mk, mv := range md {
					if mk == "managedFields" {
						continue
					}
					c, err := copyJSON(mv)
					if err != nil {
						return nil, fmt.Errorf("copy metadata.%s: %w", mk, err)
					}
					copied[mk] = c
				}
				out[k] = copied
				continue
			}
		}
		c, err := copyJSON(v)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", k, err)
		}
		out[k] = c
	}
	return out, nil
}

// copyJSON deep-copies a JSON value as unstructured holds it. Unlike
// runtime.DeepCopyJSONValue it reports a non-JSON value (an int, a []string) as an error
// naming its path instead of panicking. Scalars are immutable and shared; maps.Clone copies
// an object's table at once, and only nested objects and arrays are then replaced.
func copyJSON(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := maps.Clone(x)
		for k, e := range x {
			if !isScalar(e) {
				c, err := copyJSON(e)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", k, err)
				}
				out[k] = c
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			if isScalar(e) {
				out[i] = e
				continue
			}
			c, err := copyJSON(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = c
		}
		return out, nil
	}
	if isScalar(v) {
		return v, nil
	}
	return nil, fmt.Errorf("%T is not a JSON value", v)
}

func isScalar(v any) bool {
	switch v.(type) {
	case string, int64, float64, bool, nil, json.Number:
		return true
	}
	return false
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
