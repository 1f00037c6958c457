package spec

import (
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// writtenTTL is how long a write's result stands in for the downstream cache, and when a
// key that used one is looked at again. The cache sees our writes within milliseconds.
const writtenTTL = 5 * time.Second

// maxWritten bounds the remembered writes; beyond it, the oldest are dropped first
// by age (a dropped entry only costs a read).
const maxWritten = 4096

// written remembers the objects our last downstream writes returned, until the
// downstream cache has caught up with them. A key is often reconciled again right after a
// first sync (the upstream finalizer's own watch event brings it back) before the
// downstream watch has delivered the object just created: without this, that second look
// would find no cached object and send a create that can only fail, then a read.
//
// Only the spec path reads it, never the removal path, and a reconcile that used a
// remembered object is looked at again after writtenTTL: if the object was deleted before
// the cache ever saw it, that look finds it missing.
type written struct {
	mu sync.Mutex
	m  map[writtenKey]writtenEntry
}

type writtenKey struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

type writtenEntry struct {
	obj *unstructured.Unstructured
	at  time.Time
}

func newWritten() *written { return &written{m: map[writtenKey]writtenEntry{}} }

// remember records obj, the server's answer to a write of gvr.
func (w *written) remember(gvr schema.GroupVersionResource, obj *unstructured.Unstructured, now time.Time) {
	if obj == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.m) >= maxWritten {
		for k, e := range w.m {
			if now.Sub(e.at) >= writtenTTL {
				delete(w.m, k)
			}
		}
		if len(w.m) >= maxWritten {
			return
		}
	}
	w.m[writtenKey{gvr, obj.GetNamespace(), obj.GetName()}] = writtenEntry{obj: obj, at: now}
}

// forget drops what is remembered of namespace/name (after we delete it).
func (w *written) forget(gvr schema.GroupVersionResource, namespace, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, writtenKey{gvr, namespace, name})
}

// newer returns the remembered object of namespace/name when it is newer than cached
// (nil: not in the cache) and younger than writtenTTL. An entry the cache has caught up
// with is dropped.
func (w *written) newer(gvr schema.GroupVersionResource, namespace, name string, cached *unstructured.Unstructured, now time.Time) (*unstructured.Unstructured, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := writtenKey{gvr, namespace, name}
	e, ok := w.m[k]
	if !ok {
		return nil, false
	}
	if now.Sub(e.at) >= writtenTTL || (cached != nil && !olderThan(cached, e.obj)) {
		delete(w.m, k)
		return nil, false
	}
	return e.obj, true
}

// olderThan reports whether a's resourceVersion is below b's. The physical cluster's
// resourceVersions are etcd revisions; anything that does not parse is never older, so
// the cache wins.
func olderThan(a, b *unstructured.Unstructured) bool {
	ra, errA := strconv.ParseUint(a.GetResourceVersion(), 10, 64)
	rb, errB := strconv.ParseUint(b.GetResourceVersion(), 10, 64)
	return errA == nil && errB == nil && ra < rb
}
