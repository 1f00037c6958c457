package spec

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// foreignScanTTL is how long a listing of the objects that are not ours in a downstream
// namespace answers "is there a foreign object of this name?" without a request. It
// bounds the window in which a foreign object created after the listing could be taken
// for an absent one; the initial sync of a namespace's objects (thousands of keys within
// seconds) then costs one LIST instead of one GET per object.
const foreignScanTTL = 5 * time.Second

type scanKey struct {
	gvr schema.GroupVersionResource
	ns  string
}

type foreignScan struct {
	at      time.Time
	objects map[string]*unstructured.Unstructured
}

// foreignScans caches, per resource and downstream namespace, the objects that do not
// carry this target's downstream label: those our label-filtered informer cannot see.
type foreignScans struct {
	mu    sync.Mutex
	scans map[scanKey]foreignScan
	group singleflight.Group
}

// lookup returns the foreign object ns/name (nil when there is none) from a listing at
// most foreignScanTTL old, listing the namespace when needed.
func (c *Controller) foreignObject(ctx context.Context, r Resource, ns, name string) (*unstructured.Unstructured, error) {
	k := scanKey{gvr: r.GVR, ns: ns}
	now := c.cfg.Now()
	c.foreign.mu.Lock()
	s, ok := c.foreign.scans[k]
	c.foreign.mu.Unlock()
	if !ok || now.Sub(s.at) > foreignScanTTL {
		v, err, _ := c.foreign.group.Do(r.GVR.String()+"|"+ns, func() (any, error) {
			return c.scanForeign(ctx, k)
		})
		if err != nil {
			return nil, err
		}
		s = v.(foreignScan)
	}
	return s.objects[name], nil
}

func (c *Controller) scanForeign(ctx context.Context, k scanKey) (foreignScan, error) {
	// Taken before the request, so the listing is never considered fresher than it is.
	at := c.cfg.Now()
	list, err := c.cfg.DownstreamClient.Resource(k.gvr).Namespace(k.ns).List(ctx, metav1.ListOptions{
		LabelSelector: identity.DownstreamClusterLabel + "!=" + c.cfg.Target.Key,
	})
	if err != nil {
		return foreignScan{}, fmt.Errorf("list foreign downstream %s in %s: %w", k.gvr.Resource, k.ns, err)
	}
	s := foreignScan{at: at, objects: make(map[string]*unstructured.Unstructured, len(list.Items))}
	for i := range list.Items {
		s.objects[list.Items[i].GetName()] = &list.Items[i]
	}
	c.foreign.mu.Lock()
	defer c.foreign.mu.Unlock()
	if c.foreign.scans == nil {
		c.foreign.scans = map[scanKey]foreignScan{}
	}
	for key, old := range c.foreign.scans {
		if at.Sub(old.at) > foreignScanTTL {
			delete(c.foreign.scans, key)
		}
	}
	c.foreign.scans[k] = s
	return s, nil
}
