package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tmc-syncer/syncer/integration/framework"
)

// supervisedSyncer runs the real syncer binary and, like a kubelet, starts it again
// whenever it exits (killed by the chaos, or giving up on its own).
type supervisedSyncer struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	killed   bool     // the last exit was our SIGKILL
	starts   int      // processes started
	selfExit []string // exits the syncer chose (exit codes), not our kills
	cancel   context.CancelFunc
	done     chan struct{}
}

func startSupervisedSyncer(t *testing.T, name, bin, logDir string, args []string) *supervisedSyncer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &supervisedSyncer{name: name, bin: bin, args: args, logPath: filepath.Join(logDir, name+".log"), cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	t.Cleanup(s.stop)
	return s
}

func (s *supervisedSyncer) run(ctx context.Context) {
	defer close(s.done)
	for ctx.Err() == nil {
		out, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return
		}
		cmd := exec.Command(s.bin, s.args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		_, _ = fmt.Fprintf(out, "==== chaos: start %s (#%d) at %s\n", s.name, s.starts+1, time.Now().Format(time.RFC3339Nano))
		if err := cmd.Start(); err != nil {
			_ = out.Close()
			return
		}
		s.mu.Lock()
		s.cmd, s.killed = cmd, false
		s.starts++
		s.mu.Unlock()
		waitErr := cmd.Wait()
		_ = out.Close()
		s.mu.Lock()
		killed := s.killed
		s.cmd = nil
		var ee *exec.ExitError
		if !killed && ctx.Err() == nil && errors.As(waitErr, &ee) {
			s.selfExit = append(s.selfExit, fmt.Sprintf("exit %d", ee.ExitCode()))
		}
		s.mu.Unlock()
		// A kubelet restarts at once after the first crash, then backs off; one second
		// is enough here.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// kill9 sends SIGKILL to the running process; the supervisor starts a new one.
func (s *supervisedSyncer) kill9() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return false
	}
	s.killed = true
	return s.cmd.Process.Kill() == nil
}

func (s *supervisedSyncer) stop() {
	s.cancel()
	s.kill9()
	<-s.done
}

// dumpGoroutines stops supervising and sends SIGQUIT: the Go runtime writes every
// goroutine's stack to the log (a wedged worker shows there) and exits.
func (s *supervisedSyncer) dumpGoroutines() {
	s.cancel()
	s.mu.Lock()
	if s.cmd != nil && s.cmd.Process != nil {
		s.killed = true
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}

func (s *supervisedSyncer) stats() (starts int, selfExits []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts, append([]string(nil), s.selfExit...)
}

func (s *supervisedSyncer) logTail(lines int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// chaosFaults injects one fault at a time at random moments, each healed before the
// next; every draw comes from its own seeded source.
type chaosFaults struct {
	t        *testing.T
	env      *framework.Environment
	rnd      *rand.Rand
	proxy    *framework.FaultProxy
	syncerA  *supervisedSyncer
	startB   func() *supervisedSyncer
	syncerB  *supervisedSyncer
	counts   map[string]int
	failures []string
	log      []string
}

type fault struct {
	name   string
	weight int
	apply  func(ctx context.Context, d time.Duration) error
}

func (f *chaosFaults) faults() []fault {
	restart := func(c *framework.Cluster) func(ctx context.Context, d time.Duration) error {
		return func(ctx context.Context, d time.Duration) error {
			c.StopAPIServer()
			sleepCtx(ctx, d)
			return c.StartAPIServer(context.Background())
		}
	}
	tunnel := func(m framework.FaultMode) func(ctx context.Context, d time.Duration) error {
		return func(ctx context.Context, d time.Duration) error {
			f.proxy.SetMode(m)
			sleepCtx(ctx, d)
			f.proxy.SetMode(framework.Pass)
			return nil
		}
	}
	return []fault{
		{"kill-9 syncer A", 4, func(ctx context.Context, _ time.Duration) error {
			f.syncerA.kill9()
			return nil
		}},
		{"kill-9 syncer B (the first time: start it)", 2, func(ctx context.Context, _ time.Duration) error {
			if f.syncerB == nil {
				f.syncerB = f.startB()
				return nil
			}
			f.syncerB.kill9()
			return nil
		}},
		{"restart physical kube-apiserver", 2, restart(f.env.Physical)},
		{"restart upstream kube-apiserver", 2, restart(f.env.KCP)},
		{"tunnel drop", 3, tunnel(framework.Drop)},
		{"tunnel stall", 3, tunnel(framework.Stall)},
		{"tunnel slow", 2, tunnel(framework.Slow)},
	}
}

// run injects faults until ctx ends, then makes sure every syncer runs.
func (f *chaosFaults) run(ctx context.Context, start time.Time) {
	all := f.faults()
	total := 0
	for _, x := range all {
		total += x.weight
	}
	// A fault every 2 to 8 s; the first "kill-9 syncer B" starts the second syncer.
	for sleepCtx(ctx, time.Duration(2000+f.rnd.IntN(6000))*time.Millisecond) {
		pick := f.rnd.IntN(total)
		var chosen fault
		for _, x := range all {
			if pick < x.weight {
				chosen = x
				break
			}
			pick -= x.weight
		}
		d := time.Duration(1000+f.rnd.IntN(7000)) * time.Millisecond
		at := time.Since(start).Round(100 * time.Millisecond)
		f.counts[chosen.name]++
		err := chosen.apply(ctx, d)
		f.log = append(f.log, fmt.Sprintf("%7s %s (%s)", at, chosen.name, d.Round(100*time.Millisecond)))
		if err != nil {
			f.failures = append(f.failures, fmt.Sprintf("%s: %v", chosen.name, err))
		}
	}
	f.proxy.SetMode(framework.Pass)
	if f.syncerB == nil {
		f.syncerB = f.startB()
		f.counts["start second syncer (B)"]++
	}
}

// sleepCtx sleeps d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
