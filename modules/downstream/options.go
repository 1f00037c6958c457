package downstream

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
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

// Options configure downstream sync (Register). The zero value is usable.
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
	// Registerer receives the tmc_syncer_downstream_* collectors; nil registers none.
	Registerer prometheus.Registerer
	// Pipeline adds transformation options (stages) to the default pipeline.
	Pipeline []transformation.Option
	// PodMutator, when set, makes the pods of synced workloads talk to their workspace
	// (kcp's pod-spec mutator); nil leaves pod specs as written.
	PodMutator *PodMutatorOptions
	// PodInputsRetryDelay is when an object whose pod mutator inputs are not ready yet (no
	// token Secret upstream, workspace DNS not ready) is looked at again (3 s when zero).
	PodInputsRetryDelay time.Duration
	// NamespaceGrant, when set, binds a ClusterRole to the syncer in every downstream
	// namespace it manages, before anything else is written there (the physical
	// cluster's RBAC then grants writes only in those namespaces; docs/rbac.md).
	NamespaceGrant *namespaces.Grant
}
