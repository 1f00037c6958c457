package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// KCPEnvironment is the kcp flavour of the test bed: a real kcp (upstream) and a
// physical cluster (downstream).
type KCPEnvironment struct {
	KCP      *KCP
	Physical *Cluster
	// Bins are kcp's binaries: the server, kubectl-kcp and kcp's own syncer.
	Bins KCPBinaries
	// Root is the repository root.
	Root string

	dir string
}

// StartKCPEnvironment starts kcp and the physical cluster in parallel.
func StartKCPEnvironment(ctx context.Context) (_ *KCPEnvironment, err error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := testbinDir(ctx, root)
	if err != nil {
		return nil, err
	}
	bins, err := binariesIn(dir)
	if err != nil {
		return nil, err
	}
	kbins, err := kcpBinaries(dir)
	if err != nil {
		return nil, err
	}
	bed, err := os.MkdirTemp(os.Getenv("TMC_BED_ROOT"), "tmc-syncer-kcp-bed-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	env := &KCPEnvironment{Bins: kbins, Root: root, dir: bed}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	var wg sync.WaitGroup
	var kcpErr, physErr error
	wg.Go(func() { env.KCP, kcpErr = StartKCP(ctx, filepath.Join(bed, "kcp"), kbins) })
	wg.Go(func() { env.Physical, physErr = StartCluster(ctx, "physical", filepath.Join(bed, "physical"), bins) })
	wg.Wait()
	if kcpErr != nil {
		return env, kcpErr
	}
	return env, physErr
}

// Dir is the bed's directory, for files a test writes next to the servers.
func (e *KCPEnvironment) Dir() string { return e.dir }

// Stop stops every process of the bed and removes its files, unless
// TMC_TEST_KEEP_DIR is set.
func (e *KCPEnvironment) Stop() {
	var wg sync.WaitGroup
	if e.KCP != nil {
		wg.Go(e.KCP.Stop)
	}
	if e.Physical != nil {
		wg.Go(e.Physical.Stop)
	}
	wg.Wait()
	if os.Getenv("TMC_TEST_KEEP_DIR") == "" && e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// Leaked lists the bed's processes still running after Stop.
func (e *KCPEnvironment) Leaked() []string {
	var left []string
	if e.KCP != nil {
		left = append(left, e.KCP.Leaked()...)
	}
	if e.Physical != nil {
		left = append(left, e.Physical.Leaked()...)
	}
	return left
}

// Processes describes the bed's servers.
func (e *KCPEnvironment) Processes() []string {
	var out []string
	for name, pid := range e.KCP.Processes() {
		out = append(out, fmt.Sprintf("kcp/%s=%d", name, pid))
	}
	for name, pid := range e.Physical.Processes() {
		out = append(out, fmt.Sprintf("physical/%s=%d", name, pid))
	}
	return out
}

var sharedKCP struct {
	once sync.Once
	env  *KCPEnvironment
	err  error
}

// MainKCP is Main for the kcp flavour: it starts kcp and a physical cluster, runs
// the tests, stops the bed and checks that no server is left running.
func MainKCP(m *testing.M) int {
	return runBed(m, "kcp test bed", func(ctx context.Context) (*KCPEnvironment, error) {
		sharedKCP.once.Do(func() { sharedKCP.env, sharedKCP.err = StartKCPEnvironment(ctx) })
		return sharedKCP.env, sharedKCP.err
	})
}

// SharedKCP returns the bed started by MainKCP.
func SharedKCP(t testing.TB) *KCPEnvironment {
	t.Helper()
	if sharedKCP.env == nil {
		t.Fatal("framework: no kcp test bed; call framework.MainKCP from TestMain")
	}
	return sharedKCP.env
}
