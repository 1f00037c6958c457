package integration

import (
	"os"
	"testing"

	"github.com/tmc-syncer/syncer/integration/framework"
)

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m))
}
