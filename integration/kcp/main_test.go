// Package kcp holds the end-to-end tests on a real kcp v0.11.0: kcp's own plugin
// installs the syncer, which syncs through kcp's syncer virtual workspace.
package kcp

import (
	"os"
	"testing"

	"github.com/tmc-syncer/syncer/integration/framework"
)

func TestMain(m *testing.M) {
	code := framework.MainKCP(m)
	framework.RemoveSyncerBinary()
	framework.RemoveCommandBinaries()
	os.Exit(code)
}
