// Package v1alpha1 holds the SyncTarget API of group workload.kcp.io, wire-compatible
// with kcp TMC's SyncTarget so that an existing kcp deployment can switch syncers.
package v1alpha1
