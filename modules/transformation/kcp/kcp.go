// Package kcp holds the label, annotation and finalizer names that kcp's TMC syncer uses.
//
// They are kept byte-identical to kcp so that an existing kcp deployment can switch
// syncers without re-creating anything; the values must never change.
package kcp

const (
	// ClusterAnnotation carries the logical cluster of an upstream object.
	ClusterAnnotation = "kcp.io/cluster"

	// StateLabelPrefix prefixes the upstream per-sync-target state label.
	StateLabelPrefix = "state.workload.kcp.io/"

	// DownstreamClusterLabel replaces the state label on downstream objects; its value is the
	// sync target key.
	DownstreamClusterLabel = "internal.workload.kcp.io/cluster"

	// DeletionAnnotationPrefix prefixes the upstream per-target deletion annotation.
	DeletionAnnotationPrefix = "deletion.internal.workload.kcp.io/"

	// FinalizersAnnotationPrefix prefixes the upstream per-target soft finalizers annotation.
	FinalizersAnnotationPrefix = "finalizers.workload.kcp.io/"

	// SyncerFinalizerPrefix prefixes the upstream finalizer the syncer adds before its first
	// downstream write.
	SyncerFinalizerPrefix = "workload.kcp.io/syncer-"

	// StatusAnnotationPrefix prefixes the per-target status annotation used when more than
	// one sync target syncs an object.
	StatusAnnotationPrefix = "experimental.status.workload.kcp.io/"

	// SpecDiffAnnotationPrefix prefixes the per-target JSON Patch applied to spec on the way down.
	SpecDiffAnnotationPrefix = "experimental.spec-diff.workload.kcp.io/"

	// NamespaceLocatorAnnotation holds the JSON locator on downstream namespaces (and on
	// allowed cluster-scoped objects).
	NamespaceLocatorAnnotation = "kcp.io/namespace-locator"

	// TenantIDLabel groups the downstream namespaces of one tenant.
	TenantIDLabel = "kcp.io/tenant-id"

	// LastAppliedAnnotation is kubectl's client-side apply record; it describes the upstream
	// object, not the downstream one, so it never goes down.
	LastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"
)

// State values of the upstream state label.
const (
	// StateSync means the object is to be synced to the target.
	StateSync = "Sync"
	// StatePending means the object is assigned to the target but not yet to be synced.
	StatePending = ""
	// StateUpsync means the physical cluster owns the object.
	StateUpsync = "Upsync"
)

// StateLabel returns the upstream state label of the sync target with the given key.
func StateLabel(syncTargetKey string) string { return StateLabelPrefix + syncTargetKey }

// DeletionAnnotation returns the per-target deletion annotation of the given key.
func DeletionAnnotation(syncTargetKey string) string { return DeletionAnnotationPrefix + syncTargetKey }

// FinalizersAnnotation returns the per-target soft finalizers annotation of the given key.
func FinalizersAnnotation(syncTargetKey string) string {
	return FinalizersAnnotationPrefix + syncTargetKey
}

// SyncerFinalizer returns the upstream finalizer of the syncer of the given key.
func SyncerFinalizer(syncTargetKey string) string { return SyncerFinalizerPrefix + syncTargetKey }

// StatusAnnotation returns the per-target status annotation of the given key.
func StatusAnnotation(syncTargetKey string) string { return StatusAnnotationPrefix + syncTargetKey }

// SpecDiffAnnotation returns the per-target spec-diff annotation of the given key.
func SpecDiffAnnotation(syncTargetKey string) string { return SpecDiffAnnotationPrefix + syncTargetKey }
