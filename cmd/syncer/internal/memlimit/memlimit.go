// Package memlimit sets the Go runtime's soft memory limit (GOMEMLIMIT) from the memory
// limit of the container the process runs in, so that the garbage collector works harder
// as the heap nears the limit instead of letting the kernel kill the process.
package memlimit

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
)

// DefaultRatio is the share of the container's limit given to the Go runtime; the rest is
// left to memory the runtime does not count (thread stacks of cgo, the page cache of
// files the process maps).
const DefaultRatio = 0.9

// Files read under the cgroup file system's root, /sys/fs/cgroup: the unified hierarchy's
// (v2) first, then the v1 memory controller's.
const (
	v2File = "memory.max"
	v1File = "memory/memory.limit_in_bytes"
)

// v1Unlimited: cgroup v1 reports "no limit" as a huge number (the largest page-aligned
// int64); anything this large is no limit.
const v1Unlimited = int64(1) << 62

// CgroupLimit returns the memory limit in bytes of the cgroup whose files fsys holds
// (os.DirFS("/sys/fs/cgroup") in a container, where the cgroup namespace makes them the
// container's own). ok is false when there is no limit or no cgroup file.
func CgroupLimit(fsys fs.FS) (limit int64, ok bool, err error) {
	for _, name := range []string{v2File, v1File} {
		raw, err := fs.ReadFile(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("read cgroup memory limit %s: %w", name, err)
		}
		s := strings.TrimSpace(string(raw))
		if s == "max" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, false, fmt.Errorf("cgroup memory limit %s: %q is not a positive number of bytes", name, s)
		}
		if n >= v1Unlimited {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// Settings are what Configure reads and calls; Getenv and SetMemoryLimit are os.Getenv
// and runtime/debug.SetMemoryLimit in the process.
type Settings struct {
	Getenv         func(key string) string
	Cgroup         fs.FS
	SetMemoryLimit func(limit int64) int64
	// Ratio of the cgroup limit to set; zero means DefaultRatio.
	Ratio float64
}

// Configure sets the Go memory limit to Ratio times the cgroup's memory limit, unless the
// GOMEMLIMIT environment variable is set (the runtime already applied it) or there is no
// limit. It returns the limit it set, zero when it set none.
func Configure(s Settings) (int64, error) {
	if s.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, ok, err := CgroupLimit(s.Cgroup)
	if err != nil || !ok {
		return 0, err
	}
	ratio := s.Ratio
	if ratio <= 0 || ratio > 1 {
		ratio = DefaultRatio
	}
	set := int64(math.Floor(float64(limit) * ratio))
	s.SetMemoryLimit(set)
	return set, nil
}
