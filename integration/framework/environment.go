package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment is the test bed: a "kcp" cluster that stands for the control plane
// (upstream, with the SyncTarget CRD) and a "physical" cluster (downstream).
type Environment struct {
	KCP      *Cluster
	Physical *Cluster
	// Root is the repository root, for tests that need its files.
	Root string

	dir string
}

// Start starts both clusters in parallel under a fresh temporary directory and
// installs the SyncTarget CRD upstream.
func Start(ctx context.Context) (_ *Environment, err error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	bins, err := binaries(ctx, root)
	if err != nil {
		return nil, err
	}
	// TMC_BED_ROOT lets a caller (the Makefile) find every process of this run by the
	// directory on its command line, without mistaking another run's for a leak.
	dir, err := os.MkdirTemp(os.Getenv("TMC_BED_ROOT"), "tmc-syncer-bed-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	env := &Environment{Root: root, dir: dir}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	var wg sync.WaitGroup
	var kcpErr, physErr error
	wg.Go(func() { env.KCP, kcpErr = StartCluster(ctx, "kcp", filepath.Join(dir, "kcp"), bins) })
	wg.Go(func() { env.Physical, physErr = StartCluster(ctx, "physical", filepath.Join(dir, "physical"), bins) })
	wg.Wait()
	if kcpErr != nil {
		return env, kcpErr
	}
	if physErr != nil {
		return env, physErr
	}
	if err := InstallCRDs(ctx, env.KCP.Config, filepath.Join(root, "config", "crds")); err != nil {
		return env, fmt.Errorf("cluster kcp: %w", err)
	}
	return env, nil
}

// Stop stops every process of the bed and removes its files, unless
// TMC_TEST_KEEP_DIR is set (then the logs stay for a post-mortem).
func (e *Environment) Stop() {
	var wg sync.WaitGroup
	for _, c := range []*Cluster{e.KCP, e.Physical} {
		if c != nil {
			wg.Go(c.Stop)
		}
	}
	wg.Wait()
	if os.Getenv("TMC_TEST_KEEP_DIR") == "" && e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// Leaked lists the bed's processes that are still running after Stop.
func (e *Environment) Leaked() []string {
	var left []string
	for _, c := range []*Cluster{e.KCP, e.Physical} {
		if c != nil {
			left = append(left, c.Leaked()...)
		}
	}
	return left
}

// Processes describes the bed's servers, e.g. "kcp/kube-apiserver=1234".
func (e *Environment) Processes() []string {
	var out []string
	for _, c := range []*Cluster{e.KCP, e.Physical} {
		if c == nil {
			continue
		}
		for name, pid := range c.Processes() {
			out = append(out, fmt.Sprintf("%s/%s=%d", c.Name, name, pid))
		}
	}
	return out
}

// shared is the bed of this test process, set once by Main. Tests reach it through
// Shared; starting one bed per process keeps the suite within seconds of start-up.
var shared struct {
	once sync.Once
	env  *Environment
	err  error
}

// Main starts the bed, runs the tests, stops the bed and checks that no server is
// left running. Use it from TestMain: os.Exit(framework.Main(m)).
func Main(m *testing.M) int {
	return runBed(m, "test bed", func(ctx context.Context) (*Environment, error) {
		shared.once.Do(func() { shared.env, shared.err = Start(ctx) })
		return shared.env, shared.err
	})
}

// bed is what runBed needs of a test bed.
type bed interface {
	Stop()
	Leaked() []string
	Processes() []string
}

// runBed starts a bed with start, runs the tests, stops the bed and checks that no
// server is left running; it returns the exit code.
func runBed[B bed](m *testing.M, name string, start func(context.Context) (B, error)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	began := time.Now()
	env, err := start(ctx)
	if err != nil {
		// Start and StartKCPEnvironment stop what they started when they fail.
		fmt.Fprintf(os.Stderr, "framework: %s did not start: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "framework: %s up in %s: %s\n", name, time.Since(began).Round(time.Millisecond), strings.Join(env.Processes(), " "))
	code := m.Run()
	env.Stop()
	if left := env.Leaked(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "framework: processes left running after teardown: %s\n", strings.Join(left, ", "))
		return 1
	}
	fmt.Fprintf(os.Stderr, "framework: %s stopped, no process left\n", name)
	return code
}

// Shared returns the bed started by Main.
func Shared(t testing.TB) *Environment {
	t.Helper()
	if shared.env == nil {
		t.Fatal("framework: no test bed; call framework.Main from TestMain")
	}
	return shared.env
}

// binaries finds the server binaries: in $TMC_TESTBIN_DIR when set, otherwise by
// running hack/testbin.sh, which builds what is missing and prints the directory.
func binaries(ctx context.Context, root string) (Binaries, error) {
	dir, err := testbinDir(ctx, root)
	if err != nil {
		return Binaries{}, err
	}
	return binariesIn(dir)
}

func testbinDir(ctx context.Context, root string) (string, error) {
	if dir := os.Getenv("TMC_TESTBIN_DIR"); dir != "" {
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "testbin.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/testbin.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func binariesIn(dir string) (Binaries, error) {
	b := Binaries{
		Etcd:                  filepath.Join(dir, "etcd"),
		KubeAPIServer:         filepath.Join(dir, "kube-apiserver"),
		KubeControllerManager: filepath.Join(dir, "kube-controller-manager"),
	}
	for _, p := range []string{b.Etcd, b.KubeAPIServer, b.KubeControllerManager} {
		if _, err := os.Stat(p); err != nil {
			return Binaries{}, fmt.Errorf("test binary missing (run `make testbin`): %w", err)
		}
	}
	return b, nil
}

// repoRoot finds the repository root from this source file's location, so tests
// work from any directory.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the framework's source file")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		return "", fmt.Errorf("repository root not found at %s: %w", root, err)
	}
	return root, nil
}
