// Package engine wires the runtime every syncer controller runs on: it checks
// the SyncTarget identity, keeps the resource set in step with configuration,
// discovery and SyncTarget.status.syncedResources, runs the informers of that
// set on both clusters, and runs the registered controllers' queues.
//
// A controller plugs in with Register; it gets events of the informers it
// watches as keys and reads objects through Informers().
package engine
