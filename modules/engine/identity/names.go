package identity

// Prefixes and fixed names, exactly as kcp spells them.
const (
	// StateLabelPrefix prefixes the upstream per-target state label.
	StateLabelPrefix = "state.workload.kcp.io/"
	// DeletionAnnotationPrefix prefixes the upstream per-target deletion annotation.
	DeletionAnnotationPrefix = "deletion.internal.workload.kcp.io/"
	// SoftFinalizersAnnotationPrefix prefixes the upstream per-target soft-finalizer annotation.
	SoftFinalizersAnnotationPrefix = "finalizers.workload.kcp.io/"
	// SyncerFinalizerPrefix prefixes the upstream finalizer the syncer owns.
	SyncerFinalizerPrefix = "workload.kcp.io/syncer-"
	// StatusAnnotationPrefix prefixes the per-target status annotation used when
	// several targets sync the same object.
	StatusAnnotationPrefix = "experimental.status.workload.kcp.io/"
	// SpecDiffAnnotationPrefix prefixes the per-target JSON Patch applied to spec.
	SpecDiffAnnotationPrefix = "experimental.spec-diff.workload.kcp.io/"

	// DownstreamClusterLabel marks downstream objects with the syncTargetKey that owns them.
	DownstreamClusterLabel = "internal.workload.kcp.io/cluster"
	// LogicalClusterAnnotation holds the logical cluster of an upstream object in kcp.
	LogicalClusterAnnotation = "kcp.io/cluster"
	// NamespaceLocatorAnnotation holds, on a downstream namespace, the JSON locator of
	// its upstream namespace.
	NamespaceLocatorAnnotation = "kcp.io/namespace-locator"
	// TenantIDLabel groups the downstream namespaces of one tenant.
	TenantIDLabel = "kcp.io/tenant-id"
)

// ResourceState is the value of the upstream state label.
type ResourceState string

// The values of the state label.
const (
	// ResourceStatePending means assigned to the target but not yet to be synced.
	ResourceStatePending ResourceState = ""
	// ResourceStateSync means the syncer syncs the object down.
	ResourceStateSync ResourceState = "Sync"
	// ResourceStateUpsync means the physical cluster owns the object.
	ResourceStateUpsync ResourceState = "Upsync"
)

// StateLabel returns "state.workload.kcp.io/<key>".
func StateLabel(key string) string { return StateLabelPrefix + key }

// DeletionAnnotation returns "deletion.internal.workload.kcp.io/<key>".
func DeletionAnnotation(key string) string { return DeletionAnnotationPrefix + key }

// SoftFinalizersAnnotation returns "finalizers.workload.kcp.io/<key>".
func SoftFinalizersAnnotation(key string) string { return SoftFinalizersAnnotationPrefix + key }

// SyncerFinalizer returns "workload.kcp.io/syncer-<key>".
func SyncerFinalizer(key string) string { return SyncerFinalizerPrefix + key }

// StatusAnnotation returns "experimental.status.workload.kcp.io/<key>".
func StatusAnnotation(key string) string { return StatusAnnotationPrefix + key }

// SpecDiffAnnotation returns "experimental.spec-diff.workload.kcp.io/<key>".
func SpecDiffAnnotation(key string) string { return SpecDiffAnnotationPrefix + key }
