package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ResourcesCompatible is set by this syncer: True when every resource it was
// asked to sync is served by both clusters; False (severity Warning) otherwise,
// with the reasons of each Incompatible entry of status.syncedResources in the
// message, because ResourceToSync has no reason field.
const ResourcesCompatible ConditionType = "ResourcesCompatible"

// Reasons of the ResourcesCompatible condition.
const (
	AllResourcesCompatibleReason = "AllResourcesCompatible"
	IncompatibleResourcesReason  = "IncompatibleResources"
)

// Set adds or replaces the condition of c.Type. LastTransitionTime is kept when
// the status does not change and set to now when it does.
func (c *Conditions) Set(cond Condition, now metav1.Time) {
	if old := c.Get(cond.Type); old != nil {
		if old.Status == cond.Status {
			cond.LastTransitionTime = old.LastTransitionTime
		} else {
			cond.LastTransitionTime = now
		}
		*old = cond
		return
	}
	cond.LastTransitionTime = now
	*c = append(*c, cond)
}

// GroupResourceKey returns the entry's group and resource.
func (r ResourceToSync) GroupResourceKey() schema.GroupResource {
	return schema.GroupResource{Group: r.Group, Resource: r.Resource}
}
