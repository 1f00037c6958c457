// Package spec is the spec controller: it syncs upstream objects assigned to the sync
// target (state label Sync) down to the physical cluster and deletes them there when
// upstream deletes or unassigns them, holding an upstream finalizer in between.
//
// controller.go holds the wiring (configuration, keys, event handlers); spec_reconcile.go
// the decisions, as small steps; upstream.go the writes to upstream objects (finalizer,
// error annotation, Events).
package spec
