// Command syncer is the TMC syncer binary: `syncer` runs the syncer for one
// SyncTarget; `syncer manifests` prints what installs it into a physical cluster;
// `syncer version` prints its version.
package main
