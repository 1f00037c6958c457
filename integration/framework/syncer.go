package framework

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncerBuild holds the syncer binary, built once per test process from cmd/syncer.
var syncerBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// SyncerBinary builds cmd/syncer of the repository at root once per test process
// and returns the binary's path.
func SyncerBinary(t testing.TB, root string) string {
	t.Helper()
	syncerBuild.once.Do(func() {
		syncerBuild.dir, syncerBuild.err = os.MkdirTemp("", "tmc-syncer-bin-")
		if syncerBuild.err != nil {
			return
		}
		syncerBuild.path = filepath.Join(syncerBuild.dir, "syncer")
		cmd := exec.Command("go", "build", "-o", syncerBuild.path, ".")
		cmd.Dir = filepath.Join(root, "cmd", "syncer")
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			syncerBuild.err = fmt.Errorf("build syncer: %w\n%s", err, b)
		}
	})
	if syncerBuild.err != nil {
		t.Fatal(syncerBuild.err)
	}
	return syncerBuild.path
}

// RemoveSyncerBinary deletes the binary SyncerBinary built, if any.
func RemoveSyncerBinary() {
	if syncerBuild.dir != "" {
		_ = os.RemoveAll(syncerBuild.dir)
	}
}

// LockedBuffer collects a child process's output while tests read it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// SyncerProcess is a program (the syncer binary, kcp's syncer) the test runs.
type SyncerProcess struct {
	Cmd    *exec.Cmd
	Output *LockedBuffer
	done   chan struct{}
	err    error
}

// StartSyncer runs bin with args (and env added to the test's environment); it is
// killed when the test ends, and its output is logged if the test failed.
func StartSyncer(t testing.TB, bin string, env []string, args ...string) *SyncerProcess {
	t.Helper()
	p, err := startProgram(bin, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), p.Output.String())
		}
	})
	return p
}

// startProgram runs bin with args (and env added to this process's environment), its
// output collected in Output; it dies with this process.
func startProgram(bin string, env []string, args ...string) (*SyncerProcess, error) {
	p := &SyncerProcess{Output: &LockedBuffer{}, done: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Output, p.Output
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	return p, nil
}

// Stop kills the process and waits for it.
func (p *SyncerProcess) Stop() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// ExitCode waits up to within for the process to exit and returns its exit code.
func (p *SyncerProcess) ExitCode(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s did not exit within %s; output:\n%s", p.Cmd.Path, within, p.Output.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.Cmd.Path, p.err)
	}
	return 0
}

// Exited reports whether the process has ended, and how.
func (p *SyncerProcess) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}
