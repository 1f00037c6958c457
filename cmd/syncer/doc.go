// Command syncer is the TMC syncer binary.
package main
