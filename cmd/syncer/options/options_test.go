package options

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func valid() *Options {
	o := New()
	o.SyncTargetName = "eu-1"
	o.FromKubeconfig = "/kubeconfig"
	return o
}

func TestValidateNamesEachBadSetting(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Options)
		want   string // empty: valid
	}{
		{"defaults with required settings", func(*Options) {}, ""},
		{"missing sync target", func(o *Options) { o.SyncTargetName = "" }, "--sync-target-name: required"},
		{"missing upstream kubeconfig", func(o *Options) { o.FromKubeconfig = "" }, "--from-kubeconfig: required"},
		{"zero qps", func(o *Options) { o.QPS = 0 }, "--qps: must be positive"},
		{"negative burst", func(o *Options) { o.Burst = -1 }, "--burst: must be positive"},
		{"no workers", func(o *Options) { o.Workers = 0 }, "--workers: must be positive"},
		{"no event rate", func(o *Options) { o.EventRateLimit = 0 }, "--event-rate-limit: must be positive"},
		{"no gc percent", func(o *Options) { o.GCPercent = 0 }, "--gc-percent: must be positive"},
		{"negative list page size", func(o *Options) { o.UpstreamListPageSize = -1 }, "--upstream-list-page-size: must not be negative"},
		{"lists in one request", func(o *Options) { o.UpstreamListPageSize = 0 }, ""},
		{"negative clean delay", func(o *Options) { o.DownstreamNamespaceCleanDelay = -time.Second }, "--downstream-namespace-clean-delay"},
		{"namespace role", func(o *Options) { o.DownstreamNamespaceRole = "tmc-syncer:ns:namespace" }, ""},
		{"namespace role with slash", func(o *Options) { o.DownstreamNamespaceRole = "a/b" }, `--downstream-namespace-role: "a/b" is not a ClusterRole name`},
		{"unknown policy", func(o *Options) { o.ConflictPolicy = "Steal" }, `--conflict-policy: must be Abort, Adopt or Overwrite, got "Steal"`},
		{"adopt policy", func(o *Options) { o.ConflictPolicy = ConflictAdopt }, ""},
		{"resource with slash", func(o *Options) { o.Resources = []string{"apps/deployments"} }, `--resources: "apps/deployments" is not a resource[.group]`},
		{"tunnel URL without scheme", func(o *Options) { o.TunnelURL = "tunnel:443" }, "--tunnel-url"},
		{"tunnel URL ftp", func(o *Options) { o.TunnelURL = "ftp://x" }, "--tunnel-url"},
		{"tunnel URL https", func(o *Options) { o.TunnelURL = "https://tunnel.example:8443" }, ""},
		{"tunnel URL http", func(o *Options) { o.TunnelURL = "http://tunnel.example:8080" }, "is plain http"},
		{"tunnel URL http, insecure allowed", func(o *Options) { o.TunnelURL, o.TunnelInsecure = "http://tunnel.example:8080", true }, ""},
		{"insecure without tunnel", func(o *Options) { o.TunnelInsecure = true }, "--tunnel-insecure: set without --tunnel-url"},
		{"CA without tunnel", func(o *Options) { o.TunnelCAFile = "/ca" }, "--tunnel-ca-file: set without --tunnel-url"},
		{"tunnel token file without tunnel", func(o *Options) { o.TunnelTokenFile = "/t" }, "--tunnel-token-file: set without --tunnel-url"},
		{"client cert without key", func(o *Options) { o.TunnelURL, o.TunnelClientCertFile = "https://t", "/c" }, "go together"},
		{"client cert without tunnel", func(o *Options) { o.TunnelClientCertFile, o.TunnelClientKeyFile = "/c", "/k" }, "--tunnel-client-cert-file: set without --tunnel-url"},
		{"bad health address", func(o *Options) { o.HealthBindAddress = "8081" }, "--health-bind-address"},
		{"health disabled", func(o *Options) { o.HealthBindAddress = "" }, ""},
		{"profiling without metrics listener", func(o *Options) { o.Profiling, o.MetricsBindAddress = true, "" }, "--profiling: needs --metrics-bind-address"},
		{"profiling", func(o *Options) { o.Profiling = true }, ""},
		{"profiling on every interface", func(o *Options) { o.Profiling, o.MetricsBindAddress = true, ":8080" }, "--profiling: needs a loopback --metrics-bind-address"},
		{"profiling on a public address", func(o *Options) { o.Profiling, o.MetricsBindAddress = true, "10.0.0.1:8080" }, "--profiling: needs a loopback"},
		{"profiling on IPv6 loopback", func(o *Options) { o.Profiling, o.MetricsBindAddress = true, "[::1]:8080" }, ""},
		{"profiling on localhost", func(o *Options) { o.Profiling, o.MetricsBindAddress = true, "localhost:0" }, ""},
		{"leader election without namespace", func(o *Options) { o.LeaderElect = true; o.Namespace = "" }, "needs the syncer's namespace"},
		{"lease shorter than renew", func(o *Options) {
			o.LeaderElect, o.Namespace, o.LeaseDuration = true, "ns", 5*time.Second
		}, "--leader-elect-lease-duration"},
		{"leader election ok", func(o *Options) { o.LeaderElect, o.Namespace = true, "ns" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.change(o)
			err := o.Validate()
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestFlagsKeepKcpNamesAndDefaults(t *testing.T) {
	fs := pflag.NewFlagSet("syncer", pflag.ContinueOnError)
	New().AddFlags(fs)
	for flag, def := range map[string]string{
		"from-kubeconfig": "", "from-context": "", "from-cluster": "root", "to-kubeconfig": "", "to-context": "",
		"sync-target-name": "", "sync-target-uid": "", "resources": "[]", "qps": "30", "burst": "20",
		"downstream-namespace-clean-delay": "30s", "conflict-policy": "Abort",
	} {
		f := fs.Lookup(flag)
		require.NotNil(t, f, "flag --%s", flag)
		assert.Equal(t, def, f.DefValue, "default of --%s", flag)
	}
}

func TestConfigFileFillsWhatFlagsDoNotSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "syncer.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
sync-target-name: from-file
qps: 50
resources: [deployments.apps, services]
downstream-namespace-clean-delay: 1m
leader-elect: true
conflict-policy: Adopt
`), 0o600))
	o := New()
	fs := pflag.NewFlagSet("syncer", pflag.ContinueOnError)
	o.AddFlags(fs)
	require.NoError(t, fs.Parse([]string{"--sync-target-name=from-flag", "--config=" + path}))
	require.NoError(t, LoadConfig(fs, path))

	assert.Equal(t, "from-flag", o.SyncTargetName, "a flag on the command line wins")
	assert.InDelta(t, 50, o.QPS, 0)
	assert.Equal(t, []string{"deployments.apps", "services"}, o.Resources)
	assert.Equal(t, time.Minute, o.DownstreamNamespaceCleanDelay)
	assert.True(t, o.LeaderElect)
	assert.Equal(t, ConflictAdopt, o.ConflictPolicy)
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"not YAML", write("bad.yaml", "qps: [1"), "not YAML"},
		{"unknown key", write("typo.yaml", "qsp: 5"), `unknown setting "qsp"`},
		{"bad value", write("value.yaml", "qps: fast"), "qps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("syncer", pflag.ContinueOnError)
			New().AddFlags(fs)
			err := LoadConfig(fs, tt.path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// kcp v0.11's `kubectl kcp workload sync` writes these args into the syncer's
// Deployment (plus klog's -v from users who add it); every one must parse with
// kcp's meaning.
func TestKcpGeneratedDeploymentArgsParse(t *testing.T) {
	args := []string{
		"--from-kubeconfig=/kcp/kubeconfig",
		"--sync-target-name=eu-1",
		"--sync-target-uid=8a3c2d6e-0000-4000-8000-000000000001",
		"--from-cluster=2x7q1m0bd0fa2fz6",
		"--api-import-poll-interval=1m0s",
		"--downstream-namespace-clean-delay=30s",
		"--resources=configmaps",
		"--resources=deployments.apps",
		"-r", "services",
		"--qps=20",
		"--burst=30",
		"--feature-gates=KCPSyncerTunnel=true,KCPLocationAPI=false",
		"--dns-image=ghcr.io/kcp-dev/kcp/syncer:v0.11.0",
		"-v=4",
	}
	o := New()
	fs := pflag.NewFlagSet("syncer", pflag.ContinueOnError)
	o.AddFlags(fs)
	require.NoError(t, fs.Parse(args))
	require.NoError(t, o.Validate())
	assert.Equal(t, []string{"configmaps", "deployments.apps", "services"}, o.Resources)
	assert.Equal(t, time.Minute, o.APIImportPollInterval)
	assert.Equal(t, map[string]bool{"KCPSyncerTunnel": true, "KCPLocationAPI": false}, o.FeatureGates)
	assert.Equal(t, "ghcr.io/kcp-dev/kcp/syncer:v0.11.0", o.DNSImage)
	assert.Equal(t, 4, o.Verbosity)
	assert.Equal(t, "2x7q1m0bd0fa2fz6", o.FromCluster)
	assert.InDelta(t, 20, o.QPS, 0)
	assert.Equal(t, 30, o.Burst)
}

func TestFeatureGatesRejectWhatKcpRejects(t *testing.T) {
	tests := []struct {
		value string
		want  string
	}{
		{"KCPSyncerTunnel", "is not key=bool"},
		{"NoSuchGate=true", `unknown feature gate "NoSuchGate"`},
		{"KCPSyncerTunnel=maybe", "is not a bool"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			fs := pflag.NewFlagSet("syncer", pflag.ContinueOnError)
			New().AddFlags(fs)
			err := fs.Parse([]string{"--feature-gates=" + tt.value})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestListenersDefaultToLoopback(t *testing.T) {
	o := New()
	assert.Equal(t, "127.0.0.1:8081", o.HealthBindAddress)
	assert.Equal(t, "127.0.0.1:8080", o.MetricsBindAddress)
	assert.True(t, IsLoopback(o.HealthBindAddress))
	assert.True(t, IsLoopback(o.MetricsBindAddress))
	assert.False(t, IsLoopback(":8080"))
}
