// Package events forwards Kubernetes Events of synced objects from the physical cluster to
// the control plane, so that `kubectl describe` upstream shows what happened downstream.
//
// Flow (controller.go wires, process.go decides): an informer on downstream Events
// enqueues Event keys; Reconcile re-reads the Event, applies the filters (managed namespace,
// type, reason, age), resolves the synced object it is about (directly, or through
// ownerReferences: Pod → ReplicaSet → Deployment) and offers it to the outbox, which holds
// per-object and global token buckets and drops the oldest waiting Event when over its
// bounds. Senders take Events from the outbox and create or update their upstream copy,
// whose name derives from the downstream Event's UID so a restart never duplicates.
package events

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/upstream/metrics"
)

// ControllerName names the controller in logs and work-queue metrics.
const ControllerName = "upstream-events"

// The Event APIs the controller can watch downstream.
const (
	APICoreV1   = "v1"
	APIEventsV1 = "events.k8s.io/v1"
)

// DefaultMaxAge is how old an Event may be and still be forwarded.
const DefaultMaxAge = time.Hour

// Options tune the event syncer. The zero value forwards every Event type and reason.
type Options struct {
	// Limits are the token buckets and pending bounds.
	Limits Limits
	// MaxAge: Events whose last occurrence is older are not forwarded (0: DefaultMaxAge), so a
	// starting syncer does not replay history.
	MaxAge time.Duration
	// Types lists the Event types to forward (Normal, Warning); empty forwards all.
	Types []string
	// Reasons lists the reasons to forward; empty forwards all.
	Reasons []string
	// ExcludeReasons lists reasons never forwarded.
	ExcludeReasons []string
	// Workers is the number of resolvers and of senders (0: 2).
	Workers int
	// API is the downstream Event API to watch: APICoreV1 (default) or APIEventsV1. Both
	// show every Event; either shape's repeats are understood.
	API string
}

// Config wires a Controller.
type Config struct {
	// Downstream watches Events and namespaces of the physical cluster.
	Downstream kubernetes.Interface
	// Upstream writes Events to the control plane.
	Upstream kubernetes.Interface
	// Metadata reads downstream objects' metadata to walk ownerReferences.
	Metadata GetMetadata
	// Mapper maps downstream kinds to resources.
	Mapper meta.RESTMapper
	// SyncTargetKey selects the managed namespaces and synced objects.
	SyncTargetKey string
	// SyncTargetName names the reporting controller, tmc-syncer/<name>.
	SyncTargetName string
	// ReportingInstance is the upstream Events' reportingInstance (default tmc-syncer-<name>).
	ReportingInstance string
	// Options tune filtering and rate limits.
	Options Options
	// Queue configures the resolve work queue.
	Queue queue.Options
	// Metrics counts forwarded, deduplicated and dropped Events; nil counts nothing.
	Metrics *metrics.Metrics
}

// eventGetter reads a downstream Event from the cache in either shape.
type eventGetter func(namespace, name string) (record, bool, error)

// namespaceChecker says whether a downstream namespace is managed by this target.
type namespaceChecker func(name string) bool

// sent remembers what was last written upstream for a downstream Event UID.
type sent struct {
	namespace, name string
	count           int32
	last            time.Time
}

// Controller is the event syncer.
type Controller struct {
	cfg      Config
	opts     Options
	synced   atomic.Bool
	runner   *queue.Runner
	resolver *Resolver
	outbox   *outbox
	now      func() time.Time
	gvr      schema.GroupVersionResource

	// set by Run (or tests) before workers start
	getEvent  eventGetter
	managedNS namespaceChecker

	mu      sync.Mutex
	targets map[string]Target // resolved, waiting in the outbox
	// forbidden counts the 403 answers to each Event's upstream write (retryForbidden).
	forbidden map[string]int
	sent      *lru.Cache // types.UID → sent
}

// New returns a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.Downstream == nil || cfg.Upstream == nil || cfg.Metadata == nil || cfg.Mapper == nil {
		return nil, fmt.Errorf("event controller: downstream and upstream clients, metadata getter and REST mapper are required")
	}
	if cfg.SyncTargetKey == "" || cfg.SyncTargetName == "" {
		return nil, fmt.Errorf("event controller: sync target key and name are required")
	}
	opts := cfg.Options
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	switch opts.API {
	case "":
		opts.API = APICoreV1
	case APICoreV1, APIEventsV1:
	default:
		return nil, fmt.Errorf("event controller: unknown Event API %q (want %s or %s)", opts.API, APICoreV1, APIEventsV1)
	}
	if cfg.ReportingInstance == "" {
		cfg.ReportingInstance = "tmc-syncer-" + cfg.SyncTargetName
	}
	c := &Controller{
		cfg:       cfg,
		opts:      opts,
		resolver:  NewResolver(cfg.Mapper, cfg.Metadata, cfg.SyncTargetKey, 10000),
		now:       time.Now,
		gvr:       schema.GroupVersionResource{Version: "v1", Resource: "events"},
		targets:   map[string]Target{},
		forbidden: map[string]int{},
		sent:      lru.New(20000),
	}
	if opts.API == APIEventsV1 {
		c.gvr.Group = "events.k8s.io"
	}
	c.outbox = newOutbox(opts.Limits, c.dropped)
	c.runner = queue.NewRunner(c, cfg.Queue)
	return c, nil
}

// Name implements queue.Controller.
func (c *Controller) Name() string { return ControllerName }

// Workers implements queue.Controller.
func (c *Controller) Workers() int { return c.opts.Workers }

// Synced reports whether the caches have synced and workers run, for readiness checks.
func (c *Controller) Synced() bool { return c.synced.Load() }

// Runner exposes the resolve work queue.
func (c *Controller) Runner() *queue.Runner { return c.runner }

// Pending returns the number of Events waiting for a rate-limit token.
func (c *Controller) Pending() int { return c.outbox.Len() }

// Run watches downstream Events until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("controller", ControllerName)
	ctx = klog.NewContext(ctx, logger)

	nsFactory := kubeinformers.NewSharedInformerFactoryWithOptions(c.cfg.Downstream, 0,
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{identity.DownstreamClusterLabel: c.cfg.SyncTargetKey}).String()
		}))
	nsInformer := nsFactory.Core().V1().Namespaces()
	nsLister := nsInformer.Lister()
	c.managedNS = func(name string) bool {
		_, err := nsLister.Get(name)
		return err == nil
	}

	evFactory := kubeinformers.NewSharedInformerFactory(c.cfg.Downstream, 0)
	var evInformer cache.SharedIndexInformer
	if c.opts.API == APIEventsV1 {
		inf := evFactory.Events().V1().Events()
		evInformer, c.getEvent = inf.Informer(), eventsV1Getter(inf.Lister())
	} else {
		inf := evFactory.Core().V1().Events()
		evInformer, c.getEvent = inf.Informer(), coreV1Getter(inf.Lister())
	}
	nsInf := nsInformer.Informer()
	nsFactory.Start(ctx.Done())
	evFactory.Start(ctx.Done())
	defer nsFactory.Shutdown()
	defer evFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced, evInformer.HasSynced) {
		// Stopped before the caches synced: a shutdown, not a failure.
		return nil
	}
	// Added after the sync so that the namespace filter already knows every namespace.
	if _, err := evInformer.AddEventHandler(c.runner.EventHandler(c.eventKeys)); err != nil {
		return fmt.Errorf("event controller: watch Events: %w", err)
	}
	c.synced.Store(true)
	logger.V(2).Info("caches synced", "api", c.opts.API)

	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() { c.sendLoop(ctx) })
	}
	err := c.runner.Run(ctx)
	wg.Wait()
	return err
}

func (c *Controller) eventKeys(obj metav1.Object) []queue.Key {
	if c.managedNS != nil && !c.managedNS(obj.GetNamespace()) {
		return nil
	}
	return []queue.Key{c.key(obj.GetNamespace(), obj.GetName())}
}

func (c *Controller) key(namespace, name string) queue.Key {
	return queue.Key{Direction: queue.Up, GVR: c.gvr, Namespace: namespace, Name: name}
}

func (c *Controller) sendLoop(ctx context.Context) {
	for {
		k, ok := c.outbox.Next(ctx)
		if !ok {
			return
		}
		c.cfg.Metrics.SetEventsPending(c.outbox.Len())
		ns, name := splitKey(k)
		key := c.key(ns, name)
		if err := c.send(ctx, key); err != nil {
			klog.FromContext(ctx).Error(err, "forward Event failed, retrying", "key", key.String())
			c.runner.EnqueueAfter(key, time.Second)
		}
	}
}

func (c *Controller) dropped(k, reason string) {
	c.mu.Lock()
	delete(c.targets, k)
	c.mu.Unlock()
	r := metrics.DropGlobalRateLimit
	if reason == dropObject {
		r = metrics.DropObjectRateLimit
	}
	c.cfg.Metrics.EventDropped(r)
}

func splitKey(k string) (string, string) {
	for i := range len(k) {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

func (o Options) allows(r record) (bool, string) {
	if len(o.Types) > 0 && !slices.Contains(o.Types, r.Type) {
		return false, metrics.DropFilteredType
	}
	if (len(o.Reasons) > 0 && !slices.Contains(o.Reasons, r.Reason)) || slices.Contains(o.ExcludeReasons, r.Reason) {
		return false, metrics.DropFilteredReason
	}
	return true, ""
}

// upstreamNamespace is where the upstream copy lives: the object's namespace, "default"
// for cluster-scoped objects (as the Event API requires).
func upstreamNamespace(t Target) string {
	if t.Owner.Namespace == "" {
		return metav1.NamespaceDefault
	}
	return t.Owner.Namespace
}
