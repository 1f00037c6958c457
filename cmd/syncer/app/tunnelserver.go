package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/health"
	tunnelmetrics "github.com/tmc-syncer/syncer/modules/tunnel/metrics"
	"github.com/tmc-syncer/syncer/modules/tunnel/monitor"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
	"github.com/tmc-syncer/syncer/modules/tunnel/statuspage"
)

// tunnelServerOptions are the settings of `syncer tunnel-server`.
type tunnelServerOptions struct {
	bindAddress     string
	internalAddress string
	certFile        string
	keyFile         string
	clientCAFile    string
	insecure        bool
	kubeconfig      string
	context         string
	upstreamAddress string
	kcp             bool
	cluster         string
	reviewQPS       float32
	reviewBurst     int
	reviewTimeout   time.Duration
	tokenCacheTTL   time.Duration
	reauthorize     time.Duration
	verbosity       int
	vmodule         string
	maxConns        int
	maxConnsPerSrc  int
	writeTimeout    time.Duration
	syncerAudience  string
	replicas        replicaOptions
}

func newTunnelServerCommand() *cobra.Command {
	o := tunnelServerOptions{bindAddress: ":8443", internalAddress: "127.0.0.1:8444", reviewQPS: 50, reviewBurst: 100,
		reviewTimeout: server.DefaultReviewTimeout, tokenCacheTTL: server.DefaultTokenTTL,
		reauthorize: server.DefaultReauthorizePeriod, maxConns: server.DefaultMaxConnections,
		maxConnsPerSrc: server.DefaultMaxConnectionsPerSource, writeTimeout: server.DefaultWriteTimeout,
		syncerAudience: options.DefaultTunnelTokenAudience}
	cmd := &cobra.Command{
		Use:   "tunnel-server",
		Short: "Run the control-plane side of the tunnel that syncers dial out to",
		Long: "tunnel-server accepts one WebSocket per syncer at /tunnel/v1/clusters/<cluster>/synctargets/<name>,\n" +
			"connects the syncer's API streams to the control plane's API address only, and proxies\n" +
			"users' pod logs/exec/attach/port-forward requests to the physical cluster after a SubjectAccessReview;\n" +
			"with --kcp, <target>/proxy/clusters/<workspace>/api/v1/... reviews and maps in that workspace.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTunnelServer(cmd.Context(), o) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.bindAddress, "bind-address", o.bindAddress, "listen address")
	fs.StringVar(&o.internalAddress, "internal-bind-address", o.internalAddress, "listen address of /status, /status.json, /metrics (and the health endpoints), plain HTTP, off the public tunnel port; empty disables")
	fs.StringVar(&o.certFile, "tls-cert-file", "", "serving certificate")
	fs.StringVar(&o.keyFile, "tls-private-key-file", "", "serving key")
	fs.StringVar(&o.clientCAFile, "client-ca-file", "", "CA that signs client certificates (optional)")
	fs.BoolVar(&o.insecure, "insecure", false, "serve plain HTTP (tests only)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the control plane, for TokenReviews and SubjectAccessReviews (empty: in-cluster)")
	fs.StringVar(&o.context, "context", "", "context in --kubeconfig")
	fs.StringVar(&o.upstreamAddress, "upstream-address", "", "host:port syncer streams are connected to (default: the --kubeconfig server)")
	fs.BoolVar(&o.kcp, "kcp", false, "the control plane is kcp: review tokens in each SyncTarget's logical cluster, accept kcp's get on synctargets/tunnel, relay syncers' Events into their workspaces")
	fs.StringVar(&o.cluster, "cluster", "root", "logical cluster of SyncTargets without a kcp.io/cluster annotation (heartbeat monitor)")
	fs.Float32Var(&o.reviewQPS, "review-qps", o.reviewQPS, "TokenReviews and SubjectAccessReviews per second (their own client and budget, apart from the heartbeat monitor's)")
	fs.IntVar(&o.reviewBurst, "review-burst", o.reviewBurst, "burst of --review-qps")
	fs.DurationVar(&o.reviewTimeout, "review-timeout", o.reviewTimeout, "bound of each TokenReview and SubjectAccessReview")
	fs.DurationVar(&o.tokenCacheTTL, "token-cache-ttl", o.tokenCacheTTL, "how long an accepted token's identity is reused (refused tokens: a fifth of it, at least 1s)")
	fs.DurationVar(&o.reauthorize, "reauthorize-period", o.reauthorize, "how often a tunnel's token and RBAC are checked again; a revoked one is closed (negative disables)")
	fs.IntVarP(&o.verbosity, "v", "v", 0, "klog verbosity (2: refused Event relay requests; 4: every relayed Event)")
	fs.StringVar(&o.vmodule, "vmodule", "", "klog per-file verbosity, e.g. events=4")
	fs.StringVar(&o.syncerAudience, "syncer-token-audience", o.syncerAudience, "audience a syncer's handshake token must be bound to (TokenReview spec.audiences, confirmed in status.audiences), so that the tunnel server never holds a token the API server accepts; empty accepts syncers' upstream tokens (control planes that cannot issue bound tokens); client certificates are not affected")
	fs.IntVar(&o.maxConns, "max-connections", o.maxConns, "most TCP connections held at once, counted before TLS and authentication; more are closed at once")
	fs.IntVar(&o.maxConnsPerSrc, "max-connections-per-source", o.maxConnsPerSrc, "most TCP connections from one source IP address (syncers behind one NAT share one)")
	fs.DurationVar(&o.writeTimeout, "write-timeout", o.writeTimeout, "bound of each write of a response: a client that stops reading is cut off (tunnels and exec/attach/port-forward streams have none)")
	o.replicas.addFlags(fs)
	return cmd
}

func runTunnelServer(ctx context.Context, o tunnelServerOptions) error {
	if !o.insecure && (o.certFile == "" || o.keyFile == "") {
		return errorf(ExitUsage, "--tls-cert-file and --tls-private-key-file are required (or --insecure for tests)")
	}
	if err := configureLogging(o.verbosity, o.vmodule); err != nil {
		return errorf(ExitUsage, "%w", err)
	}
	applyMemoryLimit(klog.Background().WithName("tunnel-server"))
	if o.maxConns <= 0 || o.maxConnsPerSrc <= 0 || o.writeTimeout <= 0 {
		return errorf(ExitUsage, "--max-connections, --max-connections-per-source and --write-timeout must be positive")
	}
	if o.reviewQPS <= 0 || o.reviewBurst <= 0 || o.reviewTimeout <= 0 || o.tokenCacheTTL <= 0 {
		return errorf(ExitUsage, "--review-qps, --review-burst, --review-timeout and --token-cache-ttl must be positive")
	}
	cfg, err := loadConfig("kubeconfig", o.kubeconfig, o.context)
	if err != nil {
		return err
	}
	addr := o.upstreamAddress
	if addr == "" {
		u, err := url.Parse(cfg.Host)
		if err != nil || u.Host == "" {
			return errorf(ExitKubeconfig, "--kubeconfig: server %q is not a URL with a host", cfg.Host)
		}
		addr = u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		}
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
	}
	// Reviews get a client of their own: its rate budget is not the monitor's, and a slow
	// API server bounds each review instead of holding the request.
	reviewCfg := rest.CopyConfig(cfg)
	reviewCfg.QPS, reviewCfg.Burst, reviewCfg.Timeout = o.reviewQPS, o.reviewBurst, o.reviewTimeout
	reviewCfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(o.reviewQPS, max(o.reviewBurst, 1))
	reviewKube, err := kubernetes.NewForConfig(reviewCfg)
	if err != nil {
		return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
	}
	// TokenReviews run before the caller is known; with kcp they must not fill the
	// per-cluster client cache (names come from the request path).
	authnClusters, authzClusters := server.SingleCluster(reviewKube), server.SingleCluster(reviewKube)
	var events server.EventSink
	namespaces, workspaceNamespaces := syncTargetNamespaces(dyn), server.WorkspaceNamespaceMapper(nil)
	if o.kcp {
		kc, err := server.NewKCPClients(reviewCfg, server.DefaultMaxKCPClusters)
		if err != nil {
			return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
		}
		authnClusters, authzClusters = kc.Unauthenticated, kc.Authenticated
		// kcp's syncer virtual workspace serves no Events: the server writes the
		// syncers' Events into their workspaces (a plain hub takes them directly).
		ec, err := server.NewKCPClients(cfg, server.DefaultMaxKCPClusters)
		if err != nil {
			return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
		}
		sink, err := newKCPEventSink(cfg, ec)
		if err != nil {
			return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
		}
		events = sink
		// Users name the workspace of the pod (<target>/proxy/clusters/<workspace>/...);
		// without it, the namespace is one of the SyncTarget's own workspace.
		workspaceNamespaces = sink.WorkspaceNamespace
		namespaces = func(ctx context.Context, t tunnel.Target, ns string) (string, error) {
			return sink.WorkspaceNamespace(ctx, t, t.Cluster, ns)
		}
	}
	authn := server.NewCachedAuthenticator(server.NewTokenReviewAuthenticator(authnClusters), server.TokenCacheOptions{
		TTL: o.tokenCacheTTL, NegativeTTL: max(o.tokenCacheTTL/5, time.Second), Timeout: o.reviewTimeout,
	})
	// Syncer handshakes are reviewed for the tunnel's own audience, with a cache of their
	// own: an answer for one audience is never reused for the other.
	syncerAuthn := authn
	if o.syncerAudience != "" {
		syncerAuthn = server.NewCachedAuthenticator(server.NewTokenReviewAuthenticator(authnClusters, o.syncerAudience), server.TokenCacheOptions{
			TTL: o.tokenCacheTTL, NegativeTTL: max(o.tokenCacheTTL/5, time.Second), Timeout: o.reviewTimeout,
		})
	}
	ln, err := listen("bind-address", o.bindAddress)
	if err != nil {
		return err
	}
	log := klog.Background().WithName("tunnel-server")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registry := server.NewRegistry()
	var mon *monitor.Monitor
	rs, err := setUpReplicas(cfg, o.replicas, func(t tunnel.Target) {
		if mon != nil {
			mon.TunnelObserver().Connected(t, 0) // another replica's session came or went
		}
	}, log)
	if err != nil {
		_ = ln.Close()
		return err
	}
	// Sessions of every replica (from the Leases) for TunnelConnected and /status.
	var sessions interface {
		monitor.Sessions
		statuspage.Sessions
	} = registry
	var leading func() bool
	if rs != nil {
		sessions, leading = rs.replicas.Sessions(registry), rs.leading.Load
	}
	mon, err = newMonitor(dyn, o.cluster, registry, sessions, leading, reg, log)
	if err != nil {
		closeAll(ln, peerListener(rs))
		return err
	}
	tunnelMetrics, err := tunnelmetrics.NewTunnel(reg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	errs := statuspage.NewErrorLog(5, nil)
	page := statuspage.New(statuspage.Options{Targets: mon, Sessions: sessions, Errors: errs,
		Counter: statuspage.NewUpstreamCounter(meta, mon, statuspage.CounterOptions{})})
	checks := health.NewHandler()
	if !o.kcp {
		// Under kcp, kcp's own heartbeat controller judges SyncTargets (and the server's
		// identity need not list them in every workspace): no monitor to wait for.
		checks.AddReadyz(health.Synced("synctargets", mon.HasSynced))
	}
	var replicas *server.Replicas
	if rs != nil {
		checks.AddReadyz(health.Synced("session-leases", rs.replicas.HasSynced))
		replicas, rs.onLead = rs.replicas, mon.Resync
	}
	public, internal := tunnelServerHandlers(page, tunnelmetrics.Handler(reg), checks)
	internalLn, err := listen("internal-bind-address", o.internalAddress)
	if err != nil {
		_ = ln.Close()
		return err
	}
	srv, err := server.New(server.Options{
		Registry:            registry,
		Handler:             public,
		Observer:            tunnel.Observers(tunnelMetrics, mon.TunnelObserver(), errs),
		UpstreamAddress:     addr,
		Authenticator:       authn,
		SyncerAuthenticator: syncerAuthn,
		ReauthorizePeriod:   o.reauthorize,
		WriteTimeout:        o.writeTimeout,
		Limits:              server.Limits{MaxConnections: o.maxConns, MaxConnectionsPerSource: o.maxConnsPerSrc},
		Authorizer:          server.NewSubjectAccessReviewAuthorizer(authzClusters),
		NamespaceMapper:     namespaces,
		WorkspaceNamespaces: workspaceNamespaces,
		Events:              events,
		TunnelVerb:          tunnelVerb(o.kcp),
		Logger:              log,
		CertFile:            o.certFile,
		KeyFile:             o.keyFile,
		ClientCAFile:        o.clientCAFile,
		Insecure:            o.insecure,
		Replicas:            replicas,
	})
	if err != nil {
		closeAll(ln, internalLn, peerListener(rs))
		return errorf(ExitUsage, "tunnel server: %w", err)
	}
	log.Info("tunnel server listening", "address", ln.Addr().String(), "upstream", addr)
	if internalLn != nil {
		log.Info("status page and metrics listening", "address", internalLn.Addr().String())
	}
	g, gctx := errgroup.WithContext(ctx)
	if !o.kcp {
		g.Go(func() error { return mon.Run(gctx) })
	}
	if rs != nil {
		log.Info("running as one of several replicas", "advertise", o.replicas.advertiseAddress, "leaseNamespace", o.replicas.leaseNamespace)
		rs.run(gctx, srv, g)
	}
	g.Go(func() error { return serve(gctx, internalLn, internal) })
	g.Go(func() error {
		if err := srv.Serve(gctx, ln); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
	return ignoreCanceled(g.Wait())
}

// tunnelServerHandlers splits the tunnel server's own endpoints: the public tunnel port
// serves only the health endpoints (kubelet probes) next to the tunnels; the status page,
// which names every SyncTarget, user and address, and the metrics are on the internal
// listener only.
func tunnelServerHandlers(page, metrics, checks http.Handler) (public, internal http.Handler) {
	pub, in := http.NewServeMux(), http.NewServeMux()
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		pub.Handle(p, checks)
		in.Handle(p, checks)
	}
	in.Handle("/status", page)
	in.Handle("/status.json", page)
	in.Handle("/metrics", metrics)
	return pub, in
}

// newMonitor builds the heartbeat monitor: HeartbeatHealthy, TunnelConnected (when
// sessions is set) and Ready on every SyncTarget.
func newMonitor(dyn dynamic.Interface, cluster string, local *server.Registry, sessions monitor.Sessions, leading func() bool, reg prometheus.Registerer, log logr.Logger) (*monitor.Monitor, error) {
	var serverMetrics monitor.Observer
	if local != nil {
		m, err := tunnelmetrics.NewServer(reg, local)
		if err != nil {
			return nil, err
		}
		serverMetrics = m
	}
	opts := monitor.Options{Client: dyn, Cluster: cluster, Observer: serverMetrics, Leading: leading, Logger: log.WithName("heartbeat-monitor")}
	if sessions != nil {
		opts.Sessions = sessions
	}
	m, err := monitor.New(opts)
	if err != nil {
		return nil, errorf(ExitUsage, "heartbeat monitor: %w", err)
	}
	return m, nil
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func newHeartbeatMonitorCommand() *cobra.Command {
	var kubeconfig, kubeContext, cluster, healthAddr string
	cmd := &cobra.Command{
		Use:   "heartbeat-monitor",
		Short: "Set HeartbeatHealthy and Ready on SyncTargets whose syncer stopped heartbeating",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig("kubeconfig", kubeconfig, kubeContext)
			if err != nil {
				return err
			}
			dyn, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
			}
			ln, err := listen("health-bind-address", healthAddr)
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			mon, err := newMonitor(dyn, cluster, nil, nil, nil, reg, klog.Background())
			if err != nil {
				closeAll(ln)
				return err
			}
			checks := health.NewHandler()
			checks.AddReadyz(health.Synced("synctargets", mon.HasSynced))
			mux := http.NewServeMux()
			mux.Handle("/metrics", tunnelmetrics.Handler(reg))
			for _, p := range []string{"/livez", "/readyz", "/healthz"} {
				mux.Handle(p, checks)
			}
			g, gctx := errgroup.WithContext(cmd.Context())
			g.Go(func() error { return mon.Run(gctx) })
			g.Go(func() error { return serve(gctx, ln, mux) })
			return ignoreCanceled(g.Wait())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the control plane (empty: in-cluster)")
	fs.StringVar(&kubeContext, "context", "", "context in --kubeconfig")
	fs.StringVar(&cluster, "cluster", "root", "logical cluster of SyncTargets without a kcp.io/cluster annotation")
	fs.StringVar(&healthAddr, "health-bind-address", ":8081", "address of /livez, /readyz, /healthz and /metrics; empty disables")
	return cmd
}

// syncTargetNamespaces maps an upstream namespace to its downstream namespace for a
// SyncTarget, with the same algorithm the syncer uses (the locator needs the
// SyncTarget's UID, read from the control plane).
func syncTargetNamespaces(client dynamic.Interface) server.NamespaceMapper {
	return func(ctx context.Context, t tunnel.Target, upstreamNS string) (string, error) {
		st, err := client.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, t.Name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("SyncTarget %s: %w", t.Name, err)
		}
		return namespace.DownstreamName(namespace.Locator{
			SyncTarget: namespace.SyncTarget{Cluster: t.Cluster, Name: t.Name, UID: string(st.GetUID())},
			Cluster:    t.Cluster,
			Namespace:  upstreamNS,
		})
	}
}

// tunnelVerb is the verb on synctargets/tunnel that lets a syncer hold its tunnel:
// kcp's plugin grants get (for kcp's own syncer tunnel), our manifests update.
func tunnelVerb(kcp bool) string {
	if kcp {
		return "get"
	}
	return server.DefaultTunnelVerb
}
