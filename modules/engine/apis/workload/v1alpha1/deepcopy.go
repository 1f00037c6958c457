package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// DeepCopyInto copies s into out.
func (s *SyncTarget) DeepCopyInto(out *SyncTarget) {
	*out = *s
	out.TypeMeta = s.TypeMeta
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	s.Spec.DeepCopyInto(&out.Spec)
	s.Status.DeepCopyInto(&out.Status)
}

// DeepCopy returns a deep copy of s.
func (s *SyncTarget) DeepCopy() *SyncTarget {
	if s == nil {
		return nil
	}
	out := new(SyncTarget)
	s.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (s *SyncTarget) DeepCopyObject() runtime.Object { return s.DeepCopy() }

// DeepCopyInto copies s into out.
func (s *SyncTargetSpec) DeepCopyInto(out *SyncTargetSpec) {
	*out = *s
	if s.EvictAfter != nil {
		out.EvictAfter = s.EvictAfter.DeepCopy()
	}
	if s.SupportedAPIExports != nil {
		out.SupportedAPIExports = append([]APIExportReference(nil), s.SupportedAPIExports...)
	}
	if s.Cells != nil {
		out.Cells = make(map[string]string, len(s.Cells))
		for k, v := range s.Cells {
			out.Cells[k] = v
		}
	}
}

// DeepCopyInto copies s into out.
func (s *SyncTargetStatus) DeepCopyInto(out *SyncTargetStatus) {
	*out = *s
	out.Allocatable = copyResourceList(s.Allocatable)
	out.Capacity = copyResourceList(s.Capacity)
	if s.Conditions != nil {
		out.Conditions = make(Conditions, len(s.Conditions))
		for i := range s.Conditions {
			s.Conditions[i].DeepCopyInto(&out.Conditions[i])
		}
	}
	if s.SyncedResources != nil {
		out.SyncedResources = make([]ResourceToSync, len(s.SyncedResources))
		for i := range s.SyncedResources {
			s.SyncedResources[i].DeepCopyInto(&out.SyncedResources[i])
		}
	}
	if s.LastSyncerHeartbeatTime != nil {
		out.LastSyncerHeartbeatTime = s.LastSyncerHeartbeatTime.DeepCopy()
	}
	if s.VirtualWorkspaces != nil {
		out.VirtualWorkspaces = append([]VirtualWorkspace(nil), s.VirtualWorkspaces...)
	}
	if s.TunnelWorkspaces != nil {
		out.TunnelWorkspaces = append([]TunnelWorkspace(nil), s.TunnelWorkspaces...)
	}
}

func copyResourceList(in *corev1.ResourceList) *corev1.ResourceList {
	if in == nil {
		return nil
	}
	out := in.DeepCopy()
	return &out
}

// DeepCopyInto copies c into out.
func (c *Condition) DeepCopyInto(out *Condition) {
	*out = *c
	c.LastTransitionTime.DeepCopyInto(&out.LastTransitionTime)
}

// DeepCopyInto copies r into out.
func (r *ResourceToSync) DeepCopyInto(out *ResourceToSync) {
	*out = *r
	if r.Versions != nil {
		out.Versions = append([]string(nil), r.Versions...)
	}
}

// DeepCopyInto copies l into out.
func (l *SyncTargetList) DeepCopyInto(out *SyncTargetList) {
	*out = *l
	out.TypeMeta = l.TypeMeta
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]SyncTarget, len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns a deep copy of l.
func (l *SyncTargetList) DeepCopy() *SyncTargetList {
	if l == nil {
		return nil
	}
	out := new(SyncTargetList)
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *SyncTargetList) DeepCopyObject() runtime.Object { return l.DeepCopy() }
