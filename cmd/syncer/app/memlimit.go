package app

import (
	"os"
	"runtime/debug"

	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/cmd/syncer/internal/memlimit"
)

// cgroupRoot is where a container sees its own cgroup's files.
const cgroupRoot = "/sys/fs/cgroup"

// applyMemoryLimit gives the Go runtime a soft memory limit of 90 % of the container's
// memory limit when GOMEMLIMIT is unset: near the limit the garbage collector runs more
// often rather than the kernel killing the process. A failure to read the limit is logged
// and changes nothing.
func applyMemoryLimit(log logr.Logger) {
	set, err := memlimit.Configure(memlimit.Settings{
		Getenv: os.Getenv, Cgroup: os.DirFS(cgroupRoot), SetMemoryLimit: debug.SetMemoryLimit,
	})
	switch {
	case err != nil:
		log.Error(err, "could not read the container's memory limit; the Go memory limit is left alone")
	case set > 0:
		log.V(1).Info("set the Go memory limit from the container's memory limit", "bytes", set, "ratio", memlimit.DefaultRatio)
	}
}
