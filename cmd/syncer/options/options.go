// Package options holds the syncer's settings: kcp's flag names plus ours, an
// optional YAML config file with the same keys (flags win), and validation that
// names the bad input.
package options

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Conflict policies for downstream objects the syncer does not own.
const (
	ConflictAbort     = "Abort"
	ConflictAdopt     = "Adopt"
	ConflictOverwrite = "Overwrite"
)

// Options are the settings of the syncer's root command.
type Options struct {
	FromKubeconfig string
	FromContext    string
	FromCluster    string
	ToKubeconfig   string
	ToContext      string

	SyncTargetName string
	SyncTargetUID  string
	Resources      []string

	QPS   float32
	Burst int

	DownstreamNamespaceCleanDelay time.Duration
	// DownstreamNamespaceRole is a ClusterRole the syncer binds to itself in every
	// downstream namespace it manages (a RoleBinding made when it first uses the
	// namespace); empty binds nothing (kcp's plugin grants everything cluster-wide).
	DownstreamNamespaceRole string

	TunnelURL    string
	TunnelCAFile string
	// TunnelInsecure allows an http:// --tunnel-url (tests, demos): the syncer's
	// upstream token would cross the network in clear text.
	TunnelInsecure bool
	// PodAPIBindAddress is where, with the tunnel under kcp, the syncer serves the API
	// endpoint pods reach their workspace through (a Service in Namespace points at it);
	// empty: pods reach kcp's address directly.
	PodAPIBindAddress string
	// PodAPISelector selects the syncer's pods for that Service (key=value pairs); empty
	// means the labels of the syncer's own Pod ($HOSTNAME in Namespace).
	PodAPISelector map[string]string
	// TunnelTokenAudience is the audience of the token the syncer requests (TokenRequest,
	// for its own upstream ServiceAccount) and shows the tunnel server; "" shows the
	// upstream token itself.
	TunnelTokenAudience string
	// TunnelTokenFile is a token to show the tunnel server instead (re-read on every
	// connection attempt), e.g. a projected ServiceAccount token with the tunnel's audience.
	TunnelTokenFile string
	// TunnelClientCertFile and TunnelClientKeyFile are a client certificate for the
	// tunnel server (mTLS); with them no token is shown unless TunnelTokenFile is set.
	TunnelClientCertFile, TunnelClientKeyFile string

	ConflictPolicy     string
	HealthBindAddress  string
	MetricsBindAddress string

	LeaderElect   bool
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration

	Workers        int
	EventRateLimit float64

	// Profiling serves net/http/pprof under /debug/pprof/ on the metrics listener.
	Profiling bool
	// GCPercent is the garbage collector's target (GOGC) unless the GOGC environment
	// variable is set.
	GCPercent int
	// ReleaseIdleMemory returns the memory of a busy phase to the operating system once
	// the syncer has gone quiet (cmd/syncer/internal/idlemem).
	ReleaseIdleMemory bool
	// UpstreamListPageSize is the page size of the upstream informers' lists, each page
	// trimmed before the next is read; 0 lists in one request (client-go's way). Under
	// kcp the informers list in one request whatever it says.
	UpstreamListPageSize int64

	// APIImportPollInterval is how often the physical cluster's schemas are
	// published upstream as APIResourceImports (kcp mode).
	APIImportPollInterval time.Duration
	// DNSImage is the image of the per-workspace DNS Deployments (kcp's --dns-image).
	DNSImage string
	// FeatureGates are kcp's --feature-gates, key=bool pairs; see KnownFeatureGates.
	FeatureGates map[string]bool
	// Verbosity is klog's -v.
	Verbosity int
	// VModule is klog's --vmodule.
	VModule string

	Config string
	// Namespace is the syncer's own namespace downstream (env NAMESPACE), where the
	// leader-election Lease lives.
	Namespace string
}

// DefaultGCPercent is --gc-percent's default: half Go's headroom. A syncer's live heap is
// mostly its caches, which change little; with Go's 100 % its resident memory is about
// twice its caches, with 50 % one and a half times, for more frequent collections while
// it is busy.
const DefaultGCPercent = 50

// New returns the defaults: kcp's where kcp has one.
func New() *Options {
	return &Options{
		FromCluster:                   "root",
		QPS:                           30,
		Burst:                         20,
		DownstreamNamespaceCleanDelay: 30 * time.Second,
		ConflictPolicy:                ConflictAbort,
		HealthBindAddress:             "127.0.0.1:8081",
		MetricsBindAddress:            "127.0.0.1:8080",
		LeaseDuration:                 15 * time.Second,
		RenewDeadline:                 10 * time.Second,
		RetryPeriod:                   2 * time.Second,
		Workers:                       4,
		ReleaseIdleMemory:             true,
		GCPercent:                     DefaultGCPercent,
		UpstreamListPageSize:          500,
		EventRateLimit:                20,
		APIImportPollInterval:         time.Minute,
		FeatureGates:                  map[string]bool{},
		Namespace:                     os.Getenv("NAMESPACE"),
		PodAPIBindAddress:             ":9443",
		TunnelTokenAudience:           DefaultTunnelTokenAudience,
	}
}

// DefaultTunnelTokenAudience is the audience of the syncer's tunnel token (the tunnel
// server's --syncer-token-audience).
const DefaultTunnelTokenAudience = "tmc-syncer-tunnel"

// AddFlags registers every setting on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.FromKubeconfig, "from-kubeconfig", o.FromKubeconfig, "kubeconfig of the control plane (upstream)")
	fs.StringVar(&o.FromContext, "from-context", o.FromContext, "context in --from-kubeconfig to use")
	fs.StringVar(&o.FromCluster, "from-cluster", o.FromCluster, "logical cluster of the SyncTarget, and of upstream objects without a kcp.io/cluster annotation")
	fs.StringVar(&o.ToKubeconfig, "to-kubeconfig", o.ToKubeconfig, "kubeconfig of the physical cluster (downstream); empty means in-cluster")
	fs.StringVar(&o.ToContext, "to-context", o.ToContext, "context in --to-kubeconfig to use")
	fs.StringVar(&o.SyncTargetName, "sync-target-name", o.SyncTargetName, "name of the SyncTarget this syncer serves")
	fs.StringVar(&o.SyncTargetUID, "sync-target-uid", o.SyncTargetUID, "UID of the SyncTarget; the syncer refuses to run when it differs")
	fs.StringSliceVarP(&o.Resources, "resources", "r", o.Resources, "resources to sync, e.g. deployments.apps,services (configmaps, secrets, serviceaccounts are always synced)")
	fs.Float32Var(&o.QPS, "qps", o.QPS, "client QPS per cluster")
	fs.IntVar(&o.Burst, "burst", o.Burst, "client burst per cluster")
	fs.DurationVar(&o.DownstreamNamespaceCleanDelay, "downstream-namespace-clean-delay", o.DownstreamNamespaceCleanDelay, "how long an emptied downstream namespace stays before it is deleted")
	fs.StringVar(&o.DownstreamNamespaceRole, "downstream-namespace-role", o.DownstreamNamespaceRole, "ClusterRole the syncer binds to its own identity in each downstream namespace it manages (`syncer manifests` grants its writes only through it); empty binds nothing")
	fs.StringVar(&o.TunnelURL, "tunnel-url", o.TunnelURL, "https URL of the tunnel server; empty means no tunnel")
	fs.StringVar(&o.TunnelCAFile, "tunnel-ca-file", o.TunnelCAFile, "CA bundle that signs the tunnel server's certificate")
	fs.BoolVar(&o.TunnelInsecure, "tunnel-insecure", o.TunnelInsecure, "allow an http:// --tunnel-url (the upstream token then crosses the network in clear text; tests and demos only)")
	fs.StringVar(&o.PodAPIBindAddress, "pod-api-bind-address", o.PodAPIBindAddress, "with --tunnel-url under kcp: address of the HTTPS endpoint that forwards pods' API requests, with their own token, through the tunnel to their workspace; empty: pods reach kcp's address directly")
	fs.StringToStringVar(&o.PodAPISelector, "pod-api-selector", o.PodAPISelector, "labels of the syncer's pods, for the pod API Service (default: the labels of the syncer's own Pod)")
	fs.StringVar(&o.TunnelTokenAudience, "tunnel-token-audience", o.TunnelTokenAudience, "audience of the short-lived token the syncer requests for its own upstream ServiceAccount (TokenRequest, straight to the upstream API) and shows the tunnel server instead of its upstream token; empty shows the upstream token itself")
	fs.StringVar(&o.TunnelTokenFile, "tunnel-token-file", o.TunnelTokenFile, "token file shown to the tunnel server instead (re-read on every connection attempt), e.g. a projected ServiceAccount token with the tunnel's audience")
	fs.StringVar(&o.TunnelClientCertFile, "tunnel-client-cert-file", o.TunnelClientCertFile, "client certificate for the tunnel server (mTLS); then no token is shown unless --tunnel-token-file is set")
	fs.StringVar(&o.TunnelClientKeyFile, "tunnel-client-key-file", o.TunnelClientKeyFile, "key of --tunnel-client-cert-file")
	fs.StringVar(&o.ConflictPolicy, "conflict-policy", o.ConflictPolicy, "what to do with a downstream object that is not ours: Abort, Adopt or Overwrite")
	fs.StringVar(&o.HealthBindAddress, "health-bind-address", o.HealthBindAddress, "address of /livez, /readyz, /healthz; empty disables")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "address of /metrics; empty disables")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader among replicas through a Lease in $NAMESPACE downstream")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", o.LeaseDuration, "how long a leader's lease lasts without renewal")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", o.RenewDeadline, "how long the leader retries renewing before it gives up")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", o.RetryPeriod, "how often candidates try to acquire the lease")
	fs.IntVar(&o.Workers, "workers", o.Workers, "workers per controller")
	fs.Float64Var(&o.EventRateLimit, "event-rate-limit", o.EventRateLimit, "Events per second forwarded upstream (global token bucket)")
	fs.BoolVar(&o.Profiling, "profiling", o.Profiling, "serve pprof profiles under /debug/pprof/ on --metrics-bind-address, which must then be a loopback address")
	fs.IntVar(&o.GCPercent, "gc-percent", o.GCPercent, "garbage collection target: the heap may grow this many percent over the live heap before the next collection (Go's GOGC, whose default is 100; the GOGC environment variable, when set, wins)")
	fs.BoolVar(&o.ReleaseIdleMemory, "release-idle-memory", o.ReleaseIdleMemory, "once the syncer is quiet after a busy phase (start-up, resync), collect garbage once and return the free memory to the operating system")
	fs.Int64Var(&o.UpstreamListPageSize, "upstream-list-page-size", o.UpstreamListPageSize, "objects per page of the upstream informers' lists, each page trimmed for the cache before the next is read (bounds the memory of a full list); 0: one request, from the API server's watch cache. Not used under kcp")
	fs.StringVar(&o.Config, "config", o.Config, "YAML file with the same settings, keyed by flag name; flags given on the command line win")
	fs.DurationVar(&o.APIImportPollInterval, "api-import-poll-interval", o.APIImportPollInterval, "how often the physical cluster's schemas are published upstream as APIResourceImports (under kcp)")
	fs.StringVar(&o.DNSImage, "dns-image", o.DNSImage, "image of the per-workspace DNS servers (kcp's flag): one DNS server per workspace in the syncer's namespace; empty: none")
	fs.Var(&featureGates{o.FeatureGates}, "feature-gates", "kcp feature gates, key=bool pairs separated by commas: "+strings.Join(KnownFeatureGates, ", "))
	fs.IntVarP(&o.Verbosity, "v", "v", o.Verbosity, "log verbosity (klog's -v)")
	fs.StringVar(&o.VModule, "vmodule", o.VModule, "per-file log verbosity, pattern=N pairs separated by commas (klog's --vmodule)")
}

// KnownFeatureGates are the kcp v0.11 feature gates kcp's syncer Deployment may
// pass. They are accepted so that kcp's generated install runs unmodified; what
// each means for this syncer is in docs/kcp.md.
var KnownFeatureGates = []string{
	"KCPLocationAPI", "KCPSyncerTunnel",
	"AdvancedAuditing", "APIResponseCompression", "APIListChunking", "DryRun",
	"ServerSideApply", "APIPriorityAndFairness", "CustomResourceValidationExpressions",
	"AllAlpha", "AllBeta",
}

// featureGates is a pflag.Value of key=bool pairs, as kcp's --feature-gates.
type featureGates struct{ m map[string]bool }

func (f *featureGates) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f.m))
	for k := range f.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%t", k, f.m[k])
	}
	return strings.Join(parts, ",")
}

func (f *featureGates) Set(value string) error {
	for _, pair := range strings.Split(value, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("%q is not key=bool", pair)
		}
		k = strings.TrimSpace(k)
		if !slices.Contains(KnownFeatureGates, k) {
			return fmt.Errorf("unknown feature gate %q (known: %s)", k, strings.Join(KnownFeatureGates, ", "))
		}
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("feature gate %s: %q is not a bool", k, v)
		}
		f.m[k] = b
	}
	return nil
}

func (f *featureGates) Type() string { return "mapStringBool" }

// IsLoopback reports whether the host of addr (host:port) is a loopback address or
// "localhost"; an empty host (all interfaces) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidationError is bad input, with the setting it concerns.
type ValidationError struct {
	Setting string
	Reason  string
}

func (e *ValidationError) Error() string { return fmt.Sprintf("--%s: %s", e.Setting, e.Reason) }

// Validate checks every setting and returns all problems, each naming its flag.
func (o *Options) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &ValidationError{Setting: setting, Reason: fmt.Sprintf(format, args...)})
	}
	if o.SyncTargetName == "" {
		bad("sync-target-name", "required")
	}
	if o.FromKubeconfig == "" {
		bad("from-kubeconfig", "required")
	}
	if o.QPS <= 0 {
		bad("qps", "must be positive, got %v", o.QPS)
	}
	if o.Burst <= 0 {
		bad("burst", "must be positive, got %d", o.Burst)
	}
	if o.GCPercent <= 0 {
		bad("gc-percent", "must be positive, got %d", o.GCPercent)
	}
	if o.UpstreamListPageSize < 0 {
		bad("upstream-list-page-size", "must not be negative, got %d", o.UpstreamListPageSize)
	}
	if o.Workers <= 0 {
		bad("workers", "must be positive, got %d", o.Workers)
	}
	if o.EventRateLimit <= 0 {
		bad("event-rate-limit", "must be positive, got %v", o.EventRateLimit)
	}
	if o.APIImportPollInterval <= 0 {
		bad("api-import-poll-interval", "must be positive, got %s", o.APIImportPollInterval)
	}
	if o.Verbosity < 0 {
		bad("v", "must not be negative, got %d", o.Verbosity)
	}
	if o.DownstreamNamespaceCleanDelay < 0 {
		bad("downstream-namespace-clean-delay", "must not be negative, got %s", o.DownstreamNamespaceCleanDelay)
	}
	if o.DownstreamNamespaceRole != "" {
		// RBAC names are path segments.
		if r := o.DownstreamNamespaceRole; r == "." || r == ".." || strings.ContainsAny(r, "/%") {
			bad("downstream-namespace-role", "%q is not a ClusterRole name", r)
		}
	}
	switch o.ConflictPolicy {
	case ConflictAbort, ConflictAdopt, ConflictOverwrite:
	default:
		bad("conflict-policy", "must be Abort, Adopt or Overwrite, got %q", o.ConflictPolicy)
	}
	for _, r := range o.Resources {
		if strings.TrimSpace(r) == "" || strings.ContainsAny(r, " /") {
			bad("resources", "%q is not a resource[.group]", r)
		}
	}
	if o.TunnelURL != "" {
		u, err := url.Parse(o.TunnelURL)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			bad("tunnel-url", "%q is not an http(s) URL with a host", o.TunnelURL)
		case u.Scheme == "http" && !o.TunnelInsecure:
			bad("tunnel-url", "%q is plain http: the upstream token would cross the network in clear text; use https, or --tunnel-insecure for a test", o.TunnelURL)
		}
	}
	if o.TunnelInsecure && o.TunnelURL == "" {
		bad("tunnel-insecure", "set without --tunnel-url")
	}
	if o.TunnelCAFile != "" && o.TunnelURL == "" {
		bad("tunnel-ca-file", "set without --tunnel-url")
	}
	if o.TunnelTokenFile != "" && o.TunnelURL == "" {
		bad("tunnel-token-file", "set without --tunnel-url")
	}
	if (o.TunnelClientCertFile == "") != (o.TunnelClientKeyFile == "") {
		bad("tunnel-client-cert-file", "--tunnel-client-cert-file and --tunnel-client-key-file go together")
	}
	if o.TunnelClientCertFile != "" && o.TunnelURL == "" {
		bad("tunnel-client-cert-file", "set without --tunnel-url")
	}
	for setting, addr := range map[string]string{"health-bind-address": o.HealthBindAddress, "metrics-bind-address": o.MetricsBindAddress, "pod-api-bind-address": o.PodAPIBindAddress} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(setting, "%q is not host:port", addr)
		}
	}
	if o.Profiling && o.MetricsBindAddress == "" {
		bad("profiling", "needs --metrics-bind-address")
	} else if o.Profiling && !IsLoopback(o.MetricsBindAddress) {
		// Profiles show memory and command lines: never to the network.
		bad("profiling", "needs a loopback --metrics-bind-address (127.0.0.1, ::1 or localhost), got %q", o.MetricsBindAddress)
	}
	if o.LeaderElect {
		if o.Namespace == "" {
			bad("leader-elect", "needs the syncer's namespace in env NAMESPACE")
		}
		if o.LeaseDuration <= o.RenewDeadline {
			bad("leader-elect-lease-duration", "must be longer than --leader-elect-renew-deadline (%s <= %s)", o.LeaseDuration, o.RenewDeadline)
		}
		if o.RenewDeadline <= o.RetryPeriod {
			bad("leader-elect-renew-deadline", "must be longer than --leader-elect-retry-period (%s <= %s)", o.RenewDeadline, o.RetryPeriod)
		}
	}
	return errors.Join(errs...)
}
