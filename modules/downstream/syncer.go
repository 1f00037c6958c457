package downstream

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
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
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
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
	// TenantID labels created downstream namespaces with kcp.io/tenant-id when set.
	TenantID string
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
	informers   *informers
	spec        *queue.Runner
	namespaces  *queue.Runner
	applier     *applier.Applier
	metrics     *metrics.Metrics
	broadcaster record.EventBroadcaster
	synced      atomic.Bool
}

// New wires a Syncer for target over resources (GVRs served identically upstream and
// downstream). Nothing runs until Run.
func New(clients Clients, target identity.Target, resources []schema.GroupVersionResource, opts Options) (*Syncer, error) {
	if clients.Upstream == nil || clients.Downstream == nil {
		return nil, errors.New("downstream syncer: upstream and downstream clients are required")
	}
	if target.Key == "" || target.Name == "" {
		return nil, errors.New("downstream syncer: target has no name or key (use identity.NewTarget)")
	}
	if len(resources) == 0 {
		return nil, errors.New("downstream syncer: no resources to sync")
	}
	policy, err := conflict.ParsePolicy(string(opts.ConflictPolicy))
	if err != nil {
		return nil, fmt.Errorf("downstream syncer: %w", err)
	}
	switch opts.DeletionPropagation {
	case "", metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
	default:
		return nil, fmt.Errorf("downstream syncer: unknown deletion propagation %q", opts.DeletionPropagation)
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.FromCluster == "" {
		opts.FromCluster = target.Cluster
	}
	m, err := metrics.New(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("downstream syncer: %w", err)
	}
	inf, err := newInformers(clients.Upstream, clients.Downstream, target, resources, opts.ResyncPeriod)
	if err != nil {
		return nil, fmt.Errorf("downstream syncer: informers: %w", err)
	}
	s := &Syncer{
		clients:   clients,
		target:    target,
		resources: resources,
		informers: inf,
		applier:   applier.New(clients.Downstream, opts.FieldManager),
		metrics:   m,
	}
	var recorder spec.EventRecorder
	if clients.UpstreamEvents != nil {
		s.broadcaster = record.NewBroadcaster()
		recorder = s.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent})
	}
	tctx := transformation.Context{
		SyncTargetKey: target.Key, SyncTargetName: target.Name, SyncTargetUID: string(target.UID),
		SyncTargetCluster: target.Cluster, LogicalCluster: opts.FromCluster,
	}
	pipeline := transformation.NewPipeline(append([]transformation.Option{transformation.WithStage(spec.StripControlAnnotations())}, opts.Pipeline...)...)

	var specResources []spec.Resource
	var upIdx, downIdx []namespaces.Indexer
	for _, gvr := range resources {
		specResources = append(specResources, spec.Resource{GVR: gvr, Upstream: inf.upstream[gvr].GetIndexer(), Downstream: inf.downstream[gvr].GetIndexer()})
		upIdx = append(upIdx, inf.upstream[gvr].GetIndexer())
		downIdx = append(downIdx, inf.downstream[gvr].GetIndexer())
	}
	specCtl := spec.NewController(spec.Config{
		Target: target, Transform: tctx, Pipeline: pipeline, Resources: specResources,
		UpstreamClient: clients.Upstream, DownstreamClient: clients.Downstream, Writer: s.applier,
		Namespaces: namespaces.NewEnsurer(clients.Downstream, inf.namespaces.GetIndexer(), target.Key, opts.TenantID),
		Recorder:   recorder, Policy: policy, DeletionPropagation: opts.DeletionPropagation,
		PermanentRetryDelay: opts.PermanentRetryDelay, Workers: opts.Workers, Metrics: m,
	})
	nsCtl := namespaces.NewController(namespaces.Config{
		Target: target, FallbackCluster: opts.FromCluster, Namespaces: inf.namespaces.GetIndexer(),
		Upstream: upIdx, Downstream: downIdx, Resources: resources,
		UpstreamClient: clients.Upstream, DownstreamClient: clients.Downstream,
		Delay: opts.NamespaceCleanDelay, Metrics: m,
	})
	s.spec = queue.NewRunner(specCtl, opts.Queue)
	s.namespaces = queue.NewRunner(nsCtl, opts.Queue)

	nsOfUpstream := func(obj metav1.Object) []queue.Key {
		if obj.GetNamespace() == "" {
			return nil
		}
		l := namespace.Locator{
			SyncTarget: namespace.SyncTarget{Cluster: target.Cluster, Name: target.Name, UID: string(target.UID)},
			Cluster:    identity.LogicalCluster(obj, opts.FromCluster), Namespace: obj.GetNamespace(),
		}
		name, err := namespace.DownstreamName(l)
		if err != nil {
			return nil
		}
		return []queue.Key{namespaces.Key(name)}
	}
	nsOfDownstream := func(obj metav1.Object) []queue.Key {
		if obj.GetNamespace() == "" {
			return nil
		}
		return []queue.Key{namespaces.Key(obj.GetNamespace())}
	}
	for _, gvr := range resources {
		if _, err := inf.upstream[gvr].AddEventHandler(s.spec.EventHandler(specCtl.UpstreamKeys(gvr))); err != nil {
			return nil, fmt.Errorf("downstream syncer: %w", err)
		}
		if _, err := inf.upstream[gvr].AddEventHandler(s.namespaces.EventHandler(nsOfUpstream)); err != nil {
			return nil, fmt.Errorf("downstream syncer: %w", err)
		}
		if _, err := inf.downstream[gvr].AddEventHandler(s.spec.EventHandler(spec.DownstreamKeys(gvr))); err != nil {
			return nil, fmt.Errorf("downstream syncer: %w", err)
		}
		if _, err := inf.downstream[gvr].AddEventHandler(s.namespaces.EventHandler(nsOfDownstream)); err != nil {
			return nil, fmt.Errorf("downstream syncer: %w", err)
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
	s.informers.start(ctx.Done())
	defer s.informers.shutdown()
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

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.spec.Run(gctx) })
	g.Go(func() error { return s.namespaces.Run(gctx) })
	return g.Wait()
}

// HasSynced reports whether Run has synced its caches.
func (s *Syncer) HasSynced() bool { return s.synced.Load() }

// Stats returns the spec controller's per-resource counters.
func (s *Syncer) Stats() []queue.GVRStats { return s.spec.Stats() }
