// Command bench is `make bench` / `make bench-quick`: it starts the integration test
// bed (two clusters), runs the end-to-end benchmark scenarios P1–P11 against the
// syncer binary, then K1/K2/K5 on a real kcp bed next to kcp's own syncer, and
// writes <out>/<UTC timestamp>.md and .json. It fails only when the harness breaks
// or a syncer crashes, never on a missed goal.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tmc-syncer/syncer/integration/bench"
	"github.com/tmc-syncer/syncer/integration/framework"
)

func main() {
	quick := flag.Bool("quick", false, "small sizes (CI): proves the harness runs")
	syncerBin := flag.String("syncer", "bin/syncer", "syncer binary")
	out := flag.String("out", "bench/results", "directory of the results")
	only := flag.String("only", "", "comma-separated scenario steps to run, by the start of their name (e.g. P8); empty runs all")
	sessions := flag.Int("sessions", 0, "P8's number of sessions (0: the mode's)")
	kcpObjects := flag.Int("kcp-objects", 0, "K1's number of ConfigMaps (0: the mode's)")
	p1Objects := flag.Int("p1-objects", 0, "P1's number of ConfigMaps (0: the mode's)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *quick, *syncerBin, *out, *only, *sessions, *kcpObjects, *p1Objects); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, quick bool, syncerBin, out, only string, sessions, kcpObjects, p1Objects int) error {
	cfg, command := bench.Full(), "make bench"
	if quick {
		cfg, command = bench.Quick(), "make bench-quick"
	}
	if only != "" {
		cfg.Only = strings.Split(only, ",")
		command += " (only " + only + ")"
	}
	if sessions > 0 {
		cfg.Sessions = sessions
	}
	if kcpObjects > 0 {
		cfg.KCPObjects = kcpObjects
	}
	if p1Objects > 0 {
		cfg.P1Objects = p1Objects
		command += fmt.Sprintf(" (P1 %d objects)", p1Objects)
	}
	bin, err := filepath.Abs(syncerBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("syncer binary: %w (run `make build`)", err)
	}
	cfg.SyncerBin = bin
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "tmc-syncer-bench-")
	if err != nil {
		return err
	}
	cfg.WorkDir = work
	start := time.Now()
	env, err := framework.Start(ctx)
	if err != nil {
		return err
	}
	defer func() {
		env.Stop()
		if left := env.Leaked(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "bench: processes left running: %s\n", strings.Join(left, ", "))
		}
	}()
	cfg.Root = env.Root
	fmt.Printf("bench: test bed up in %s; syncer logs and profiles in %s\n", time.Since(start).Round(time.Millisecond), work)
	rep, err := bench.Run(ctx, env, cfg, os.Stdout)
	if rep != nil && len(rep.Rows) > 0 {
		path, werr := rep.Write(out, command)
		if werr != nil {
			return werr
		}
		fmt.Printf("\n%s\nbench: wrote %s and .json\n", rep.Markdown(command), path)
	}
	return err
}
