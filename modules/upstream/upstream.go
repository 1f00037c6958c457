// Package upstream syncs from the physical cluster up to the control plane: the status of
// synced objects (package status) and the Kubernetes Events about them (package events).
// New wires both for a set of resources; cmd/syncer and the tests start it with Run.
package upstream

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/restmapper"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/upstream/events"
	"github.com/tmc-syncer/syncer/modules/upstream/metrics"
	"github.com/tmc-syncer/syncer/modules/upstream/status"
)

// Clients are the clients of one cluster.
type Clients struct {
	Dynamic dynamic.Interface
	Kube    kubernetes.Interface
	// Metadata is optional; downstream it makes owner lookups lighter.
	Metadata metadata.Interface
}

// Options tune the upstream syncer. The zero value is usable.
type Options struct {
	// StatusWorkers reconcile status keys concurrently (0: 4).
	StatusWorkers int
	// Events tunes the event syncer: rate limits, max age, type and reason filters, workers.
	Events events.Options
	// DisableEvents turns the event syncer off.
	DisableEvents bool
	// Queue configures both work queues (retries, work-queue metrics, reconcile observer).
	Queue queue.Options
}

// Config is what New needs.
type Config struct {
	// Target is the SyncTarget this syncer serves.
	Target identity.Target
	// FromCluster is the logical cluster of upstream objects without kcp.io/cluster
	// (--from-cluster); empty means Target.Cluster.
	FromCluster string
	// Resources are the synced resources whose status goes up.
	Resources []schema.GroupVersionResource
	// Upstream and Downstream are the clients of the control plane and physical cluster.
	Upstream   Clients
	Downstream Clients
	// Informers is the engine's informer manager to share caches with the downstream
	// syncer; nil makes one from the dynamic clients.
	Informers *informers.Manager
	// Transformer maps status up; nil uses transformation.NewPipeline().
	Transformer status.Transformer
	// Mapper maps downstream kinds to resources for owner lookups; nil uses discovery.
	Mapper meta.RESTMapper
	// Registry receives the Prometheus collectors; nil registers none.
	Registry prometheus.Registerer
	// Options tune the controllers.
	Options Options
}

// Syncer runs the status and event syncers.
type Syncer struct {
	status *status.Controller
	events *events.Controller
}

// New wires the upstream syncer. Nothing runs until Run.
func New(cfg Config) (*Syncer, error) {
	if cfg.Upstream.Dynamic == nil || cfg.Downstream.Dynamic == nil {
		return nil, fmt.Errorf("upstream syncer: dynamic clients of both clusters are required")
	}
	if cfg.Target.Key == "" || cfg.Target.Name == "" {
		return nil, fmt.Errorf("upstream syncer: sync target is required (identity.NewTarget)")
	}
	if cfg.FromCluster == "" {
		cfg.FromCluster = cfg.Target.Cluster
	}
	var m *metrics.Metrics
	if cfg.Registry != nil {
		var err error
		if m, err = metrics.New(cfg.Registry); err != nil {
			return nil, fmt.Errorf("upstream syncer: %w", err)
		}
	}
	inf := cfg.Informers
	if inf == nil {
		inf = informers.NewManager(informers.Options{
			Target: cfg.Target, FromCluster: cfg.FromCluster,
			Upstream:   informers.Clients{Dynamic: cfg.Upstream.Dynamic, Metadata: cfg.Upstream.Metadata},
			Downstream: informers.Clients{Dynamic: cfg.Downstream.Dynamic, Metadata: cfg.Downstream.Metadata},
		})
	}
	tr := cfg.Transformer
	if tr == nil {
		tr = transformation.NewPipeline()
	}
	sc, err := status.New(status.Config{
		Resources:   WithStatus(cfg.Resources),
		Informers:   inf,
		Upstream:    cfg.Upstream.Dynamic,
		Transformer: tr,
		Context: transformation.Context{
			SyncTargetKey: cfg.Target.Key, SyncTargetName: cfg.Target.Name, SyncTargetUID: string(cfg.Target.UID),
			SyncTargetCluster: cfg.Target.Cluster, LogicalCluster: cfg.FromCluster,
			Namespaces: namespaceLookup{inf},
		},
		Workers: cfg.Options.StatusWorkers,
		Queue:   cfg.Options.Queue,
		Metrics: m,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream syncer: %w", err)
	}
	s := &Syncer{status: sc}
	if cfg.Options.DisableEvents {
		return s, nil
	}
	if cfg.Upstream.Kube == nil || cfg.Downstream.Kube == nil {
		return nil, fmt.Errorf("upstream syncer: kubernetes clients of both clusters are required for Events")
	}
	mapper := cfg.Mapper
	if mapper == nil {
		mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cfg.Downstream.Kube.Discovery()))
	}
	get := events.FromDynamicClient(cfg.Downstream.Dynamic)
	if cfg.Downstream.Metadata != nil {
		get = events.FromMetadataClient(cfg.Downstream.Metadata)
	}
	s.events, err = events.New(events.Config{
		Downstream:     cfg.Downstream.Kube,
		Upstream:       cfg.Upstream.Kube,
		Metadata:       get,
		Mapper:         mapper,
		SyncTargetKey:  cfg.Target.Key,
		SyncTargetName: cfg.Target.Name,
		Options:        cfg.Options.Events,
		Queue:          cfg.Options.Queue,
		Metrics:        m,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream syncer: %w", err)
	}
	return s, nil
}

// Status returns the status controller.
func (s *Syncer) Status() *status.Controller { return s.status }

// Events returns the event controller (nil when disabled).
func (s *Syncer) Events() *events.Controller { return s.events }

// Synced reports whether every controller has synced its caches, for readiness checks.
func (s *Syncer) Synced() bool {
	return s.status.Synced() && (s.events == nil || s.events.Synced())
}

// Run runs both syncers until ctx ends or one fails.
func (s *Syncer) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.status.Run(ctx) })
	if s.events != nil {
		g.Go(func() error { return s.events.Run(ctx) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("upstream syncer: %w", err)
	}
	return nil
}

// withoutStatus are the built-in resources that have no status at all: their status
// syncer would queue every object of both sides for nothing (10,000 ConfigMaps are
// 20,000 keys at a restart).
var withoutStatus = map[schema.GroupVersionResource]bool{
	{Version: "v1", Resource: "configmaps"}:      true,
	{Version: "v1", Resource: "secrets"}:         true,
	{Version: "v1", Resource: "serviceaccounts"}: true,
}

// WithStatus returns the resources of gvrs that can have a status to sync up.
func WithStatus(gvrs []schema.GroupVersionResource) []schema.GroupVersionResource {
	out := make([]schema.GroupVersionResource, 0, len(gvrs))
	for _, gvr := range gvrs {
		if !withoutStatus[gvr] {
			out = append(out, gvr)
		}
	}
	return out
}
