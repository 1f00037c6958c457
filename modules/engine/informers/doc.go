// Package informers runs one shared informer per (cluster side, resource),
// each with its own context so that resources can be added and removed while
// the syncer runs. Upstream informers see only objects carrying the target's
// state label; downstream informers only objects labelled for the target.
package informers
