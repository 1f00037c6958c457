// Package app holds the syncer's command line: the root command that runs the
// syncer, and the tunnel-server, heartbeat-monitor, manifests and version commands.
package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
)

// Execute runs the command line args and returns the process exit code. Errors are
// printed as one line on stderr, never as a stack trace.
func Execute(ctx context.Context, version string, args []string, stdout, stderr io.Writer) int {
	root := NewRootCommand(version, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "syncer: %s\n", oneLine(err))
	}
	return codeOf(err)
}

// NewRootCommand builds the `syncer` command tree.
func NewRootCommand(version string, stdout, stderr io.Writer) *cobra.Command {
	opts := options.New()
	root := &cobra.Command{
		Use:   "syncer",
		Short: "TMC Syncer: syncs workloads from a kcp-style control plane to one physical cluster",
		Long: "syncer runs next to one physical cluster, for one SyncTarget upstream: it syncs objects\n" +
			"labelled state.workload.kcp.io/<key>=Sync down, and their status and Events up.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Config != "" {
				if err := options.LoadConfig(cmd.Flags(), opts.Config); err != nil {
					return withCode(ExitConfig, err)
				}
			}
			if err := opts.Validate(); err != nil {
				return withCode(ExitUsage, err)
			}
			if err := configureLogging(opts.Verbosity, opts.VModule); err != nil {
				return withCode(ExitUsage, err)
			}
			return runSyncer(cmd.Context(), version, opts, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(ExitUsage, err) })
	opts.AddFlags(root.Flags())
	root.AddCommand(newVersionCommand(version), newManifestsCommand(version), newTunnelServerCommand(), newHeartbeatMonitorCommand(), newUpstreamRBACCommand(), newDNSCommand())
	return root
}

func newVersionCommand(version string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the syncer's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version)
			return err
		},
	}
}

// configureLogging applies klog's -v and --vmodule (kcp's syncer takes klog's flags).
func configureLogging(verbosity int, vmodule string) error {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	if err := fs.Set("v", strconv.Itoa(verbosity)); err != nil {
		return fmt.Errorf("-v: %w", err)
	}
	if vmodule != "" {
		if err := fs.Set("vmodule", vmodule); err != nil {
			return fmt.Errorf("--vmodule: %w", err)
		}
	}
	return nil
}

// oneLine joins a multi-line error (errors.Join) into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
