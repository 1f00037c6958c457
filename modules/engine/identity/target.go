package identity

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
)

// Target identifies the SyncTarget a syncer serves. Build it with NewTarget.
type Target struct {
	// Cluster is the logical cluster of the SyncTarget (kcp's --from-cluster).
	Cluster string
	// Name is the SyncTarget's name.
	Name string
	// UID is the configured SyncTarget UID (--sync-target-uid).
	UID types.UID
	// Key is the syncTargetKey derived from Cluster and Name.
	Key string
}

// NewTarget returns the identity of the SyncTarget name in logical cluster cluster.
func NewTarget(cluster, name string, uid types.UID) Target {
	return Target{Cluster: cluster, Name: name, UID: uid, Key: SyncTargetKey(cluster, name)}
}

// TargetOf returns the identity of syncTarget as kcp's syncer derives it: its logical cluster
// is its own kcp.io/cluster annotation when present (kcp always sets it), else fromCluster
// (the syncer's --from-cluster, e.g. on a plain kube-apiserver). The syncTargetKey follows.
func TargetOf(syncTarget metav1.Object, fromCluster string) Target {
	return NewTarget(LogicalCluster(syncTarget, fromCluster), syncTarget.GetName(), syncTarget.GetUID())
}

// String returns "<cluster>|<name>" for logs.
func (t Target) String() string { return t.Cluster + "|" + t.Name }

// StateLabel returns the upstream state label of this target.
func (t Target) StateLabel() string { return StateLabel(t.Key) }

// DeletionAnnotation returns the upstream deletion annotation of this target.
func (t Target) DeletionAnnotation() string { return DeletionAnnotation(t.Key) }

// SoftFinalizersAnnotation returns the upstream soft-finalizer annotation of this target.
func (t Target) SoftFinalizersAnnotation() string { return SoftFinalizersAnnotation(t.Key) }

// SyncerFinalizer returns the upstream finalizer this target's syncer owns.
func (t Target) SyncerFinalizer() string { return SyncerFinalizer(t.Key) }

// StatusAnnotation returns the multi-target status annotation of this target.
func (t Target) StatusAnnotation() string { return StatusAnnotation(t.Key) }

// SpecDiffAnnotation returns the spec-diff annotation of this target.
func (t Target) SpecDiffAnnotation() string { return SpecDiffAnnotation(t.Key) }

// DownstreamLabels returns the labels every downstream object of this target carries.
func (t Target) DownstreamLabels() map[string]string {
	return map[string]string{DownstreamClusterLabel: t.Key}
}

// UpstreamSelector selects upstream objects carrying this target's state label
// with any value, so that ""/Sync/Upsync transitions are all observed.
func (t Target) UpstreamSelector() labels.Selector {
	req, err := labels.NewRequirement(t.StateLabel(), selection.Exists, nil)
	if err != nil {
		// The key is base62 and the prefix is a valid DNS subdomain, so this cannot fail
		// for a Target built by NewTarget.
		return labels.Nothing()
	}
	return labels.NewSelector().Add(*req)
}

// DownstreamSelector selects downstream objects owned by this target.
func (t Target) DownstreamSelector() labels.Selector {
	return labels.SelectorFromSet(t.DownstreamLabels())
}

// State returns the value of this target's state label on obj and whether it is set.
func (t Target) State(obj metav1.Object) (ResourceState, bool) {
	v, ok := obj.GetLabels()[t.StateLabel()]
	return ResourceState(v), ok
}

// LogicalCluster returns the logical cluster of an upstream object: its
// kcp.io/cluster annotation, else fallback (the configured --from-cluster).
func LogicalCluster(obj metav1.Object, fallback string) string {
	if c := obj.GetAnnotations()[LogicalClusterAnnotation]; c != "" {
		return c
	}
	return fallback
}

// UIDMismatchError reports that the SyncTarget found upstream is not the one configured.
type UIDMismatchError struct {
	Target     string
	Configured types.UID
	Actual     types.UID
}

// Error implements error.
func (e *UIDMismatchError) Error() string {
	return fmt.Sprintf("sync target %s has UID %q but the syncer is configured with --sync-target-uid %q; refusing to start",
		e.Target, e.Actual, e.Configured)
}

// VerifyUID returns a *UIDMismatchError when obj's UID differs from t.UID.
func (t Target) VerifyUID(obj metav1.Object) error {
	if obj.GetUID() != t.UID {
		return &UIDMismatchError{Target: t.String(), Configured: t.UID, Actual: obj.GetUID()}
	}
	return nil
}

// SoftFinalizers returns the entries of this target's soft-finalizer annotation.
func (t Target) SoftFinalizers(obj metav1.Object) []string {
	v := obj.GetAnnotations()[t.SoftFinalizersAnnotation()]
	if v == "" {
		return nil
	}
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
