// Package fields reads and writes dotted JSON paths ("spec.replicas") in unstructured
// objects and compares a desired object with a live one the way a server-side apply
// would see it: every field we set must hold our value, fields the server or other
// managers added are ignored.
package fields

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Split turns "spec.template.spec.replicas" into its segments. Empty segments are dropped.
func Split(path string) []string {
	var out []string
	for s := range strings.SplitSeq(path, ".") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ParseList reads a list of paths written either as a JSON array (`["spec.replicas"]`)
// or as a comma-separated string (`spec.replicas, spec.paused`).
func ParseList(raw string) ([]string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, nil
	}
	var items []string
	if strings.HasPrefix(raw, "[") {
		if err := json.Unmarshal([]byte(raw), &items); err != nil {
			return nil, fmt.Errorf("parse path list %q: %w", raw, err)
		}
	} else {
		items = strings.Split(raw, ",")
	}
	var out []string
	for _, p := range items {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		p = strings.TrimPrefix(p, ".")
		if len(Split(p)) == 0 {
			return nil, fmt.Errorf("parse path list %q: empty path %q", raw, p)
		}
		out = append(out, p)
	}
	return out, nil
}

// Get returns the value at path and whether it is present.
func Get(obj map[string]any, path string) (any, bool) {
	segs := Split(path)
	if len(segs) == 0 {
		return nil, false
	}
	var cur any = obj
	for _, s := range segs {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[s]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Set stores v at path, creating intermediate maps. It fails when an intermediate value
// exists and is not a map.
func Set(obj map[string]any, path string, v any) error {
	segs := Split(path)
	if len(segs) == 0 {
		return fmt.Errorf("set %q: empty path", path)
	}
	cur := obj
	for _, s := range segs[:len(segs)-1] {
		next, ok := cur[s]
		if !ok || next == nil {
			m := map[string]any{}
			cur[s] = m
			cur = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("set %q: %s is a %T, not an object", path, s, next)
		}
		cur = m
	}
	cur[segs[len(segs)-1]] = v
	return nil
}

// Remove deletes the value at path, if present.
func Remove(obj map[string]any, path string) {
	segs := Split(path)
	if len(segs) == 0 {
		return
	}
	cur := obj
	for _, s := range segs[:len(segs)-1] {
		m, ok := cur[s].(map[string]any)
		if !ok {
			return
		}
		cur = m
	}
	delete(cur, segs[len(segs)-1])
}

// Contains reports whether got holds every field of want with an equal value. Lists must
// have the same length and match element by element; maps may carry extra keys (server
// defaults, fields of other managers). Empty maps/lists and nulls in want match an absent
// field, as the apiserver drops them. Numbers compare by value (int64 vs float64).
func Contains(want, got any) bool {
	switch w := want.(type) {
	case nil:
		return true
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return len(w) == 0 && got == nil
		}
		for k, wv := range w {
			gv, present := g[k]
			if !present {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !Contains(wv, gv) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok {
			return len(w) == 0 && got == nil
		}
		if len(w) != len(g) {
			return false
		}
		for i := range w {
			if !Contains(w[i], g[i]) {
				return false
			}
		}
		return true
	default:
		if wf, ok := number(want); ok {
			if gf, ok := number(got); ok {
				return wf == gf
			}
			return sameQuantity(want, got)
		}
		return reflect.DeepEqual(want, got) || sameQuantity(want, got)
	}
}

// sameQuantity reports whether want and got are the same resource quantity written
// differently: the server stores quantities (cpu: 0.5, memory: 1Gi) in canonical form
// ("500m", "1Gi"), which is not drift.
func sameQuantity(want, got any) bool {
	g, ok := got.(string)
	if !ok {
		return false
	}
	var w string
	switch v := want.(type) {
	case string:
		w = v
	default:
		f, ok := number(want)
		if !ok {
			return false
		}
		w = strconv.FormatFloat(f, 'f', -1, 64)
	}
	wq, err := resource.ParseQuantity(w)
	if err != nil {
		return false
	}
	// Only the canonical form the server writes: "1.10" and "1.1" in an env value are
	// different strings, and drift.
	return g == wq.String()
}

func isEmpty(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(t) == 0
	case []any:
		return len(t) == 0
	}
	return false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float32:
		return float64(n), true
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// ContentContains reports whether live holds desired's content: every top-level field
// except apiVersion, kind, metadata and status (spec, data, rules, ...). It is how we tell
// that a foreign object "already is" what we would write.
func ContentContains(desired, live map[string]any) bool {
	for k, v := range desired {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
			continue
		}
		lv, ok := live[k]
		if !ok && !isEmpty(v) {
			return false
		}
		if ok && !Contains(v, lv) {
			return false
		}
	}
	return true
}
