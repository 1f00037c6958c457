// Package identity computes the kcp-compatible identity of a SyncTarget: the
// syncTargetKey and the labels, annotations and finalizers derived from it.
//
// Every name here is wire-compatible with kcp TMC so that an existing kcp
// deployment can switch syncers without re-labelling anything.
package identity
