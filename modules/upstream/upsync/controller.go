// Package upsync carries objects the physical cluster owns up to the control plane, as
// kcp's upsyncer does: downstream PersistentVolumes, Pods and Endpoints labelled
// state.workload.kcp.io/<key>=Upsync (and, like every object of the target, carrying
// internal.workload.kcp.io/cluster=<key>) are created, updated and deleted upstream, in the
// workspace and namespace named by the downstream namespace's locator (a cluster-scoped
// object carries its own locator). Under kcp the writes go through the upsyncer virtual
// workspace; on a plain hub straight to the hub.
//
// The upstream copy carries workload.kcp.io/rv, the downstream resourceVersion it was made
// from: an equal value means nothing to write. Upstream copies whose downstream object is
// gone (or no longer labelled Upsync) are deleted, at start-up too.
//
// The endpoints labeller (endpoints.go) labels the downstream Endpoints of a Service
// annotated experimental.workload.kcp.io/upsync-derived-resources: endpoints for upsync.
package upsync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// ControllerName names the controller in logs and work-queue metrics.
const ControllerName = "upstream-upsync"

// ResourceVersionAnnotation holds, on an upstream copy, the resourceVersion of the
// downstream object it was last written from (kcp's name).
const ResourceVersionAnnotation = "workload.kcp.io/rv"

// The resources kcp v0.11 upsyncs.
var (
	PodsGVR              = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	PersistentVolumesGVR = schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumes"}
	EndpointsGVR         = schema.GroupVersionResource{Version: "v1", Resource: "endpoints"}
	ServicesGVR          = schema.GroupVersionResource{Version: "v1", Resource: "services"}
)

// Upsyncable is kcp's list of upsyncable resources.
func Upsyncable() []schema.GroupVersionResource {
	return []schema.GroupVersionResource{PersistentVolumesGVR, PodsGVR, EndpointsGVR}
}

// Informers starts downstream informers and reads their caches; the engine's
// *informers.Manager implements it.
type Informers interface {
	Start(ctx context.Context, id informers.ID) (cache.SharedIndexInformer, error)
	Get(id informers.ID, cluster, namespace, name string) (metav1.Object, bool, error)
	DownstreamNamespace(cluster, namespace string) (string, bool, error)
}

// Config wires a Controller.
type Config struct {
	// Target is the SyncTarget this syncer serves.
	Target identity.Target
	// FromCluster is the logical cluster of upstream objects without kcp.io/cluster
	// (--from-cluster); empty means Target.Cluster.
	FromCluster string
	// KCP says the control plane is kcp: any logical cluster a locator names may be
	// written (the upsyncer virtual workspace decides). On a plain hub only FromCluster
	// exists.
	KCP bool
	// Resources are the upsynced resources; nil means Upsyncable().
	Resources []schema.GroupVersionResource
	// Informers gives the downstream caches (the engine's manager).
	Informers Informers
	// Upstream lists, watches and writes upstream copies: under kcp the upsyncer virtual
	// workspace (clients.ForAllClusters; each write goes to its key's cluster), on a plain
	// hub the hub.
	Upstream dynamic.Interface
	// Downstream reads the physical cluster (only to probe access before starting an
	// informer) and labels Endpoints.
	Downstream dynamic.Interface
	// DisableEndpointsLabeller turns the upsync-derived-resources labeller off.
	DisableEndpointsLabeller bool
	// Workers reconcile keys concurrently; 0 means 2.
	Workers int
	// Queue configures the work queues (retries, metrics, observer).
	Queue queue.Options
	// ProbeInterval is how often a resource not served upstream, or not readable
	// downstream, is tried again; 0 means one minute.
	ProbeInterval time.Duration
}

// Controller upsyncs objects.
type Controller struct {
	cfg      Config
	runner   *queue.Runner
	labeller *endpointsLabeller

	mu       sync.RWMutex
	upstream map[schema.GroupVersionResource]cache.SharedIndexInformer
	ready    map[schema.GroupVersionResource]bool
	synced   atomic.Bool
}

// New returns a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.Informers == nil || cfg.Upstream == nil || cfg.Downstream == nil {
		return nil, errors.New("upsync controller: informers, upstream and downstream clients are required")
	}
	if cfg.Target.Key == "" || cfg.Target.Name == "" {
		return nil, errors.New("upsync controller: sync target is required (identity.NewTarget)")
	}
	if cfg.FromCluster == "" {
		cfg.FromCluster = cfg.Target.Cluster
	}
	if cfg.Resources == nil {
		cfg.Resources = Upsyncable()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = time.Minute
	}
	c := &Controller{cfg: cfg, upstream: map[schema.GroupVersionResource]cache.SharedIndexInformer{}, ready: map[schema.GroupVersionResource]bool{}}
	c.runner = queue.NewRunner(c, cfg.Queue)
	if !cfg.DisableEndpointsLabeller {
		c.labeller = newEndpointsLabeller(cfg)
	}
	return c, nil
}

// Name implements queue.Controller.
func (c *Controller) Name() string { return ControllerName }

// Workers implements queue.Controller.
func (c *Controller) Workers() int { return c.cfg.Workers }

// Runner exposes the work queue.
func (c *Controller) Runner() *queue.Runner { return c.runner }

// Synced reports whether the controller runs (the downstream namespaces are cached);
// resources not served yet do not hold it back.
func (c *Controller) Synced() bool { return c.synced.Load() }

// Ready returns the resources whose informers have synced on both sides.
func (c *Controller) Ready() []schema.GroupVersionResource {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []schema.GroupVersionResource
	for _, gvr := range c.cfg.Resources {
		if c.ready[gvr] {
			out = append(out, gvr)
		}
	}
	return out
}

// upstreamSelector selects upstream copies: this target's state label set to Upsync.
func (c *Controller) upstreamSelector() string {
	return labels.SelectorFromSet(labels.Set{c.cfg.Target.StateLabel(): string(identity.ResourceStateUpsync)}).String()
}

var namespacesID = informers.ID{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true}

// Run starts, for each resource, the informers on both sides as soon as the upstream
// serves it and the physical cluster lets the syncer list it, and reconciles until ctx
// ends. A resource that is not served (kcp's upsyncer serves only the SyncTarget's
// resources) or not readable is tried again every ProbeInterval; the others go on.
func (c *Controller) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("controller", ControllerName)
	ctx = klog.NewContext(ctx, logger)
	nsInf, err := c.cfg.Informers.Start(ctx, namespacesID)
	if err != nil {
		return fmt.Errorf("upsync controller: %w", err)
	}
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced) {
		return nil
	}
	c.synced.Store(true)
	var wg sync.WaitGroup
	for _, gvr := range c.cfg.Resources {
		wg.Go(func() { c.startResource(ctx, gvr) })
	}
	if c.labeller != nil {
		wg.Go(func() { c.labeller.run(ctx) })
	}
	err = c.runner.Run(ctx)
	wg.Wait()
	return err
}

// startResource waits until gvr can be listed on both sides, starts its informers, waits
// for their caches and only then adds the handlers: the initial list of upstream copies is
// compared with a complete downstream cache (garbage collection at start-up).
func (c *Controller) startResource(ctx context.Context, gvr schema.GroupVersionResource) {
	logger := klog.FromContext(ctx).WithValues("resource", gvr.String())
	if !c.waitUntilListable(ctx, gvr, klog.FromContext(ctx)) {
		return
	}
	down, err := c.cfg.Informers.Start(ctx, informers.ID{Side: informers.Downstream, GVR: gvr})
	if err != nil {
		logger.Error(err, "upsync: cannot start the downstream informer; this resource is not upsynced")
		return
	}
	up := informers.NewClusterInformer(
		informers.WithoutWatchList(informers.DynamicListWatch(c.cfg.Upstream, gvr, c.upstreamSelector())),
		&unstructured.Unstructured{},
		informers.ClusterInformerOptions{FromCluster: c.cfg.FromCluster, Description: "upsynced " + gvr.String()},
	)
	go up.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), down.HasSynced, up.HasSynced) {
		return
	}
	c.mu.Lock()
	c.upstream[gvr] = up
	c.ready[gvr] = true
	c.mu.Unlock()
	// Handlers stay until the informers stop: the downstream informer may be the engine's
	// and outlive this controller, so remove ours on the way out.
	dreg, err := down.AddEventHandler(c.downstreamHandler(gvr))
	if err != nil {
		logger.Error(err, "upsync: watch downstream")
		return
	}
	defer func() { _ = down.RemoveEventHandler(dreg) }()
	if _, err := up.AddEventHandler(c.runner.EventHandler(queue.ObjectKeys(queue.Up, gvr, c.cfg.FromCluster))); err != nil {
		logger.Error(err, "upsync: watch upstream")
		return
	}
	logger.Info("upsync: watching", "upstreamSelector", c.upstreamSelector())
	<-ctx.Done()
}

// waitUntilListable probes gvr upstream (through the upsyncer) and downstream with a
// one-item list until both answer, every ProbeInterval; false when ctx ends.
func (c *Controller) waitUntilListable(ctx context.Context, gvr schema.GroupVersionResource, logger klog.Logger) bool {
	return c.waitFor(ctx, logger.WithValues("resource", gvr.String()), func() error {
		opts := metav1.ListOptions{Limit: 1, LabelSelector: c.upstreamSelector()}
		if _, err := c.cfg.Upstream.Resource(gvr).List(clients.WithCluster(ctx, ""), opts); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
		return c.probeDownstream(ctx, gvr)
	})
}

// waitUntilDownstreamListable is waitUntilListable for the physical cluster alone.
func (c *Controller) waitUntilDownstreamListable(ctx context.Context, gvr schema.GroupVersionResource, logger klog.Logger) bool {
	return c.waitFor(ctx, logger.WithValues("resource", gvr.String()), func() error { return c.probeDownstream(ctx, gvr) })
}

func (c *Controller) probeDownstream(ctx context.Context, gvr schema.GroupVersionResource) error {
	opts := metav1.ListOptions{Limit: 1, LabelSelector: c.cfg.Target.DownstreamSelector().String()}
	if _, err := c.cfg.Downstream.Resource(gvr).List(ctx, opts); err != nil {
		return fmt.Errorf("downstream: %w", err)
	}
	return nil
}

// waitFor calls probe until it succeeds, every ProbeInterval, logging the first failure.
func (c *Controller) waitFor(ctx context.Context, logger klog.Logger, probe func() error) bool {
	logged := false
	interval := c.cfg.ProbeInterval
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := probe()
		if err == nil {
			return true
		}
		if !logged {
			logger.Info("upsync: resource not available yet, trying again periodically", "reason", err.Error(), "every", interval)
			logged = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// downstreamHandler enqueues the upstream key of downstream objects that are, or were,
// labelled Upsync for this target (a removed label deletes the upstream copy).
func (c *Controller) downstreamHandler(gvr schema.GroupVersionResource) cache.ResourceEventHandler {
	enqueue := func(obj any, report bool) {
		m, ok := asObject(obj)
		if !ok || !c.upsynced(m) {
			return
		}
		key, err := c.downstreamKey(gvr, m)
		if err != nil {
			if report {
				klog.Background().WithValues("controller", ControllerName).Error(err, "upsync: skipping downstream object",
					"resource", gvr.String(), "downstream", cacheKey(m.GetNamespace(), m.GetName()))
			}
			return
		}
		c.runner.Enqueue(key)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { enqueue(obj, true) },
		UpdateFunc: func(oldObj, newObj any) {
			enqueue(oldObj, false)
			enqueue(newObj, true)
		},
		DeleteFunc: func(obj any) { enqueue(obj, false) },
	}
}

// upsynced reports whether a downstream object is labelled Upsync for this target.
func (c *Controller) upsynced(m metav1.Object) bool {
	st, ok := c.cfg.Target.State(m)
	return ok && st == identity.ResourceStateUpsync && m.GetLabels()[identity.DownstreamClusterLabel] == c.cfg.Target.Key
}

// downstreamKey names the upstream copy of a downstream object: the logical cluster and
// namespace from the downstream namespace's locator (a cluster-scoped object's own), which
// must name this SyncTarget.
func (c *Controller) downstreamKey(gvr schema.GroupVersionResource, m metav1.Object) (queue.Key, error) {
	holder := m
	if ns := m.GetNamespace(); ns != "" {
		obj, ok, err := c.cfg.Informers.Get(namespacesID, "", "", ns)
		if err != nil {
			return queue.Key{}, err
		}
		if !ok {
			return queue.Key{}, fmt.Errorf("downstream namespace %s is not one of this sync target's", ns)
		}
		holder = obj
	}
	loc, err := c.locator(holder, m.GetNamespace() == "")
	if err != nil {
		return queue.Key{}, err
	}
	key := queue.Key{Direction: queue.Up, GVR: gvr, Cluster: loc.Cluster, Name: m.GetName()}
	if m.GetNamespace() != "" {
		key.Namespace = loc.Namespace
	}
	return key, nil
}

// locator reads and checks the locator of a downstream namespace or cluster-scoped object.
func (c *Controller) locator(holder metav1.Object, clusterScoped bool) (identity.NamespaceLocator, error) {
	what := "downstream namespace " + holder.GetName()
	if clusterScoped {
		what = "cluster-scoped downstream object " + holder.GetName()
	}
	loc, ok, err := identity.LocatorOf(holder)
	switch {
	case err != nil:
		return loc, fmt.Errorf("%s: %w", what, err)
	case !ok:
		return loc, fmt.Errorf("%s has no %s annotation: its workspace is unknown", what, identity.NamespaceLocatorAnnotation)
	}
	t := c.cfg.Target
	if loc.SyncTarget.Name != t.Name || loc.SyncTarget.UID != t.UID || (loc.SyncTarget.Cluster != "" && loc.SyncTarget.Cluster != t.Cluster) {
		return loc, fmt.Errorf("%s: its locator names sync target %s|%s (%s), not this one", what, loc.SyncTarget.Cluster, loc.SyncTarget.Name, loc.SyncTarget.UID)
	}
	if loc.Cluster == "" {
		loc.Cluster = c.cfg.FromCluster
	}
	if err := c.checkCluster(loc.Cluster); err != nil {
		return loc, fmt.Errorf("%s: %w", what, err)
	}
	return loc, nil
}

// checkCluster refuses logical clusters the upstream cannot have.
func (c *Controller) checkCluster(cluster string) error {
	if !clients.ValidCluster(cluster) {
		return fmt.Errorf("locator names %q, not a logical cluster", cluster)
	}
	if !c.cfg.KCP && cluster != c.cfg.FromCluster {
		return fmt.Errorf("locator names logical cluster %q, but the hub is %q (--from-cluster)", cluster, c.cfg.FromCluster)
	}
	return nil
}

func asObject(obj any) (metav1.Object, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, ok := obj.(metav1.Object)
	return m, ok
}

func cacheKey(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// isPermanent reports upstream answers that retrying soon will not change.
func isPermanent(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsAlreadyExists(err) || apierrors.IsMethodNotSupported(err)
}
