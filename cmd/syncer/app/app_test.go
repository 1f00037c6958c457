package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/tmc-syncer/syncer/modules/engine/status"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Execute(context.Background(), "v1.2.3", args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestBadInputEndsWithOneLineAndItsExitCode(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.kubeconfig")
	require.NoError(t, os.WriteFile(garbage, []byte("this is not a kubeconfig"), 0o600))
	cfg := filepath.Join(dir, "typo.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("sync-target: x\n"), 0o600))

	unreachable := filepath.Join(dir, "unreachable.kubeconfig")
	require.NoError(t, os.WriteFile(unreachable, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unreachable upstream", []string{"--sync-target-name=a", "--from-kubeconfig=" + unreachable, "--to-kubeconfig=" + unreachable,
			"--health-bind-address=", "--metrics-bind-address="}, ExitUnreachable, "upstream https://127.0.0.1:1 unreachable"},
		{"unknown flag", []string{"--bogus"}, ExitUsage, "unknown flag: --bogus"},
		{"missing required", []string{}, ExitUsage, "--sync-target-name: required; --from-kubeconfig: required"},
		{"bad policy", []string{"--sync-target-name=a", "--from-kubeconfig=x", "--conflict-policy=x"}, ExitUsage, "--conflict-policy"},
		{"bad URL", []string{"--sync-target-name=a", "--from-kubeconfig=x", "--tunnel-url=::"}, ExitUsage, "--tunnel-url"},
		{"config typo", []string{"--config=" + cfg}, ExitConfig, `unknown setting "sync-target"`},
		{"missing kubeconfig", []string{"--sync-target-name=a", "--from-kubeconfig=" + filepath.Join(dir, "none")}, ExitKubeconfig, "--from-kubeconfig"},
		{"unreadable kubeconfig", []string{"--sync-target-name=a", "--from-kubeconfig=" + garbage}, ExitKubeconfig, "--from-kubeconfig " + garbage},
		{"manifests without target", []string{"manifests", "--from-kubeconfig=x"}, ExitUsage, "--sync-target-name: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			assert.Equal(t, tt.code, code, stderr)
			assert.Contains(t, stderr, tt.want)
			assert.Equal(t, 1, bytes.Count([]byte(stderr), []byte("\n")), "one line: %q", stderr)
			assert.NotContains(t, stderr, "goroutine", "no stack trace")
		})
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := run(t, "version")
	assert.Equal(t, ExitOK, code)
	assert.Equal(t, "v1.2.3\n", stdout)
}

func TestLeaseNameIsAValidNameAndPerTarget(t *testing.T) {
	n := leaseName("root", "eu-1")
	assert.Empty(t, validation.IsDNS1123Subdomain(n), n)
	assert.Equal(t, n, leaseName("root", "eu-1"))
	assert.NotEqual(t, n, leaseName("root", "eu-2"))
}

// TestDeployBasesUseOnlyExistingFlags keeps deploy/ consistent with the commands:
// every flag in a container's args exists on the command it runs.
func TestDeployBasesUseOnlyExistingFlags(t *testing.T) {
	root := NewRootCommand("test", io.Discard, io.Discard)
	for _, file := range []string{"../../../deploy/tunnel-server/tunnel-server.yaml", "../../../deploy/syncer/syncer.yaml"} {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		found := 0
		for _, doc := range strings.Split(string(data), "\n---\n") {
			var obj struct {
				Kind string `json:"kind"`
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Args []string `json:"args"`
							} `json:"containers"`
						} `json:"spec"`
					} `json:"template"`
				} `json:"spec"`
			}
			require.NoError(t, yaml.Unmarshal([]byte(doc), &obj), file)
			if obj.Kind != "Deployment" {
				continue
			}
			for _, c := range obj.Spec.Template.Spec.Containers {
				cmd, rest, err := root.Find(c.Args)
				require.NoError(t, err, file)
				for _, arg := range rest {
					if !strings.HasPrefix(arg, "--") {
						continue
					}
					name, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
					assert.NotNil(t, cmd.Flags().Lookup(name), "%s: %q has no flag --%s", file, cmd.Name(), name)
					found++
				}
			}
		}
		assert.Positive(t, found, "%s has container flags", file)
	}
}

func TestSyncerReadyTurnsFalseOnlyWhenAWholeRoundFails(t *testing.T) {
	snap := func(ok, failed int64, lastErr string) status.Snapshot {
		return status.Snapshot{Resources: []status.Resource{{
			GVR: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, ReconcilesOK: ok, ReconcilesFailed: failed,
			LastError: lastErr, LastErrorTime: time.Unix(failed, 0),
		}}}
	}
	tests := []struct {
		name      string
		prev, cur status.Snapshot
		want      string
	}{
		{"nothing happened", snap(10, 2, "old"), snap(10, 2, "old"), ""},
		{"all succeeded", snap(10, 2, "old"), snap(15, 2, "old"), ""},
		{"some failed, some succeeded", snap(10, 2, "old"), snap(12, 5, "conflict"), ""},
		{"every reconcile failed", snap(10, 2, "old"), snap(10, 9, "forbidden"), "all 7 reconciles since the last heartbeat failed; last error: configmaps: forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := systemicError(totals(tt.prev), totals(tt.cur))
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestWaitDrainedBoundsTheShutdown checks the drain after the shutdown signal: components
// that stop in time end in exit 0, a failure keeps its error, and components that
// ignore the signal are given up on after the grace period.
func TestWaitDrainedBoundsTheShutdown(t *testing.T) {
	stopsOnSignal := func(ctx context.Context) func() error {
		return func() error { <-ctx.Done(); return ctx.Err() }
	}
	tests := []struct {
		name     string
		signal   bool
		wait     func(ctx context.Context) func() error
		wantCode int
		wantErr  string
	}{
		{name: "drains on signal", signal: true, wait: stopsOnSignal, wantCode: ExitOK},
		{name: "component fails", wait: func(context.Context) func() error {
			return func() error { return errors.New("informer exploded") }
		}, wantCode: ExitFailure, wantErr: "informer exploded"},
		{name: "ignores the signal", signal: true, wait: func(context.Context) func() error {
			return func() error { select {} }
		}, wantCode: ExitFailure, wantErr: "did not stop within 50ms of the shutdown signal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.signal {
				cancel()
			}
			err := waitDrained(ctx, tt.wait(ctx), 50*time.Millisecond)
			assert.Equal(t, tt.wantCode, codeOf(err))
			if tt.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tt.wantErr)
			}
		})
	}
}

func TestPodAPIURLIsTheUpstreamServerWithoutPath(t *testing.T) {
	for host, want := range map[string]string{
		"https://kcp.example:6443":                 "https://kcp.example:6443",
		"https://kcp.example:6443/clusters/root:a": "https://kcp.example:6443",
		"kcp.example:6443":                         "https://kcp.example:6443",
		"http://127.0.0.1:8080/":                   "http://127.0.0.1:8080",
		"":                                         "",
		"ftp://x":                                  "",
	} {
		got, err := podAPIURL(host)
		if want == "" {
			require.Error(t, err, host)
			continue
		}
		require.NoError(t, err, host)
		assert.Equal(t, want, got.String(), host)
	}
}
