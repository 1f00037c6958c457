// Package integration holds the end-to-end tests of TMC Syncer. They run against a
// real test bed (see package framework): two isolated Kubernetes control planes on
// loopback, "kcp" upstream and "physical" downstream.
package integration
