package informers

import (
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Limits of an Interner: how long a string it shares, and how many strings it keeps
// (first come; it never forgets one, so objects cannot make it grow without bound).
const (
	maxInternedLen     = 64
	maxInternedStrings = 16384
)

// Interner makes the objects of the caches share the copies of their repeated strings
// and of their trimmed managedFields entries. A JSON decoder allocates every map key and
// every string value of every object anew: "apiVersion", "metadata", "managedFields",
// the label keys and values every synced object carries, "v1", the managers' names, …
// A cache holding thousands of similar objects holds thousands of copies of each. After
// Intern, the objects refer to one copy (the strings are immutable; the shared entries
// are maps that, like everything in an informer cache, nobody writes).
//
// What is shared: every map key; the values of apiVersion, kind, metadata.namespace, the
// labels, the finalizers, the ownerReferences' apiVersion and kind; and managedFields
// entries as TrimManagedFields leaves them. Other values (names, UIDs, data) are left
// alone: they rarely repeat. Strings longer than 64 bytes are never shared. Safe for
// concurrent use.
type Interner struct {
	mu sync.RWMutex
	// strings maps a string to itself boxed in an interface: the key is the shared copy
	// for map keys, the value the shared boxed value for map values.
	strings map[string]any
	// entries are the shared trimmed managedFields entries, by manager, operation and
	// subresource.
	entries map[entryKey]map[string]any
}

type entryKey struct{ manager, operation, subresource string }

// NewInterner returns an empty Interner.
func NewInterner() *Interner {
	return &Interner{strings: map[string]any{}, entries: map[entryKey]map[string]any{}}
}

// Transform is Intern as a cache transform.
func (in *Interner) Transform(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		in.Intern(u.Object)
	}
	return obj, nil
}

// Intern makes obj (an object's content, as decoded from JSON) refer to the shared copies,
// in place. Idempotent.
func (in *Interner) Intern(obj map[string]any) {
	in.keys(obj, "")
	for _, k := range []string{"apiVersion", "kind"} {
		in.value(obj, k)
	}
	md, ok := obj["metadata"].(map[string]any)
	if !ok {
		return
	}
	in.value(md, "namespace")
	if labels, ok := md["labels"].(map[string]any); ok {
		for k := range labels {
			in.value(labels, k)
		}
	}
	if fins, ok := md["finalizers"].([]any); ok {
		for i, f := range fins {
			if s, ok := f.(string); ok {
				fins[i] = in.boxed(s)
			}
		}
	}
	if refs, ok := md["ownerReferences"].([]any); ok {
		for _, r := range refs {
			if m, ok := r.(map[string]any); ok {
				in.value(m, "apiVersion")
				in.value(m, "kind")
			}
		}
	}
	if mfs, ok := md["managedFields"].([]any); ok {
		for i, e := range mfs {
			m, ok := e.(map[string]any)
			if !ok {
				continue
			}
			if shared := in.entry(m); shared != nil {
				mfs[i] = shared
			} else {
				in.keys(m, "") // whole (fieldsV1): the object's own
			}
		}
	}
}

// keys shares the keys of v's maps, recursively, except under the key skip of the first
// level: the managedFields of metadata, whose entries may be shared ones, never written.
func (in *Interner) keys(v any, skip string) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if s, ok := in.lookup(k); ok {
				// Assigning to an existing key stores the given key: the map now holds
				// the shared copy and the decoded one becomes garbage.
				t[s] = e
			}
			switch {
			case k == skip:
			case k == "metadata" && skip == "":
				in.keys(e, "managedFields")
			default:
				in.keys(e, "-")
			}
		}
	case []any:
		for _, e := range t {
			in.keys(e, "-")
		}
	}
}

// value shares m[k] when it is a string.
func (in *Interner) value(m map[string]any, k string) {
	if s, ok := m[k].(string); ok {
		m[k] = in.boxed(s)
	}
}

// boxed returns the shared s boxed in an interface, or s itself.
func (in *Interner) boxed(s string) any {
	if len(s) > maxInternedLen {
		return s
	}
	in.mu.RLock()
	b, ok := in.strings[s]
	in.mu.RUnlock()
	if ok {
		return b
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if b, ok := in.strings[s]; ok {
		return b
	}
	if len(in.strings) >= maxInternedStrings {
		return s
	}
	in.strings[s] = s
	return s
}

// lookup returns the shared copy of s, adding it when there is room; false when s is not
// shared.
func (in *Interner) lookup(s string) (string, bool) {
	if len(s) > maxInternedLen {
		return "", false
	}
	shared, ok := in.boxed(s).(string)
	return shared, ok
}

// entry returns the shared copy of a trimmed managedFields entry, nil if m is not one
// (it holds more than manager, operation and subresource strings).
func (in *Interner) entry(m map[string]any) map[string]any {
	var key entryKey
	for k, v := range m {
		s, ok := v.(string)
		if !ok || len(s) > maxInternedLen {
			return nil
		}
		switch k {
		case "manager":
			key.manager = s
		case "operation":
			key.operation = s
		case "subresource":
			key.subresource = s
		default:
			return nil
		}
	}
	in.mu.RLock()
	shared, ok := in.entries[key]
	in.mu.RUnlock()
	if ok && len(shared) == len(m) {
		return shared
	}
	in.keys(m, "-") // m may become the shared copy: share its keys first
	in.mu.Lock()
	defer in.mu.Unlock()
	if shared, ok := in.entries[key]; ok {
		if len(shared) == len(m) {
			return shared
		}
		return nil // the same strings, one of them absent rather than empty
	}
	if len(in.entries) >= maxInternedStrings {
		return nil
	}
	in.entries[key] = m
	return m
}
