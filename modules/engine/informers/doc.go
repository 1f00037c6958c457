// Package informers runs one shared informer per (cluster side, resource),
// each with its own context so that resources can be added and removed while
// the syncer runs. Upstream informers see only objects carrying the target's
// state label; downstream informers only objects labelled for the target.
//
// Upstream caches are cluster-aware: keyed StoreKey(cluster, namespace, name), so one
// list/watch spanning many kcp logical clusters keeps each workspace's objects apart.
// Upstream informers never use client-go's WatchList (kcp v0.11 answers it with 422).
package informers
