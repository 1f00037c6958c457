// Package status carries the status of synced downstream objects up to their upstream
// objects: the downstream informer enqueues the key of the upstream object (read from the
// ownership annotations), and Reconcile re-reads both objects from the caches, asks the
// transformation what upstream should hold, and writes only what changed.
//
// Decisions (reconcile.go):
//   - .status goes through the status subresource with UpdateStatus carrying the cached
//     resourceVersion; a 409 re-reads the object from the API server and recomputes, so a
//     concurrent writer is never overwritten with stale data.
//   - with several sync targets, the per-target status annotation is written with a merge
//     patch on the main resource (it is metadata, not status), guarded by the UID.
//   - objects being deleted upstream, objects whose downstream copy belongs to another
//     upstream UID, and objects not labelled Sync for this target are left alone.
//   - a resource whose upstream /status answers 404 while the object exists has no status
//     subresource: it is remembered per resource and never retried.
//   - the downstream object is the truth: when another writer changes the upstream status
//     (a resourceVersion that is not our last write's), the key is re-queued after a delay
//     that doubles per re-assert (10 ms … 1 min, reset after 2 min of quiet), so a writer
//     that keeps disagreeing is answered ever more slowly instead of spinning. The watch
//     usually delivers our own write before its response: a change seen while a write of
//     the key is in flight is judged once the response names our resourceVersion.
package status

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
	"github.com/tmc-syncer/syncer/modules/upstream/metrics"
)

// ControllerName names the controller in logs and work-queue metrics.
const ControllerName = "upstream-status"

// FieldManager is the field manager of every upstream write.
const FieldManager = "tmc-syncer"

// Informers starts the informers the controller needs and reads from their caches;
// *informers.Manager implements it.
type Informers interface {
	Start(ctx context.Context, id informers.ID) (cache.SharedIndexInformer, error)
	Get(id informers.ID, cluster, namespace, name string) (metav1.Object, bool, error)
	// WaitForSyncOrNotServed waits until each informer has synced or its resource was
	// answered 404 (not served yet: it syncs later, and its status with it).
	WaitForSyncOrNotServed(ctx context.Context, ids ...informers.ID) bool
}

// Transformer computes what the upstream object holds for a downstream status;
// *transformation.Pipeline implements it.
type Transformer interface {
	StatusToUpstream(ctx transformation.Context, downstream, upstream *unstructured.Unstructured) (*unstructured.Unstructured, bool, error)
}

// Config wires a Controller.
type Config struct {
	// Resources are the synced resources whose status flows up.
	Resources []schema.GroupVersionResource
	// Informers gives the upstream and downstream caches of Resources.
	Informers Informers
	// Upstream writes to the control plane.
	Upstream dynamic.Interface
	// Transformer maps downstream status onto the upstream object.
	Transformer Transformer
	// Context describes the sync target to the transformer.
	Context transformation.Context
	// Workers reconcile keys concurrently; 0 means 4.
	Workers int
	// Queue configures the work queue (retries, metrics, observer).
	Queue queue.Options
	// Metrics records latency and writes; nil records nothing.
	Metrics *metrics.Metrics
}

// Controller is the status syncer.
type Controller struct {
	cfg    Config
	runner *queue.Runner
	synced atomic.Bool

	mu sync.Mutex
	// seen holds, per queued key, when the downstream change was first observed.
	seen map[queue.Key]time.Time
	// noStatus remembers resources without a status subresource upstream.
	noStatus map[schema.GroupVersionResource]bool
	// written holds the upstream resourceVersion our last write produced, to tell our own
	// updates from another writer's.
	written map[queue.Key]string
	// inflight holds the keys whose upstream write has been sent but not answered, with the
	// resourceVersion of the last status change seen meanwhile ("" for none): the watch
	// often delivers our own write before its response, when it cannot be told apart yet.
	inflight map[queue.Key]string
	// reasserts backs off re-asserting status over another writer, per key.
	reasserts map[queue.Key]*backoff
	now       func() time.Time
}

// backoff is the re-assert state of one key.
type backoff struct {
	n    int
	last time.Time
}

// Re-assert delays: a writer that keeps disagreeing (a controller computing status upstream)
// is answered ever more slowly, so the two never spin.
const (
	reassertBase  = 10 * time.Millisecond
	reassertMax   = time.Minute
	reassertReset = 2 * time.Minute
)

// New returns a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.Informers == nil || cfg.Upstream == nil || cfg.Transformer == nil {
		return nil, fmt.Errorf("status controller: informers, upstream client and transformer are required")
	}
	if cfg.Context.SyncTargetKey == "" || cfg.Context.SyncTargetName == "" {
		return nil, fmt.Errorf("status controller: sync target key and name are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	c := &Controller{
		cfg: cfg, seen: map[queue.Key]time.Time{}, noStatus: map[schema.GroupVersionResource]bool{},
		written: map[queue.Key]string{}, inflight: map[queue.Key]string{}, reasserts: map[queue.Key]*backoff{}, now: time.Now,
	}
	c.runner = queue.NewRunner(c, cfg.Queue)
	return c, nil
}

// Name implements queue.Controller.
func (c *Controller) Name() string { return ControllerName }

// Workers implements queue.Controller.
func (c *Controller) Workers() int { return c.cfg.Workers }

// Synced reports whether the caches have synced and workers run, for readiness checks.
func (c *Controller) Synced() bool { return c.synced.Load() }

// Runner exposes the work queue, e.g. for status snapshots.
func (c *Controller) Runner() *queue.Runner { return c.runner }

// Run starts the informers of every resource, waits for their caches and reconciles until
// ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("controller", ControllerName)
	ctx = klog.NewContext(ctx, logger)
	var ids []informers.ID
	// The informers may be shared (the engine's) and outlive this controller: its
	// handlers go when it stops, so a controller started again for a new resource
	// set does not leave the old one's behind.
	type registration struct {
		inf cache.SharedIndexInformer
		reg cache.ResourceEventHandlerRegistration
	}
	var regs []registration
	defer func() {
		for _, r := range regs {
			_ = r.inf.RemoveEventHandler(r.reg)
		}
	}()
	for _, gvr := range c.cfg.Resources {
		down, err := c.cfg.Informers.Start(ctx, informers.ID{Side: informers.Downstream, GVR: gvr})
		if err != nil {
			return fmt.Errorf("status controller: %w", err)
		}
		reg, err := down.AddEventHandler(c.downstreamHandler(gvr))
		if err != nil {
			return fmt.Errorf("status controller: watch downstream %s: %w", gvr, err)
		}
		regs = append(regs, registration{down, reg})
		up, err := c.cfg.Informers.Start(ctx, informers.ID{Side: informers.Upstream, GVR: gvr})
		if err != nil {
			return fmt.Errorf("status controller: %w", err)
		}
		if reg, err = up.AddEventHandler(c.upstreamHandler(gvr)); err != nil {
			return fmt.Errorf("status controller: watch upstream %s: %w", gvr, err)
		}
		regs = append(regs, registration{up, reg})
		ids = append(ids, informers.ID{Side: informers.Downstream, GVR: gvr}, informers.ID{Side: informers.Upstream, GVR: gvr})
	}
	if !c.cfg.Informers.WaitForSyncOrNotServed(ctx, ids...) {
		// Stopped before the caches synced: a shutdown, not a failure.
		return nil
	}
	c.synced.Store(true)
	logger.V(2).Info("caches synced", "resources", len(c.cfg.Resources))
	return c.runner.Run(ctx)
}

// downstreamKey maps a downstream object to the key of its upstream object.
func (c *Controller) downstreamKey(gvr schema.GroupVersionResource, obj metav1.Object) (queue.Key, bool) {
	if obj.GetLabels()[identity.DownstreamClusterLabel] != c.cfg.Context.SyncTargetKey {
		return queue.Key{}, false
	}
	o, ok := ownership.FromAnnotations(obj.GetAnnotations())
	if !ok {
		return queue.Key{}, false
	}
	return queue.Key{Direction: queue.Up, GVR: gvr, Cluster: o.Cluster, Namespace: o.Namespace, Name: o.Name}, true
}

// enqueueObserved queues key and remembers when the change was first seen, for the latency
// histogram.
func (c *Controller) enqueueObserved(key queue.Key) {
	c.mu.Lock()
	if _, ok := c.seen[key]; !ok {
		c.seen[key] = time.Now()
	}
	c.mu.Unlock()
	c.runner.Enqueue(key)
}

func (c *Controller) takeSeen(key queue.Key) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.seen[key]
	delete(c.seen, key)
	return t, ok
}

func (c *Controller) downstreamHandler(gvr schema.GroupVersionResource) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		if m, ok := asObject(obj); ok {
			if key, ok := c.downstreamKey(gvr, m); ok {
				c.enqueueObserved(key)
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			// Spec-only updates (our own applies) cannot change what goes up.
			if statusOrOwnerChanged(oldObj, newObj) {
				enqueue(newObj)
			}
		},
		// A deleted downstream object leaves the last status upstream, as kcp does.
	}
}

func (c *Controller) upstreamHandler(gvr schema.GroupVersionResource) cache.ResourceEventHandler {
	keys := queue.ObjectKeys(queue.Up, gvr, c.cfg.Context.LogicalCluster)
	enqueue := func(obj any) {
		if m, ok := asObject(obj); ok {
			for _, k := range keys(m) {
				c.runner.Enqueue(k)
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := asObject(oldObj)
			n, ok2 := asObject(newObj)
			if !ok1 || !ok2 {
				return
			}
			// Labels decide single vs multi-target.
			if !reflect.DeepEqual(o.GetLabels(), n.GetLabels()) || o.GetUID() != n.GetUID() ||
				o.GetAnnotations()[c.statusAnnotation()] != n.GetAnnotations()[c.statusAnnotation()] {
				enqueue(newObj)
				return
			}
			// Another writer changed status: the downstream object is the truth, re-assert
			// it, with a growing delay so that two writers never spin.
			ou, isU1 := oldObj.(*unstructured.Unstructured)
			nu, isU2 := newObj.(*unstructured.Unstructured)
			if isU1 && isU2 && !reflect.DeepEqual(ou.Object["status"], nu.Object["status"]) {
				for _, k := range keys(n) {
					c.reassert(k, n.GetResourceVersion())
				}
			}
		},
		DeleteFunc: func(obj any) {
			if m, ok := asObject(obj); ok {
				for _, k := range keys(m) {
					c.forget(k)
				}
			}
		},
	}
}

// reassert queues key after another writer changed its status, unless resourceVersion is
// the one our own last write produced. While a write of key is in flight the decision waits
// for its response (see writing).
func (c *Controller) reassert(key queue.Key, resourceVersion string) {
	c.mu.Lock()
	if _, writing := c.inflight[key]; writing {
		c.inflight[key] = resourceVersion
		c.mu.Unlock()
		return
	}
	if c.written[key] == resourceVersion {
		c.mu.Unlock()
		return
	}
	delay := c.reassertDelayLocked(key)
	c.mu.Unlock()
	c.runner.EnqueueAfter(key, delay)
}

// reassertDelayLocked returns how long to wait before re-asserting key, growing with each
// re-assert; called with mu held.
func (c *Controller) reassertDelayLocked(key queue.Key) time.Duration {
	now := c.now()
	b := c.reasserts[key]
	if b == nil || now.Sub(b.last) > reassertReset {
		b = &backoff{}
		c.reasserts[key] = b
	}
	delay := min(reassertBase<<min(b.n, 20), reassertMax)
	b.n++
	b.last = now
	return delay
}

// writing sends one upstream write of key (write returns the resourceVersion it produced)
// and records that resourceVersion as ours. A status change the upstream watch delivered
// while the write was in flight is re-asserted only if it is not our write's.
func (c *Controller) writing(key queue.Key, write func() (string, error)) error {
	c.mu.Lock()
	c.inflight[key] = ""
	c.mu.Unlock()
	resourceVersion, err := write()
	c.mu.Lock()
	seen := c.inflight[key]
	delete(c.inflight, key)
	if err == nil {
		c.written[key] = resourceVersion
	}
	// A failed write is retried (conflict) or re-queued (error) and re-reads the object then.
	if err != nil || seen == "" || seen == resourceVersion {
		c.mu.Unlock()
		return err
	}
	delay := c.reassertDelayLocked(key)
	c.mu.Unlock()
	c.runner.EnqueueAfter(key, delay)
	return nil
}

func (c *Controller) forget(key queue.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.written, key)
	delete(c.reasserts, key)
	if _, writing := c.inflight[key]; writing {
		c.inflight[key] = ""
	}
}

func (c *Controller) statusAnnotation() string {
	return identity.StatusAnnotation(c.cfg.Context.SyncTargetKey)
}

func asObject(obj any) (metav1.Object, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, ok := obj.(metav1.Object)
	return m, ok
}

func statusOrOwnerChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*unstructured.Unstructured)
	n, ok2 := newObj.(*unstructured.Unstructured)
	if !ok1 || !ok2 {
		return true
	}
	if !reflect.DeepEqual(o.Object["status"], n.Object["status"]) {
		return true
	}
	oo, _ := ownership.FromAnnotations(o.GetAnnotations())
	no, _ := ownership.FromAnnotations(n.GetAnnotations())
	return oo != no || o.GetLabels()[identity.DownstreamClusterLabel] != n.GetLabels()[identity.DownstreamClusterLabel]
}
