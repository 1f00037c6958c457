package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tmc-syncer/syncer/integration/framework"
)

// syncerProcess is the real syncer binary, its output in a log file.
type syncerProcess struct {
	cmd         *exec.Cmd
	log         string
	metricsAddr string
	done        chan struct{}
	err         error
}

func startSyncer(bin, logDir, name string, args ...string) (*syncerProcess, error) {
	addr, err := framework.FreeAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args = append(args, "--metrics-bind-address="+addr, "--health-bind-address=127.0.0.1:0", "--profiling")
	p := &syncerProcess{log: logPath, metricsAddr: addr, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...) //nolint:gosec // the harness runs the syncer it was given
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start syncer: %w", err)
	}
	go func() { p.err = p.cmd.Wait(); _ = f.Close(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM and waits (SIGKILL after 25 s).
func (p *syncerProcess) stop() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(25 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports an unexpected exit, with the log's tail.
func (p *syncerProcess) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("syncer exited: %w; log %s:\n%s", p.err, p.log, tail(p.log, 20))
	default:
		return nil
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (p *syncerProcess) get(ctx context.Context, path string) (string, error) {
	return framework.HTTPGet(ctx, "http://"+p.metricsAddr+path)
}

// saveProfile writes a pprof profile of the syncer (e.g. "profile?seconds=10", "heap").
func (p *syncerProcess) saveProfile(ctx context.Context, kind, path string) error {
	body, err := p.get(ctx, "/debug/pprof/"+kind)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o600)
}

// procStat is what /proc says about a process.
type procStat struct {
	RSSMiB  float64 `json:"rss_mib"`
	HWMMiB  float64 `json:"peak_rss_mib"`
	CPUSecs float64 `json:"cpu_seconds"`
	// AnonMiB and FileMiB split RSS: anonymous memory (heap, stacks, runtime) and file
	// pages (the mapped binary).
	AnonMiB float64 `json:"rss_anon_mib"`
	FileMiB float64 `json:"rss_file_mib"`
}

func readProc(pid int) (procStat, error) {
	var s procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			s.RSSMiB = kb / 1024
		case "VmHWM:":
			s.HWMMiB = kb / 1024
		case "RssAnon:":
			s.AnonMiB = kb / 1024
		case "RssFile:":
			s.FileMiB = kb / 1024
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name (which may hold spaces): utime and stime are 14th and 15th.
	rest := string(stat)[strings.LastIndex(string(stat), ")")+2:]
	f := strings.Fields(rest)
	if len(f) > 12 {
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		s.CPUSecs = (ut + st) / 100 // USER_HZ is 100 on Linux
	}
	return s, nil
}

// cpuShares is the CPU time (seconds) of named processes, read from /proc.
type cpuShares map[string]float64

// readCPU reads the CPU time of each process (name → pid); a process that is gone
// counts 0.
func readCPU(pids map[string]int) cpuShares {
	out := cpuShares{}
	for name, pid := range pids {
		if s, err := readProc(pid); err == nil {
			out[name] += s.CPUSecs
		}
	}
	return out
}

// perObject returns, per process, the CPU milliseconds used between before and c,
// divided by n objects, as "name X.XX ms" sorted by name and ending with their total.
func (c cpuShares) perObject(before cpuShares, n int) string {
	names := make([]string, 0, len(c))
	for name := range c {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	total := 0.0
	for _, name := range names {
		ms := 1000 * (c[name] - before[name]) / float64(n)
		total += ms
		parts = append(parts, fmt.Sprintf("%s %.2f ms", name, ms))
	}
	return strings.Join(parts, ", ") + fmt.Sprintf("; total %.2f ms", total)
}
