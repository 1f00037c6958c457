package namespaces

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// DefaultCleanDelay is how long a downstream namespace stays unused before it is deleted
// (kcp's --downstream-namespace-clean-delay).
const DefaultCleanDelay = 30 * time.Second

// Indexer finds cached objects by index (a cache.Indexer satisfies it).
type Indexer interface {
	ByIndex(indexName, indexedValue string) ([]any, error)
}

// Deleted counts deleted namespaces (metrics).
type Deleted interface {
	NamespaceDeleted()
}

// Config wires a Controller.
type Config struct {
	// Target is the sync target; only namespaces created for it are deleted.
	Target identity.Target
	// FallbackCluster is the logical cluster of upstream objects without kcp.io/cluster.
	FallbackCluster string
	// Namespaces is the cache of downstream namespaces labelled for the target.
	Namespaces Store
	// Upstream and Downstream are the object caches of every synced resource, each with
	// cache.NamespaceIndex.
	Upstream, Downstream []Indexer
	// Resources are the synced resources, listed once more right before a delete.
	Resources []schema.GroupVersionResource
	// Lookup, when set, replaces Resources, Upstream and Downstream for resource sets
	// that change while the syncer runs (the engine's informers).
	Lookup func() (resources []schema.GroupVersionResource, upstream, downstream []Indexer)
	// UpstreamClient and DownstreamClient are used for that last check and the delete.
	UpstreamClient, DownstreamClient dynamic.Interface
	// Delay is the clean delay; zero means DefaultCleanDelay.
	Delay time.Duration
	// Workers reconciling namespaces; zero means 1.
	Workers int
	// Metrics counts deletions; may be nil.
	Metrics Deleted
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Controller deletes unused downstream namespaces the syncer created.
type Controller struct {
	cfg Config

	mu          sync.Mutex
	unusedSince map[string]time.Time
}

var _ queue.Controller = (*Controller)(nil)

// NewController returns a namespace Controller.
func NewController(cfg Config) *Controller {
	if cfg.Delay <= 0 {
		cfg.Delay = DefaultCleanDelay
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, unusedSince: map[string]time.Time{}}
}

// Name implements queue.Controller.
func (c *Controller) Name() string { return "downstream-namespaces" }

// Workers implements queue.Controller.
func (c *Controller) Workers() int { return max(c.cfg.Workers, 1) }

func (c *Controller) caches() ([]schema.GroupVersionResource, []Indexer, []Indexer) {
	if c.cfg.Lookup != nil {
		return c.cfg.Lookup()
	}
	return c.cfg.Resources, c.cfg.Upstream, c.cfg.Downstream
}

// Key returns the queue key of a downstream namespace.
func Key(name string) queue.Key {
	return queue.Key{Direction: queue.Down, GVR: Resource, Name: name}
}
