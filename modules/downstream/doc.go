// Package downstream syncs spec from the control plane down to one physical cluster for
// one sync target: New wires, for a set of resources, the spec controller (package spec),
// the applier (package applier), conflict resolution (package conflict), the namespace
// controller (package namespaces) and the start-up cleanup (package cleanup) on the
// engine's queue runner, and Run runs them.
package downstream
