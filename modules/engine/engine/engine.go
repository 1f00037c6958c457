package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/metrics"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
	"github.com/tmc-syncer/syncer/modules/engine/status"
)

// ResourceSetController is the name of the engine's own controller that keeps
// the resource set and status.syncedResources up to date.
const ResourceSetController = "engine-resource-set"

// Engine runs informers and controllers for one SyncTarget. Create it with New,
// Register controllers, then Run it.
type Engine struct {
	cfg        Config
	target     identity.Target
	up, down   ClusterClients
	configured []schema.GroupResource
	informers  *informers.Manager
	metrics    *metrics.Metrics

	resourceRunner *queue.Runner
	syncTarget     cache.SharedIndexInformer

	mu      sync.RWMutex
	runners []*queue.Runner
	set     resources.Set
	infCtx  context.Context

	started  atomic.Bool
	resolved chan struct{}
	once     sync.Once
	ready    chan struct{}
}

// New returns an Engine. It does not talk to the clusters yet.
func New(cfg Config, upstream, downstream ClusterClients) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	configured, err := resources.Parse(cfg.Resources)
	if err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	stCluster := cfg.SyncTargetCluster
	if stCluster == "" {
		stCluster = cfg.FromCluster
	}
	target := identity.NewTarget(stCluster, cfg.SyncTargetName, cfg.SyncTargetUID)
	e := &Engine{
		cfg:        cfg,
		target:     target,
		up:         upstream,
		down:       downstream,
		configured: configured,
		informers: informers.NewManager(informers.Options{
			Target:       target,
			FromCluster:  cfg.FromCluster,
			Upstream:     informers.Clients{Dynamic: upstream.Dynamic, Metadata: upstream.Metadata},
			Downstream:   informers.Clients{Dynamic: downstream.Dynamic, Metadata: downstream.Metadata},
			ResyncPeriod: cfg.ResyncPeriod,

			KeepManagedFields:    cfg.KeepManagedFields,
			UpstreamListPageSize: cfg.UpstreamListPageSize,
		}),
		resolved: make(chan struct{}),
		ready:    make(chan struct{}),
	}
	if cfg.Registry != nil {
		if e.metrics, err = metrics.New(cfg.Registry); err != nil {
			return nil, fmt.Errorf("engine metrics: %w", err)
		}
		if err := metrics.RegisterStatus(cfg.Registry, e.Snapshot); err != nil {
			return nil, fmt.Errorf("engine metrics: %w", err)
		}
	}
	e.resourceRunner = queue.NewRunner(resourceSetController{e: e}, e.queueOptions())
	return e, nil
}

func (e *Engine) queueOptions() queue.Options {
	opts := queue.Options{RateLimit: e.cfg.RateLimit, DrainTimeout: e.cfg.DrainTimeout}
	if e.metrics != nil {
		opts.MetricsProvider, opts.Observer = e.metrics, e.metrics
	}
	return opts
}

// Target returns the identity of the SyncTarget.
func (e *Engine) Target() identity.Target { return e.target }

// Informers returns the informer manager: use Informer, Lister and Get with
// SetInformer(side, gvr) to read objects of the resource set.
func (e *Engine) Informers() *informers.Manager { return e.informers }

// Resources returns the current resource set.
func (e *Engine) Resources() resources.Set {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return append(resources.Set(nil), e.set...)
}

// Ready is closed once the resource set was resolved, its informers synced and
// the controllers started.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// SetInformer returns the ID of the informer the engine runs for gvr of the
// resource set on side (metadata-only when Config.MetadataOnly lists the side).
func (e *Engine) SetInformer(side informers.Side, gvr schema.GroupVersionResource) informers.ID {
	return e.setID(side, gvr)
}

func (e *Engine) setID(side informers.Side, gvr schema.GroupVersionResource) informers.ID {
	return informers.ID{Side: side, GVR: gvr, MetadataOnly: e.cfg.metadataOnly(side)}
}

// Watch subscribes a controller to the informers of one side.
type Watch struct {
	Side informers.Side
	// Direction of the keys produced by the default mapping.
	Direction queue.Direction
	// Keys picks the informers to watch and maps their objects to keys; returning
	// nil skips an informer. Nil means every informer of the resource set on Side
	// (see SetInformer), mapped by Engine.DefaultKeys.
	Keys func(id informers.ID) queue.KeysFunc
	// SkipUpdate, when set, drops the update events of informer id it returns true for:
	// changes the controller does not read (e.g. informers.OnlyStatusChanged), which would
	// only cost a reconcile on the hot path of every write. Deletes always pass.
	SkipUpdate func(id informers.ID, oldObj, newObj any) bool
	// SkipAdds, when set, drops every add event (the initial list's too) of the informers
	// it returns true for: for a controller that only an object's going away can give
	// work, each add would be a reconcile per object created.
	SkipAdds func(id informers.ID) bool
}

// Register adds a controller. Its workers start once the engine is ready; keys
// may be enqueued (through the returned Runner) before that. It fails once Run
// has been called.
func (e *Engine) Register(c queue.Controller, watches ...Watch) (*queue.Runner, error) {
	if e.started.Load() {
		return nil, fmt.Errorf("register controller %s: engine already running", c.Name())
	}
	r := queue.NewRunner(c, e.queueOptions())
	for _, w := range watches {
		keys := w.Keys
		if keys == nil {
			dir := w.Direction
			keys = func(id informers.ID) queue.KeysFunc {
				if id.MetadataOnly != e.cfg.metadataOnly(id.Side) || id.GVR == informers.NamespacesGVR {
					return nil
				}
				return e.DefaultKeys(dir, id)
			}
		}
		skip, skipAdds := w.SkipUpdate, w.SkipAdds
		err := e.informers.AddEventHandler(w.Side, func(id informers.ID) cache.ResourceEventHandler {
			f := keys(id)
			if f == nil {
				return nil
			}
			h := r.EventHandler(f)
			if skip != nil {
				h = skippingUpdates{h, func(oldObj, newObj any) bool { return skip(id, oldObj, newObj) }}
			}
			if skipAdds != nil && skipAdds(id) {
				h = skippingAdds{h}
			}
			return h
		})
		if err != nil {
			return nil, fmt.Errorf("register controller %s: %w", c.Name(), err)
		}
	}
	e.mu.Lock()
	e.runners = append(e.runners, r)
	e.mu.Unlock()
	return r, nil
}

// DefaultKeys maps an object of informer id to the key of its upstream object:
// upstream, the object itself in its logical cluster; downstream, the object's
// name in the upstream namespace its downstream namespace's locator points at
// (objects in namespaces without locator are ignored).
func (e *Engine) DefaultKeys(dir queue.Direction, id informers.ID) queue.KeysFunc {
	if id.Side == informers.Upstream {
		return queue.ObjectKeys(dir, id.GVR, e.cfg.FromCluster)
	}
	return func(obj metav1.Object) []queue.Key {
		k := queue.Key{Direction: dir, GVR: id.GVR, Cluster: e.cfg.FromCluster, Name: obj.GetName()}
		if ns := obj.GetNamespace(); ns != "" {
			cluster, upstreamNS, ok, err := e.informers.UpstreamNamespace(ns)
			if err != nil || !ok {
				return nil
			}
			if cluster != "" {
				k.Cluster = cluster
			}
			k.Namespace = upstreamNS
		}
		return []queue.Key{k}
	}
}

// Snapshot returns the engine's current status.
func (e *Engine) Snapshot() status.Snapshot {
	e.mu.RLock()
	queues := make([]status.QueueSource, 0, len(e.runners)+1)
	queues = append(queues, e.resourceRunner)
	for _, r := range e.runners {
		queues = append(queues, r)
	}
	set := e.set
	e.mu.RUnlock()
	return status.Collect(time.Now(), e.target.String(), e.informers, queues, set)
}

// Run checks the SyncTarget's UID, starts the informers and the controllers and
// blocks until ctx ends; it then drains the controllers and stops the informers.
// It fails at once when the SyncTarget cannot be read or has another UID.
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine: Run called twice")
	}
	logger := klog.FromContext(ctx).WithValues("syncTarget", e.target.String(), "syncTargetKey", e.target.Key)
	ctx = klog.NewContext(ctx, logger)

	st, err := e.syncTargetClient().Get(ctx, e.cfg.SyncTargetName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get sync target %s: %w", e.target, err)
	}
	if err := e.target.VerifyUID(st); err != nil {
		return err
	}
	if own := identity.TargetOf(st, e.cfg.FromCluster); own.Key != e.target.Key {
		return fmt.Errorf("sync target %s lives in logical cluster %q (its %s annotation), so its key is %s, not %s: set Config.SyncTargetCluster",
			e.target, own.Cluster, identity.LogicalClusterAnnotation, own.Key, e.target.Key)
	}

	logger.V(1).Info("sync target verified")
	infCtx, stopInformers := context.WithCancel(ctx)
	defer func() {
		stopInformers()
		e.informers.StopAll()
	}()
	e.mu.Lock()
	e.infCtx = infCtx
	e.mu.Unlock()
	if err := e.startBaseInformers(infCtx); err != nil {
		return err
	}

	logger.V(1).Info("sync target and namespace caches synced")
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = e.resourceRunner.Run(ctx) })
	wg.Go(func() { e.rediscover(ctx) })
	e.resourceRunner.Enqueue(e.resourceKey())

	select {
	case <-e.resolved:
	case <-ctx.Done():
		return nil
	}
	if !e.waitForInformers(ctx) {
		return nil
	}
	logger.V(1).Info("caches synced", "informers", len(e.informers.Running()))

	e.mu.RLock()
	runners := append([]*queue.Runner(nil), e.runners...)
	e.mu.RUnlock()
	for _, r := range runners {
		wg.Go(func() { _ = r.Run(ctx) })
	}
	close(e.ready)
	logger.Info("engine ready", "controllers", len(runners), "informers", len(e.informers.Running()))
	<-ctx.Done()
	logger.Info("engine stopping")
	return nil
}

func (e *Engine) startBaseInformers(ctx context.Context) error {
	e.syncTarget = newSyncTargetInformer(e.syncTargetClient(), e.cfg.SyncTargetName)
	if _, err := e.syncTarget.AddEventHandler(syncTargetHandler(func() { e.resourceRunner.Enqueue(e.resourceKey()) })); err != nil {
		return fmt.Errorf("watch sync target %s: %w", e.target, err)
	}
	go e.syncTarget.RunWithContext(ctx)

	// Namespaces are needed on both sides whatever the resource set: downstream to
	// map objects to their upstream namespace, upstream to notice namespace deletion.
	nsIDs := []informers.ID{
		{Side: informers.Upstream, GVR: informers.NamespacesGVR, MetadataOnly: true},
		{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true},
	}
	for _, id := range nsIDs {
		if _, err := e.informers.Start(ctx, id); err != nil {
			return fmt.Errorf("start namespace informers: %w", err)
		}
	}
	if !cache.WaitFor(ctx, "", e.syncTarget.HasSyncedChecker()) || !e.informers.WaitForSync(ctx, nsIDs...) {
		return fmt.Errorf("wait for sync target and namespace informers of %s: %w", e.target, context.Cause(ctx))
	}
	return nil
}

// waitForInformers waits for every running informer to sync, logging the slow ones. An
// informer whose resource the server does not serve (404: kcp can accept a resource its
// virtual workspace serves only once a workspace binds it) is not waited for: it keeps
// retrying and its controllers see its objects once it syncs, while everything else syncs.
func (e *Engine) waitForInformers(ctx context.Context) bool {
	logger := klog.FromContext(ctx)
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ok := e.informers.WaitForSyncOrNotServed(wctx, e.informers.Running()...)
		cancel()
		if ok {
			var unserved []string
			for _, s := range e.informers.Status() {
				if s.NotServed {
					unserved = append(unserved, s.ID.String())
				}
			}
			if len(unserved) > 0 {
				logger.Info("WARNING: resources not served (404), their objects are synced once they are", "informers", unserved)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		var waiting []string
		for _, s := range e.informers.Status() {
			if !s.Synced {
				waiting = append(waiting, s.ID.String())
			}
		}
		logger.Info("still waiting for informers to sync", "informers", waiting)
	}
}

func (e *Engine) rediscover(ctx context.Context) {
	t := time.NewTicker(e.cfg.RediscoveryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			e.resourceRunner.Enqueue(e.resourceKey())
		}
	}
}

// syncTargetClient reaches the SyncTarget in its workspace.
func (e *Engine) syncTargetClient() dynamic.NamespaceableResourceInterface {
	if e.cfg.SyncTarget != nil {
		return e.cfg.SyncTarget.Resource(workloadv1alpha1.SyncTargetsResource)
	}
	return e.up.Dynamic.Resource(workloadv1alpha1.SyncTargetsResource)
}

func (e *Engine) resourceKey() queue.Key {
	return queue.Key{Direction: queue.Up, GVR: workloadv1alpha1.SyncTargetsResource, Cluster: e.cfg.FromCluster, Name: e.cfg.SyncTargetName}
}

// skippingAdds passes the updates and deletes of an informer to a handler, not its adds.
type skippingAdds struct {
	cache.ResourceEventHandler
}

func (skippingAdds) OnAdd(any, bool) {}

// skippingUpdates passes the events of an informer to a handler, except the updates skip
// returns true for.
type skippingUpdates struct {
	cache.ResourceEventHandler
	skip func(oldObj, newObj any) bool
}

func (s skippingUpdates) OnUpdate(oldObj, newObj any) {
	if !s.skip(oldObj, newObj) {
		s.ResourceEventHandler.OnUpdate(oldObj, newObj)
	}
}
