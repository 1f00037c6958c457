package resources

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// MergeStatus returns existing with an entry for every configured resource of
// set (Origin FromConfig): entries already present keep their position and
// identityHash and get the new state and versions; new entries are appended.
//
// Entries the control plane owns are kept as they are: Pending ones, and
// Accepted ones even when this syncer cannot serve them (their problem goes into
// the ResourcesCompatible condition instead). Downgrading those to Incompatible
// would take them out of the resource set for good, since only Accepted entries
// are considered, so a CRD installed a moment later would never be picked up.
// A resource neither cluster serves has no version to report and gets no entry.
func MergeStatus(existing []workloadv1alpha1.ResourceToSync, set Set) []workloadv1alpha1.ResourceToSync {
	out := make([]workloadv1alpha1.ResourceToSync, 0, len(existing)+len(set))
	index := map[string]int{}
	for _, e := range existing {
		var cp workloadv1alpha1.ResourceToSync
		e.DeepCopyInto(&cp)
		index[e.GroupResourceKey().String()] = len(out)
		out = append(out, cp)
	}
	for _, r := range set {
		versions := r.Versions
		if r.Origin != FromConfig || len(versions) == 0 {
			continue
		}
		if i, ok := index[r.String()]; ok {
			out[i].State = r.State
			out[i].Versions = slices.Clone(versions)
			continue
		}
		out = append(out, workloadv1alpha1.ResourceToSync{
			GroupResource: metav1.GroupResource{Group: r.Group, Resource: r.Resource},
			Versions:      slices.Clone(versions),
			State:         r.State,
		})
	}
	return out
}

// Condition returns the ResourcesCompatible condition for set: True when every
// resource is Accepted, else False with each Incompatible resource and its reason.
func Condition(set Set) workloadv1alpha1.Condition {
	var problems []string
	for _, r := range set {
		if r.State == workloadv1alpha1.ResourceSchemaIncompatibleState {
			problems = append(problems, fmt.Sprintf("%s: %s", r.GroupResource, r.Reason))
		}
	}
	if len(problems) == 0 {
		return workloadv1alpha1.Condition{
			Type:    workloadv1alpha1.ResourcesCompatible,
			Status:  corev1.ConditionTrue,
			Reason:  workloadv1alpha1.AllResourcesCompatibleReason,
			Message: fmt.Sprintf("%d resources synced", len(set)),
		}
	}
	return workloadv1alpha1.Condition{
		Type:     workloadv1alpha1.ResourcesCompatible,
		Status:   corev1.ConditionFalse,
		Severity: workloadv1alpha1.ConditionSeverityWarning,
		Reason:   workloadv1alpha1.IncompatibleResourcesReason,
		Message:  "not synced: " + strings.Join(problems, "; "),
	}
}
