package downstream

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
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
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
)

// DefaultWorkers is the number of spec workers when Options.Workers is zero.
const DefaultWorkers = 4

// EventComponent is the source component of the Events the syncer records upstream.
const EventComponent = "tmc-syncer"

// Clients are the API clients the syncer uses.
type Clients struct {
	// Upstream reads and patches upstream objects (the control plane).
	Upstream dynamic.Interface
	// Downstream reads and writes the physical cluster.
	Downstream dynamic.Interface
	// UpstreamEvents records Events on upstream objects; nil records none.
	UpstreamEvents kubernetes.Interface
}

// Options configure a Syncer. The zero value is usable.
type Options struct {
	// FieldManager is the server-side apply field manager (applier.DefaultFieldManager).
	FieldManager string
	// ConflictPolicy is the default conflict policy (--conflict-policy; Abort).
	ConflictPolicy conflict.Policy
	// NamespaceCleanDelay is --downstream-namespace-clean-delay (30 s).
	NamespaceCleanDelay time.Duration
	// Workers is the number of spec workers (DefaultWorkers).
	Workers int
	// FromCluster is the logical cluster of upstream objects without kcp.io/cluster
	// (--from-cluster); empty means the sync target's own logical cluster.
	FromCluster string
	// DeletionPropagation is the default propagation of downstream deletes (Background).
	DeletionPropagation metav1.DeletionPropagation
	// PermanentRetryDelay is when permanently failing or conflicting objects are retried
	// (queue.PermanentRetryDelay).
	PermanentRetryDelay time.Duration
	// ResyncPeriod of the informers; zero disables resyncs.
	ResyncPeriod time.Duration
	// Registerer receives the tmc_syncer_downstream_* collectors; nil registers none.
	Registerer prometheus.Registerer
	// Pipeline adds transformation options (stages) to the default pipeline.
	Pipeline []transformation.Option
	// Queue configures the engine runners (retries, work-queue metrics, observer).
	Queue queue.Options
}

// Syncer syncs the resources of one sync target down to a physical cluster.
type Syncer struct {
	clients     Clients
	target      identity.Target
	resources   []schema.GroupVersionResource
	informers   *ownInformers
	spec        *queue.Runner
	namespaces  *queue.Runner
	applier     *applier.Applier
	metrics     *metrics.Metrics
	broadcaster record.EventBroadcaster
	cluster     func(*unstructured.Unstructured) string
	synced      atomic.Bool
}

// New wires a Syncer for target over resources (GVRs served identically upstream and
// downstream), with its own label-filtered informers. Nothing runs until Run. To run on an
// engine.Engine's informers and resource set instead, use Register.
func New(clients Clients, target identity.Target, resources []schema.GroupVersionResource, opts Options) (*Syncer, error) {
	if clients.Upstream == nil || clients.Downstream == nil {
		return nil, errors.New("downstream syncer: upstream and downstream clients are required")
	}
	if len(resources) == 0 {
		return nil, errors.New("downstream syncer: no resources to sync")
	}
	w, err := newWiring(clients, target, opts)
	if err != nil {
		return nil, err
	}
	inf, err := newInformers(clients.Upstream, clients.Downstream, target, w.opts.FromCluster, resources, opts.ResyncPeriod)
	if err != nil {
		return nil, fmt.Errorf("downstream syncer: informers: %w", err)
	}
	s := &Syncer{
		clients:     clients,
		target:      target,
		resources:   resources,
		informers:   inf,
		applier:     w.applier,
		metrics:     w.metrics,
		broadcaster: w.broadcaster,
		cluster:     w.tctx.UpstreamCluster,
	}
	var specResources []spec.Resource
	var upIdx, downIdx []namespaces.Indexer
	for _, gvr := range resources {
		specResources = append(specResources, spec.Resource{GVR: gvr, Upstream: inf.upstream[gvr].GetIndexer(), Downstream: inf.downstream[gvr].GetIndexer()})
		upIdx = append(upIdx, inf.upstream[gvr].GetIndexer())
		downIdx = append(downIdx, inf.downstream[gvr].GetIndexer())
	}
	nsStore := inf.namespaces.GetIndexer()
	w.useNamespaces(nsStore)
	specCtl := spec.NewController(w.specConfig(specResources, nil))
	nsCtl := namespaces.NewController(w.namespacesConfig(nsStore,
		&namespaces.Config{Upstream: upIdx, Downstream: downIdx, Resources: resources}, nil))
	s.spec = queue.NewRunner(specCtl, opts.Queue)
	s.namespaces = queue.NewRunner(nsCtl, opts.Queue)

	for _, gvr := range resources {
		handlers := []struct {
			inf  cache.SharedIndexInformer
			r    *queue.Runner
			keys queue.KeysFunc
		}{
			{inf.upstream[gvr], s.spec, specCtl.UpstreamKeys(gvr)},
			{inf.upstream[gvr], s.namespaces, w.namespaceOfUpstream},
			{inf.downstream[gvr], s.spec, spec.DownstreamKeys(gvr)},
			{inf.downstream[gvr], s.namespaces, namespaceOfDownstream},
		}
		for _, h := range handlers {
			if _, err := h.inf.AddEventHandler(h.r.EventHandler(h.keys)); err != nil {
				return nil, fmt.Errorf("downstream syncer: %w", err)
			}
		}
	}
	if _, err := inf.namespaces.AddEventHandler(s.namespaces.EventHandler(func(obj metav1.Object) []queue.Key {
		return []queue.Key{namespaces.Key(obj.GetName())}
	})); err != nil {
		return nil, fmt.Errorf("downstream syncer: %w", err)
	}
	return s, nil
}

// Run starts the informers, waits for their caches, deletes orphans (downstream objects
// whose upstream object was deleted while the syncer was down), then runs the spec and
// namespace controllers until ctx ends. It returns once every worker has stopped.
func (s *Syncer) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("syncTarget", s.target.String(), "syncTargetKey", s.target.Key)
	ctx = klog.NewContext(ctx, logger)
	if s.broadcaster != nil {
		s.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: s.clients.UpstreamEvents.CoreV1().Events("")})
		defer s.broadcaster.Shutdown()
	}
	ictx, stopInformers := context.WithCancel(ctx)
	s.informers.start(ictx)
	defer func() {
		stopInformers()
		s.informers.shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), s.informers.hasSynced()...) {
		return fmt.Errorf("downstream syncer: caches did not sync: %w", context.Cause(ctx))
	}
	s.synced.Store(true)
	logger.V(2).Info("caches synced", "resources", len(s.resources))

	var orphans []cleanup.Resource
	for _, gvr := range s.resources {
		orphans = append(orphans, cleanup.Resource{GVR: gvr, Downstream: s.informers.downstream[gvr].GetIndexer(), Upstream: s.informers.upstream[gvr].GetIndexer()})
	}
	if n, err := cleanup.Orphans(ctx, s.target, orphans, s.clients.Upstream, s.applier, s.metrics); err != nil {
		// Not fatal: the spec controller deletes what it is told about; the rest waits for the next start.
		logger.Error(err, "start-up cleanup failed", "deleted", n)
	} else if n > 0 {
		logger.Info("start-up cleanup deleted orphans", "deleted", n)
	}
	// Objects unassigned while the syncer was down may still hold our finalizer; the spec
	// controller releases it once the runner starts.
	if n, err := cleanup.Stranded(ctx, s.target, s.resources, s.clients.Upstream, s.cluster, s.spec.Enqueue); err != nil {
		logger.Error(err, "start-up sweep for stranded finalizers failed", "enqueued", n)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.spec.Run(gctx) })
	g.Go(func() error { return s.namespaces.Run(gctx) })
	return g.Wait()
}

// HasSynced reports whether Run has synced its caches.
func (s *Syncer) HasSynced() bool { return s.synced.Load() }

// Stats returns the spec controller's per-resource counters.
func (s *Syncer) Stats() []queue.GVRStats { return s.spec.Stats() }
