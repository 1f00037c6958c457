package engine

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
)

// Defaults of Config.
const (
	DefaultRediscoveryInterval       = time.Minute
	DefaultIncompatibleRetryInterval = 15 * time.Second
)

// Config configures an Engine.
type Config struct {
	// SyncTargetName and SyncTargetUID are kcp's --sync-target-name and --sync-target-uid.
	SyncTargetName string
	SyncTargetUID  types.UID
	// FromCluster is the logical cluster of the SyncTarget (kcp's --from-cluster); it
	// is also the logical cluster of upstream objects without a kcp.io/cluster annotation.
	FromCluster string
	// SyncTargetCluster is the SyncTarget's own logical cluster, its kcp.io/cluster
	// annotation (see identity.TargetOf): kcp derives the syncTargetKey and the namespace
	// locators from it. Empty means FromCluster. Run refuses to start when the SyncTarget
	// names another cluster than the one the key was made from.
	SyncTargetCluster string
	// Resources are kcp-style --resources values, e.g. "deployments.apps,services".
	Resources []string

	// RateLimit configures the retries of every controller.
	RateLimit queue.RateLimit
	// ResyncPeriod of the informers; zero (the default) turns resync off.
	ResyncPeriod time.Duration
	// RediscoveryInterval is how often discovery is re-read to notice new or removed APIs.
	RediscoveryInterval time.Duration
	// IncompatibleRetryInterval is how soon discovery is re-read while some resource is Incompatible.
	IncompatibleRetryInterval time.Duration
	// DrainTimeout bounds each controller's drain on shutdown.
	DrainTimeout time.Duration
	// Registry, when set, receives the engine's Prometheus metrics.
	Registry prometheus.Registerer
	// SyncTarget, when set, is the client of the SyncTarget's own workspace (under
	// kcp the upstream ClusterClients reach the syncer virtual workspace, which
	// serves no SyncTargets); nil means the upstream ClusterClients' Dynamic.
	SyncTarget dynamic.Interface
	// KCP says the control plane is kcp: kcp's controllers own
	// status.syncedResources (computed from the syncer's API imports), so the
	// engine reads them and never writes them, and --resources only says what to
	// import: the resource set is resources.KCPBuiltins plus the Accepted entries.
	KCP bool
	// MetadataOnly lists the sides whose resource-set informers hold only object
	// metadata (*metav1.PartialObjectMetadata), for processes whose controllers need
	// no spec or status from that side. By default both sides hold full objects.
	MetadataOnly []informers.Side
	// KeepManagedFields says which informer caches keep metadata.managedFields whole;
	// the others trim each entry to its manager (informers.TrimManagedFields). Nil means
	// informers.DefaultKeepManagedFields.
	KeepManagedFields informers.KeepManagedFieldsFunc
	// UpstreamListPageSize, when positive, makes the upstream informers of the resource
	// set list in pages of this many objects, each trimmed before the next page is read
	// (informers.Options.UpstreamListPageSize). Zero lists in one request.
	UpstreamListPageSize int64
}

func (c Config) metadataOnly(side informers.Side) bool {
	return slices.Contains(c.MetadataOnly, side)
}

func (c Config) withDefaults() (Config, error) {
	if c.SyncTargetName == "" {
		return c, fmt.Errorf("engine config: sync target name is required")
	}
	if c.SyncTargetUID == "" {
		return c, fmt.Errorf("engine config: sync target UID is required")
	}
	if c.RediscoveryInterval <= 0 {
		c.RediscoveryInterval = DefaultRediscoveryInterval
	}
	if c.IncompatibleRetryInterval <= 0 {
		c.IncompatibleRetryInterval = DefaultIncompatibleRetryInterval
	}
	return c, nil
}

// ClusterClients are the clients the engine uses for one cluster.
type ClusterClients struct {
	Dynamic   dynamic.Interface
	Metadata  metadata.Interface
	Discovery resources.Discoverer
}

// ClientsFor builds the clients of a cluster from cfg (see package clients for
// QPS, user agent and dialer).
func ClientsFor(cfg *rest.Config) (ClusterClients, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return ClusterClients{}, fmt.Errorf("create dynamic client for %s: %w", cfg.Host, err)
	}
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return ClusterClients{}, fmt.Errorf("create metadata client for %s: %w", cfg.Host, err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return ClusterClients{}, fmt.Errorf("create discovery client for %s: %w", cfg.Host, err)
	}
	return ClusterClients{Dynamic: dyn, Metadata: md, Discovery: disc}, nil
}
