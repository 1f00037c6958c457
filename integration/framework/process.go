package framework

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// process is one server binary of the bed, run in its own process group so that
// stopping it also stops anything it started.
type process struct {
	name    string
	cmd     *exec.Cmd
	logFile string
	done    chan struct{} // closed once the process has been reaped
	exitErr error
}

// startProcess runs bin with args, writing its output to <dir>/<name>.log. The child
// gets SIGKILL when the test process dies (Pdeathsig), so a panic or a `go test`
// timeout does not leave servers behind.
func startProcess(dir, name, bin string, args ...string) (*process, error) {
	logFile := filepath.Join(dir, name+".log")
	out, err := os.Create(logFile)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		_ = out.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (and process group id) of the server.
func (p *process) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.exitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs it.
// kube-apiserver can hang for over a minute on SIGTERM once etcd is gone, so the
// grace is short and the kill is certain.
func (p *process) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Whatever else the group started goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// alive reports whether any process of the group still exists.
func (p *process) alive() bool {
	err := syscall.Kill(-p.cmd.Process.Pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// logTail returns the last lines of the process's log, for error messages.
func (p *process) logTail(lines int) string {
	b, err := os.ReadFile(p.logFile)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
