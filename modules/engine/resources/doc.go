// Package resources decides which resources a syncer syncs: the kcp-style
// --resources flag plus the Accepted entries of SyncTarget.status.syncedResources,
// each resolved to a version served by both the control plane and the physical
// cluster. It also renders the outcome back into status.syncedResources and a
// ResourcesCompatible condition.
package resources
