package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of SyncTarget.
const GroupName = "workload.kcp.io"

// SchemeGroupVersion is the group and version of the types in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// SyncTargetsResource is the GroupVersionResource of SyncTarget.
var SyncTargetsResource = SchemeGroupVersion.WithResource("synctargets")

// SyncTargetKind is the Kind of SyncTarget.
const SyncTargetKind = "SyncTarget"

// AddToScheme registers SyncTarget and SyncTargetList with a scheme.
func AddToScheme(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion, &SyncTarget{}, &SyncTargetList{})
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}

// SyncTarget describes one physical cluster that workloads are synced to. It is
// cluster-scoped and has a status subresource.
type SyncTarget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SyncTargetSpec   `json:"spec,omitempty"`
	Status SyncTargetStatus `json:"status,omitempty"`
}

// SyncTargetSpec is what the platform team declares about a physical cluster.
type SyncTargetSpec struct {
	// Unschedulable keeps new workloads off the target; existing ones stay.
	Unschedulable bool `json:"unschedulable"`
	// EvictAfter, when set, evicts the workloads of the target after that time.
	EvictAfter *metav1.Time `json:"evictAfter,omitempty"`
	// SupportedAPIExports lists the APIExports whose resources the target syncs.
	SupportedAPIExports []APIExportReference `json:"supportedAPIExports,omitempty"`
	// Cells groups targets for placement.
	Cells map[string]string `json:"cells,omitempty"`
}

// APIExportReference names an APIExport by workspace path and name.
type APIExportReference struct {
	// Export is the name of the APIExport.
	Export string `json:"export"`
	// Path is the workspace path of the APIExport; empty means the SyncTarget's workspace.
	Path string `json:"path,omitempty"`
}

// SyncTargetStatus is what the syncer and the control plane observe about a target.
type SyncTargetStatus struct {
	Allocatable *corev1.ResourceList `json:"allocatable,omitempty"`
	Capacity    *corev1.ResourceList `json:"capacity,omitempty"`
	Conditions  Conditions           `json:"conditions,omitempty"`
	// SyncedResources lists the resources the syncer syncs and whether each is usable.
	SyncedResources []ResourceToSync `json:"syncedResources,omitempty"`
	// LastSyncerHeartbeatTime is set by the syncer at every heartbeat.
	LastSyncerHeartbeatTime *metav1.Time       `json:"lastSyncerHeartbeatTime,omitempty"`
	VirtualWorkspaces       []VirtualWorkspace `json:"virtualWorkspaces,omitempty"`
	TunnelWorkspaces        []TunnelWorkspace  `json:"tunnelWorkspaces,omitempty"`
}

// ResourceCompatibleState says whether a resource can be synced to a target.
type ResourceCompatibleState string

// The states of a synced resource, as in kcp.
const (
	ResourceSchemaPendingState      ResourceCompatibleState = "Pending"
	ResourceSchemaAcceptedState     ResourceCompatibleState = "Accepted"
	ResourceSchemaIncompatibleState ResourceCompatibleState = "Incompatible"
)

// ResourceToSync is one resource in status.syncedResources.
type ResourceToSync struct {
	metav1.GroupResource `json:",inline"`
	Versions             []string                `json:"versions"`
	IdentityHash         string                  `json:"identityHash,omitempty"`
	State                ResourceCompatibleState `json:"state,omitempty"`
}

// VirtualWorkspace holds the URLs the syncer talks to in kcp.
type VirtualWorkspace struct {
	SyncerURL   string `json:"syncerURL"`
	UpsyncerURL string `json:"upsyncerURL"`
}

// TunnelWorkspace holds a URL of a tunnel endpoint.
type TunnelWorkspace struct {
	URL string `json:"url"`
}

// SyncTargetList is a list of SyncTargets.
type SyncTargetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SyncTarget `json:"items"`
}
