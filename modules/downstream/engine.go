package downstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/cleanup"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/downstream/metrics"
	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// Registration is downstream sync registered on an engine.
type Registration struct {
	// Spec, Namespaces and Cleanup are the runners the engine runs.
	Spec, Namespaces, Cleanup *queue.Runner
	broadcaster               record.EventBroadcaster
}

// Close stops recording Events; call it once the engine has stopped.
func (r *Registration) Close() {
	if r.broadcaster != nil {
		r.broadcaster.Shutdown()
	}
}

// Register wires downstream sync onto e, reading objects through the engine's informers
// for whatever resource set the engine resolves: the spec controller, the namespace
// controller and a one-shot start-up cleanup controller. Call it before e.Run; queues and
// informers are the engine's (engine.Config sets their retries and resync).
func Register(e *engine.Engine, clients Clients, opts Options) (*Registration, error) {
	if clients.Upstream == nil || clients.Downstream == nil {
		return nil, errors.New("downstream: upstream and downstream clients are required")
	}
	target := e.Target()
	m := e.Informers()
	if opts.PodMutator != nil {
		fromCluster := opts.FromCluster
		if fromCluster == "" {
			fromCluster = target.Cluster
		}
		mutator, err := podMutatorOption(opts.PodMutator, m, fromCluster)
		if err != nil {
			return nil, err
		}
		opts.Pipeline = append(slices.Clip(opts.Pipeline), mutator)
	}
	w, err := newWiring(clients, target, opts)
	if err != nil {
		return nil, err
	}
	reg := &Registration{broadcaster: w.broadcaster}
	if reg.broadcaster != nil {
		reg.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clients.UpstreamEvents.CoreV1().Events("")})
	}
	full := func(side informers.Side, gvr schema.GroupVersionResource) (cache.SharedIndexInformer, bool) {
		return m.Informer(informers.ID{Side: side, GVR: gvr})
	}
	lookup := func(gvr schema.GroupVersionResource) (spec.Resource, bool) {
		up, ok := full(informers.Upstream, gvr)
		if !ok {
			return spec.Resource{}, false
		}
		down, ok := full(informers.Downstream, gvr)
		if !ok {
			return spec.Resource{}, false
		}
		return spec.Resource{GVR: gvr, Upstream: up.GetIndexer(), Downstream: down.GetIndexer()}, true
	}
	synced := func() []schema.GroupVersionResource {
		var out []schema.GroupVersionResource
		for _, gvr := range e.Resources().Accepted().GVRs() {
			if _, ok := lookup(gvr); ok {
				out = append(out, gvr)
			}
		}
		return out
	}
	nsStore := lazyStore(func() (cache.Indexer, bool) {
		for _, id := range []informers.ID{
			{Side: informers.Downstream, GVR: informers.NamespacesGVR, MetadataOnly: true},
			{Side: informers.Downstream, GVR: informers.NamespacesGVR},
		} {
			if inf, ok := m.Informer(id); ok {
				return inf.GetIndexer(), true
			}
		}
		return nil, false
	})
	w.useNamespaces(nsStore)
	if opts.NamespaceGrant != nil {
		if err := w.ensurer.WithGrant(clients.Downstream, *opts.NamespaceGrant); err != nil {
			return nil, fmt.Errorf("downstream: %w", err)
		}
	}
	if opts.PodMutator != nil && opts.PodMutator.PrepareNamespace != nil {
		w.ensurer.OnFirstUse(opts.PodMutator.PrepareNamespace)
	}

	specCtl := spec.NewController(w.specConfig(nil, lookup))
	nsCtl := namespaces.NewController(w.namespacesConfig(nsStore, nil, func() ([]schema.GroupVersionResource, []namespaces.Indexer, []namespaces.Indexer) {
		gvrs := synced()
		var up, down []namespaces.Indexer
		for _, gvr := range gvrs {
			r, _ := lookup(gvr)
			up = append(up, byNamespace{r.Upstream.(cache.Indexer)})
			down = append(down, byNamespace{r.Downstream.(cache.Indexer)})
		}
		return gvrs, up, down
	}))

	objectInformer := func(id informers.ID) bool { return !id.MetadataOnly && id.GVR != informers.NamespacesGVR }
	// The spec syncer reads no status on either side (ToDownstream drops it): a status
	// write, upstream by the status syncer or downstream by a controller, is no work for it.
	statusOnly := func(_ informers.ID, oldObj, newObj any) bool { return informers.OnlyStatusChanged(oldObj, newObj) }
	// The namespaces controller deletes namespaces nothing uses any more, reading which
	// objects the (label-selected) caches hold per namespace. Only an object's delete can
	// free a namespace: an update never changes the set, and an add only uses a namespace
	// more (a namespace waiting out its grace period checks the caches again anyway). Each
	// add would cost a reconcile scanning the namespace's objects, per object created.
	objectUpdate := func(id informers.ID, _, _ any) bool { return objectInformer(id) }
	if reg.Spec, err = e.Register(specCtl,
		engine.Watch{Side: informers.Upstream, Direction: queue.Down, SkipUpdate: statusOnly},
		engine.Watch{Side: informers.Downstream, Keys: func(id informers.ID) queue.KeysFunc {
			if !objectInformer(id) {
				return nil
			}
			return spec.DownstreamKeys(id.GVR)
		}, SkipUpdate: statusOnly},
	); err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	if reg.Namespaces, err = e.Register(nsCtl,
		engine.Watch{Side: informers.Upstream, Keys: func(id informers.ID) queue.KeysFunc {
			if !objectInformer(id) {
				return nil
			}
			return w.namespaceOfUpstream
		}, SkipUpdate: objectUpdate, SkipAdds: objectInformer},
		engine.Watch{Side: informers.Downstream, Keys: func(id informers.ID) queue.KeysFunc {
			if id.GVR == informers.NamespacesGVR {
				return func(obj metav1.Object) []queue.Key { return []queue.Key{namespaces.Key(obj.GetName())} }
			}
			if !objectInformer(id) {
				return nil
			}
			return namespaceOfDownstream
		}, SkipUpdate: objectUpdate, SkipAdds: objectInformer},
	); err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	// The start-up cleanup reads a resource's caches only once both have synced: an empty
	// cache of a resource the upstream does not serve yet must never read as "gone".
	cacheSynced := func(gvr schema.GroupVersionResource) bool {
		up, okUp := full(informers.Upstream, gvr)
		down, okDown := full(informers.Downstream, gvr)
		return okUp && okDown && up.HasSynced() && down.HasSynced()
	}
	cleaner := &cleanupController{target: target, upstream: clients.Upstream, applier: bindingDeleter{w.applier, w.ensurer}, metrics: w.metrics,
		cluster: w.tctx.UpstreamCluster, enqueue: reg.Spec.Enqueue, accepted: synced, cacheSynced: cacheSynced,
		swept: map[schema.GroupVersionResource]bool{},
		resource: func(gvr schema.GroupVersionResource) cleanup.Resource {
			r, _ := lookup(gvr)
			return cleanup.Resource{GVR: gvr, Downstream: r.Downstream.(cache.Indexer), Upstream: r.Upstream}
		}}
	if reg.Cleanup, err = e.Register(cleaner); err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	reg.Cleanup.Enqueue(cleanupKey)
	return reg, nil
}

// bindingDeleter makes sure the namespace grant is bound in a managed namespace before
// the start-up cleanup deletes there (a namespace an older syncer made has none yet).
type bindingDeleter struct {
	cleanup.Deleter
	ensurer *namespaces.Ensurer
}

func (d bindingDeleter) Delete(ctx context.Context, gvr schema.GroupVersionResource, ns, name string, uid types.UID, propagation metav1.DeletionPropagation) error {
	if err := d.ensurer.BindManaged(ctx, ns); err != nil {
		return err
	}
	return d.Deleter.Delete(ctx, gvr, ns, name, uid, propagation)
}

var cleanupKey = queue.Key{Direction: queue.Down, Name: "start-up-cleanup"}

// cleanupController runs the start-up cleanup once the engine has started its controllers:
// orphans downstream, then stranded upstream finalizers, for each resource whose caches
// have synced. A resource whose caches have not (its upstream does not serve it yet) is
// swept once they have: the key comes back every cleanupRecheck until all are done.
type cleanupController struct {
	target      identity.Target
	upstream    dynamic.Interface
	applier     cleanup.Deleter
	metrics     *metrics.Metrics
	accepted    func() []schema.GroupVersionResource
	cacheSynced func(schema.GroupVersionResource) bool
	resource    func(schema.GroupVersionResource) cleanup.Resource
	cluster     func(*unstructured.Unstructured) string
	enqueue     func(queue.Key)
	swept       map[schema.GroupVersionResource]bool // one worker: no lock
}

// cleanupRecheck is how often the start-up cleanup looks for resources whose caches have
// synced since.
const cleanupRecheck = time.Minute

func (c *cleanupController) Name() string { return "downstream-cleanup" }
func (c *cleanupController) Workers() int { return 1 }
func (c *cleanupController) Reconcile(ctx context.Context, _ queue.Key) error {
	var (
		gvrs      []schema.GroupVersionResource
		resources []cleanup.Resource
		waiting   []string
	)
	for _, gvr := range c.accepted() {
		switch {
		case c.swept[gvr]:
		case c.cacheSynced(gvr):
			gvrs = append(gvrs, gvr)
			resources = append(resources, c.resource(gvr))
		default:
			waiting = append(waiting, gvr.String())
		}
	}
	if len(gvrs) > 0 {
		start := time.Now()
		orphans, err := cleanup.Orphans(ctx, c.target, resources, c.upstream, c.applier, c.metrics)
		if err != nil {
			return err
		}
		stranded, err := cleanup.Stranded(ctx, c.target, gvrs, c.upstream, c.cluster, c.enqueue)
		if err != nil {
			return err
		}
		for _, gvr := range gvrs {
			c.swept[gvr] = true
		}
		klog.FromContext(ctx).V(1).Info("start-up cleanup done", "resources", len(gvrs), "orphansDeleted", orphans, "strandedFinalizers", stranded, "elapsed", time.Since(start))
	}
	if len(waiting) > 0 {
		klog.FromContext(ctx).V(2).Info("start-up cleanup waits for caches to sync", "resources", waiting, "recheckAfter", cleanupRecheck)
		return queue.RequeueAfter(cleanupRecheck, nil)
	}
	return nil
}

// lazyStore resolves a cache.Indexer on each read, for informers the engine starts in Run.
type lazyStore func() (cache.Indexer, bool)

func (l lazyStore) GetByKey(key string) (any, bool, error) {
	s, ok := l()
	if !ok {
		return nil, false, nil
	}
	return s.GetByKey(key)
}

// ByIndex answers the engine's indexes (the downstream namespaces' ByLocator).
func (l lazyStore) ByIndex(indexName, value string) ([]any, error) {
	s, ok := l()
	if !ok {
		return nil, nil
	}
	return s.ByIndex(indexName, value)
}

// byNamespace answers cache.NamespaceIndex queries on indexers that lack that index by
// scanning them (the engine's informers index by upstream key and locator only).
type byNamespace struct{ cache.Indexer }

func (b byNamespace) ByIndex(indexName, value string) ([]any, error) {
	if out, err := b.Indexer.ByIndex(indexName, value); err == nil || indexName != cache.NamespaceIndex {
		return out, err
	}
	var out []any
	for _, it := range b.List() {
		if m, err := meta.Accessor(it); err == nil && m.GetNamespace() == value {
			out = append(out, it)
		}
	}
	return out, nil
}

// wiring holds what New and Register share.
type wiring struct {
	clients     Clients
	target      identity.Target
	opts        Options
	policy      conflict.Policy
	tctx        transformation.Context
	pipeline    *transformation.Pipeline
	applier     *applier.Applier
	metrics     *metrics.Metrics
	broadcaster record.EventBroadcaster
	recorder    spec.EventRecorder
	ensurer     *namespaces.Ensurer
}

// useNamespaces wires the downstream namespace cache: the Ensurer creates namespaces and,
// as the transformation's namespace.Lookup, places objects in an existing namespace whose
// name an older kcp derived from a legacy locator.
func (w *wiring) useNamespaces(nsStore namespaces.Store) {
	w.ensurer = namespaces.NewEnsurer(w.clients.Downstream, nsStore, w.target.Key)
	w.tctx.Namespaces = w.ensurer
}

func newWiring(clients Clients, target identity.Target, opts Options) (*wiring, error) {
	if target.Key == "" || target.Name == "" {
		return nil, errors.New("downstream: target has no name or key (use identity.NewTarget)")
	}
	policy, err := conflict.ParsePolicy(string(opts.ConflictPolicy))
	if err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	switch opts.DeletionPropagation {
	case "", metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
	default:
		return nil, fmt.Errorf("downstream: unknown deletion propagation %q", opts.DeletionPropagation)
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.FromCluster == "" {
		opts.FromCluster = target.Cluster
	}
	m, err := metrics.New(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("downstream: %w", err)
	}
	w := &wiring{
		clients: clients, target: target, opts: opts, policy: policy, metrics: m,
		applier: applier.New(clients.Downstream, opts.FieldManager),
		tctx: transformation.Context{
			SyncTargetKey: target.Key, SyncTargetName: target.Name, SyncTargetUID: string(target.UID),
			SyncTargetCluster: target.Cluster, LogicalCluster: opts.FromCluster,
		},
		pipeline: transformation.NewPipeline(append([]transformation.Option{transformation.WithStage(spec.StripControlAnnotations())}, opts.Pipeline...)...),
	}
	if clients.UpstreamEvents != nil {
		w.broadcaster = record.NewBroadcaster()
		w.recorder = w.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent})
	}
	return w, nil
}

// specConfig configures the spec controller; call useNamespaces first.
func (w *wiring) specConfig(resources []spec.Resource, lookup func(schema.GroupVersionResource) (spec.Resource, bool)) spec.Config {
	return spec.Config{
		Target: w.target, Transform: w.tctx, Pipeline: w.pipeline, Resources: resources, Lookup: lookup,
		UpstreamClient: w.clients.Upstream, DownstreamClient: w.clients.Downstream, Writer: w.applier,
		Namespaces: w.ensurer,
		Recorder:   w.recorder, Policy: w.policy, DeletionPropagation: w.opts.DeletionPropagation,
		PermanentRetryDelay: w.opts.PermanentRetryDelay, Workers: w.opts.Workers, Metrics: w.metrics,
		NotReadyRetryDelay: w.opts.PodInputsRetryDelay,
	}
}

func (w *wiring) namespacesConfig(nsStore namespaces.Store, static *namespaces.Config,
	lookup func() ([]schema.GroupVersionResource, []namespaces.Indexer, []namespaces.Indexer)) namespaces.Config {
	cfg := namespaces.Config{}
	if static != nil {
		cfg = *static
	}
	cfg.Target, cfg.FallbackCluster, cfg.Namespaces, cfg.Lookup = w.target, w.opts.FromCluster, nsStore, lookup
	cfg.UpstreamClient, cfg.DownstreamClient = w.clients.Upstream, w.clients.Downstream
	cfg.Delay, cfg.Metrics = w.opts.NamespaceCleanDelay, w.metrics
	return cfg
}

// namespaceOfUpstream maps an upstream object to the key of its downstream namespace.
func (w *wiring) namespaceOfUpstream(obj metav1.Object) []queue.Key {
	if obj.GetNamespace() == "" {
		return nil
	}
	l := namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: w.target.Cluster, Name: w.target.Name, UID: string(w.target.UID)},
		Cluster:    identity.LogicalCluster(obj, w.opts.FromCluster), Namespace: obj.GetNamespace(),
	}
	name, err := namespace.Resolve(l, w.tctx.Namespaces)
	if err != nil {
		return nil
	}
	return []queue.Key{namespaces.Key(name)}
}

// namespaceOfDownstream maps a downstream object to the key of its namespace.
func namespaceOfDownstream(obj metav1.Object) []queue.Key {
	if obj.GetNamespace() == "" {
		return nil
	}
	return []queue.Key{namespaces.Key(obj.GetNamespace())}
}
