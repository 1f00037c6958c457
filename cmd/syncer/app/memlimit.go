package app

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/cmd/syncer/internal/idlemem"
	"github.com/tmc-syncer/syncer/cmd/syncer/internal/memlimit"
	"github.com/tmc-syncer/syncer/cmd/syncer/options"
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

// releaseIdleMemory returns the memory of busy phases to the operating system whenever the
// syncer has gone quiet (--release-idle-memory), until ctx ends.
func releaseIdleMemory(ctx context.Context, log logr.Logger) {
	r := &idlemem.Releaser{Released: func(reclaimable uint64) {
		log.V(2).Info("quiet after a busy phase: returned the free memory to the operating system", "reclaimableBytes", reclaimable)
	}}
	r.Run(ctx)
}

// upstreamListPageSize is --upstream-list-page-size, or 0 (one list) under kcp: its syncer
// virtual workspace is listed as kcp's own syncer lists it.
func upstreamListPageSize(opts *options.Options, kcp bool) int64 {
	if kcp {
		return 0
	}
	return opts.UpstreamListPageSize
}

// applyGCPercent sets the garbage collector's target to --gc-percent unless the GOGC
// environment variable is set (the runtime applied it already).
func applyGCPercent(log logr.Logger, percent int, getenv func(string) string, set func(int) int) {
	if v := getenv("GOGC"); v != "" {
		log.V(1).Info("GOGC is set: --gc-percent is not applied", "GOGC", v)
		return
	}
	set(percent)
	log.V(1).Info("set the garbage collector's target", "percent", percent)
}
