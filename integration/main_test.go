package integration

import (
	"os"
	"testing"

	"github.com/tmc-syncer/syncer/integration/framework"
)

func TestMain(m *testing.M) {
	code := framework.Main(m)
	framework.RemoveSyncerBinary()
	os.Exit(code)
}
