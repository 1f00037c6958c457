package spec

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// Annotations on upstream objects that steer this controller. They never go down (see
// StripControlAnnotations).
const (
	// SyncErrorAnnotation holds the last permanent error of an object; cleared on success.
	SyncErrorAnnotation = "syncer.tmc.dev/sync-error"
	// DeletionPropagationAnnotation picks the propagation policy of the downstream delete:
	// Background (default), Foreground or Orphan.
	DeletionPropagationAnnotation = "syncer.tmc.dev/deletion-propagation"
	// RecreateOnImmutableAnnotation set to "true" lets the syncer delete and recreate a
	// downstream object whose change the server rejects as immutable.
	RecreateOnImmutableAnnotation = "syncer.tmc.dev/recreate-on-immutable"
)

// Event reasons, on the upstream object.
const (
	// ReasonSyncFailed reports a write the physical cluster rejected permanently.
	ReasonSyncFailed = "SyncFailed"
	// ReasonSyncConflict reports a foreign downstream object the policy does not take over.
	ReasonSyncConflict = "SyncConflict"
)

// DefaultNotReadyRetryDelay is Config.NotReadyRetryDelay's default: short, since what is
// missing (a ServiceAccount's token, the workspace DNS) usually comes within seconds.
const DefaultNotReadyRetryDelay = 3 * time.Second

// ByUpstreamIndex indexes downstream objects by the upstream object they were synced from
// (see UpstreamIndexFunc).
const ByUpstreamIndex = "tmc-syncer.upstream"

// Store reads cached objects by key (a cache.Indexer satisfies it).
type Store interface {
	GetByKey(key string) (item any, exists bool, err error)
}

// Indexer is a Store that can also be searched by index (a cache.Indexer satisfies it).
type Indexer interface {
	Store
	ByIndex(indexName, indexedValue string) ([]any, error)
}

// Transformer turns an upstream object into its downstream form (*transformation.Pipeline).
type Transformer interface {
	ToDownstream(ctx transformation.Context, upstream *unstructured.Unstructured) (*unstructured.Unstructured, error)
}

// Writer writes downstream objects (*applier.Applier).
type Writer interface {
	Apply(ctx context.Context, req applier.Request) (applier.Outcome, *unstructured.Unstructured, error)
	Delete(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, uid types.UID, propagation metav1.DeletionPropagation) error
}

// NamespaceEnsurer creates the downstream namespace of a locator when missing
// (*namespaces.Ensurer).
type NamespaceEnsurer interface {
	Ensure(ctx context.Context, l namespace.Locator) (string, error)
}

// EventRecorder records Events on upstream objects (record.EventRecorder satisfies it).
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Metrics counts what the controller decides (*metrics.Metrics satisfies it).
type Metrics interface {
	Conflict(policy, resource string)
	DriftReverted(resource string)
	PermanentError(resource, class string)
	Applied(resource, outcome string)
	Deleted(resource string)
}

// Resource is one synced resource and its caches.
type Resource struct {
	// GVR is the resource, the same upstream and downstream.
	GVR schema.GroupVersionResource
	// Upstream caches upstream objects carrying the target's state label, keyed
	// informers.StoreKey(cluster, namespace, name): one entry per logical cluster.
	Upstream Store
	// Downstream caches downstream objects carrying the target's cluster label, keyed
	// "namespace/name", with ByUpstreamIndex.
	Downstream Indexer
}

// Config wires a Controller.
type Config struct {
	// Target is the sync target served.
	Target identity.Target
	// Transform is the transformation context (sync target and --from-cluster).
	Transform transformation.Context
	// Pipeline transforms upstream objects.
	Pipeline Transformer
	// Resources are the synced resources.
	Resources []Resource
	// Lookup, when set, returns the caches of a resource instead of Resources, for
	// resource sets that change while the syncer runs (the engine's informers).
	Lookup func(gvr schema.GroupVersionResource) (Resource, bool)
	// UpstreamClient reads and patches upstream objects.
	UpstreamClient dynamic.Interface
	// DownstreamClient reads downstream objects missing from the cache.
	DownstreamClient dynamic.Interface
	// Writer applies and deletes downstream objects.
	Writer Writer
	// Namespaces ensures downstream namespaces.
	Namespaces NamespaceEnsurer
	// Recorder records Events upstream; nil records none.
	Recorder EventRecorder
	// Policy is the default conflict policy.
	Policy conflict.Policy
	// DeletionPropagation is the default propagation of downstream deletes (Background).
	DeletionPropagation metav1.DeletionPropagation
	// PermanentRetryDelay is when a permanently failing or conflicting object is looked at
	// again (queue.PermanentRetryDelay when zero).
	PermanentRetryDelay time.Duration
	// NotReadyRetryDelay is when an object whose transformation inputs are not ready
	// (transformation.ErrPodInputsNotReady) is looked at again (DefaultNotReadyRetryDelay
	// when zero). It is not an error: nothing is reported upstream.
	NotReadyRetryDelay time.Duration
	// Workers reconciling keys; zero means 1.
	Workers int
	// Metrics may be nil.
	Metrics Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Controller is the spec controller.
type Controller struct {
	cfg       Config
	resources map[schema.GroupVersionResource]Resource

	mu       sync.Mutex
	failures map[queue.Key]failure

	written *written
}

// failure remembers a permanent failure, so that the same desired object is not sent again
// before the retry delay (upstream events caused by our own reporting would otherwise loop).
type failure struct {
	hash  string
	until time.Time
}

var _ queue.Controller = (*Controller)(nil)

// NewController returns a spec Controller.
func NewController(cfg Config) *Controller {
	if cfg.PermanentRetryDelay <= 0 {
		cfg.PermanentRetryDelay = queue.PermanentRetryDelay
	}
	if cfg.NotReadyRetryDelay <= 0 {
		cfg.NotReadyRetryDelay = DefaultNotReadyRetryDelay
	}
	if cfg.DeletionPropagation == "" {
		cfg.DeletionPropagation = metav1.DeletePropagationBackground
	}
	if cfg.Policy == "" {
		cfg.Policy = conflict.Abort
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	c := &Controller{cfg: cfg, resources: map[schema.GroupVersionResource]Resource{}, failures: map[queue.Key]failure{}, written: newWritten()}
	for _, r := range cfg.Resources {
		c.resources[r.GVR] = r
	}
	return c
}

func (c *Controller) resource(gvr schema.GroupVersionResource) (Resource, bool) {
	if c.cfg.Lookup != nil {
		return c.cfg.Lookup(gvr)
	}
	r, ok := c.resources[gvr]
	return r, ok
}

// Name implements queue.Controller.
func (c *Controller) Name() string { return "downstream-spec" }

// Workers implements queue.Controller.
func (c *Controller) Workers() int { return max(c.cfg.Workers, 1) }

// UpstreamKeys maps an upstream object event to its key.
func (c *Controller) UpstreamKeys(gvr schema.GroupVersionResource) queue.KeysFunc {
	return queue.ObjectKeys(queue.Down, gvr, c.cfg.Transform.LogicalCluster)
}

// DownstreamKeys maps a downstream object event to the key of the upstream object it was
// synced from, so a deleted or edited downstream object is converged again.
func DownstreamKeys(gvr schema.GroupVersionResource) queue.KeysFunc {
	return func(obj metav1.Object) []queue.Key {
		o, ok := ownership.FromAnnotations(obj.GetAnnotations())
		if !ok {
			return nil
		}
		return []queue.Key{{Direction: queue.Down, GVR: gvr, Cluster: o.Cluster, Namespace: o.Namespace, Name: o.Name}}
	}
}

// UpstreamIndexFunc indexes a downstream object under the upstream object it names.
func UpstreamIndexFunc(obj any) ([]string, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, nil
	}
	o, ok := ownership.FromAnnotations(m.GetAnnotations())
	if !ok {
		return nil, nil
	}
	return []string{indexValue(o.Cluster, o.Namespace, o.Name)}, nil
}

func indexValue(cluster, namespace, name string) string {
	return cluster + "|" + namespace + "/" + name
}

type noMetrics struct{}

func (noMetrics) Conflict(string, string)       {}
func (noMetrics) DriftReverted(string)          {}
func (noMetrics) PermanentError(string, string) {}
func (noMetrics) Applied(string, string)        {}
func (noMetrics) Deleted(string)                {}
