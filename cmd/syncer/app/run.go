package app

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
	"github.com/tmc-syncer/syncer/modules/downstream"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/downstream/dns"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	tunnelclient "github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/health"
	"github.com/tmc-syncer/syncer/modules/tunnel/heartbeat"
	tunnelmetrics "github.com/tmc-syncer/syncer/modules/tunnel/metrics"
	"github.com/tmc-syncer/syncer/modules/upstream"
	"github.com/tmc-syncer/syncer/modules/upstream/apiimport"
	"github.com/tmc-syncer/syncer/modules/upstream/events"
	"github.com/tmc-syncer/syncer/modules/upstream/upsync"
)

// wedgedAfter is how long workers may finish no reconcile while work is queued
// before /livez fails (the process is then restarted by its probe).
const wedgedAfter = 2 * time.Minute

// firstHeartbeatWait bounds how long the first heartbeat waits for the caches.
const firstHeartbeatWait = 30 * time.Second

// shutdownGrace bounds how long components may take to drain after SIGTERM.
const shutdownGrace = 20 * time.Second

// runSyncer starts every component of the syncer under one errgroup and blocks
// until ctx ends (exit 0 after draining) or one of them fails (that error).
func runSyncer(ctx context.Context, version string, opts *options.Options, _ io.Writer) error {
	log := klog.Background().WithValues("syncTarget", opts.FromCluster+"|"+opts.SyncTargetName)
	log.Info("starting", "version", version)
	applyMemoryLimit(log)
	applyGCPercent(log, opts.GCPercent, os.Getenv, debug.SetGCPercent)
	upCfg, err := loadConfig("from-kubeconfig", opts.FromKubeconfig, opts.FromContext)
	if err != nil {
		return err
	}
	directUp := rest.CopyConfig(upCfg) // before the tunnel: how pods' requests reach the API
	downCfg, err := loadConfig("to-kubeconfig", opts.ToKubeconfig, opts.ToContext)
	if err != nil {
		return err
	}
	// Pods of synced workloads reach their workspace where the syncer does (kcp's
	// syncer takes the kubeconfig's host too): kcp's external address.
	podAPI, err := podAPIURL(upCfg.Host)
	if err != nil {
		return err
	}
	clientOpts := clients.Options{QPS: opts.QPS, Burst: opts.Burst, Version: version}
	downCfg = clients.Configure(downCfg, clientOpts)

	// Bind before anything starts, so a port in use ends the process with nothing
	// half-started.
	healthLn, err := listen("health-bind-address", opts.HealthBindAddress)
	if err != nil {
		return err
	}
	metricsLn, err := listen("metrics-bind-address", opts.MetricsBindAddress)
	if err != nil {
		closeAll(healthLn)
		return err
	}
	// With the tunnel, pods reach their workspace through the syncer (under kcp).
	var podAPILn net.Listener
	if opts.TunnelURL != "" {
		if podAPILn, err = listen("pod-api-bind-address", opts.PodAPIBindAddress); err != nil {
			closeAll(healthLn, metricsLn)
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tunnelMetrics, err := tunnelmetrics.NewTunnel(reg)
	if err != nil {
		closeAll(healthLn, metricsLn, podAPILn)
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	state := &syncState{}
	var tun *tunnelclient.Client
	var relay *rest.Config // the tunnel server's Event relay (used under kcp)
	if opts.TunnelURL != "" {
		if tun, relay, err = newTunnelClient(opts, upCfg, downCfg, state.managedNamespace, tunnelMetrics, log); err != nil {
			closeAll(healthLn, metricsLn, podAPILn)
			return err
		}
		upCfg = tun.UpstreamConfig(upCfg)
		g.Go(func() error {
			if err := tun.Run(gctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, tunnelclient.ErrStopped) {
				return fmt.Errorf("tunnel: %w", err)
			}
			return nil
		})
	}
	upCfg = clients.Configure(upCfg, clientOpts)

	upKube, err := kubernetes.NewForConfig(upCfg)
	if err != nil {
		closeAll(healthLn, metricsLn, podAPILn)
		return errorf(ExitKubeconfig, "--from-kubeconfig: %w", err)
	}
	checks := health.NewHandler()
	state.watchdog = health.NewWatchdog(wedgedAfter, state.pending, nil)
	checks.AddLivez(state.watchdog.Check())
	checks.AddReadyz(
		health.Synced("informers", state.synced),
		// One upstream request per upstreamCheckTTL at most, however often the kubelet
		// or anyone else probes.
		health.Cached(health.Reachable("upstream", health.RESTPinger(upKube.Discovery().RESTClient(), "/readyz")), upstreamCheckTTL, nil),
	)
	if tun != nil {
		checks.AddReadyz(health.TunnelConnected(tun))
	}
	g.Go(func() error { return serve(gctx, metricsLn, metricsHandler(reg, opts.Profiling)) })
	if opts.ReleaseIdleMemory {
		g.Go(func() error { releaseIdleMemory(gctx, log); return nil })
	}
	g.Go(func() error { return serve(gctx, healthLn, checks) })

	g.Go(func() error {
		checkCtx, cancel := context.WithTimeout(gctx, time.Minute+virtualWorkspaceWait)
		defer cancel()
		up, err := resolveUpstream(checkCtx, upCfg, opts.FromCluster, opts.SyncTargetName, opts.SyncTargetUID)
		if err != nil {
			return err
		}
		if up.KCP {
			log.Info("control plane is kcp: syncing through its syncer virtual workspace", "syncTargetWorkspace", up.SyncTarget.Host, "virtualWorkspace", up.Workloads.Host)
		} else if err := checkResources(upKube.Discovery(), opts.Resources); err != nil {
			// Under kcp the virtual workspace serves what kcp accepted from our API
			// imports; on a plain hub a typo must not look like a pending resource.
			return err
		}
		log.V(1).Info("control plane checked", "kcp", up.KCP)
		var mutator *downstream.PodMutatorOptions
		switch {
		case up.KCP && podAPILn != nil:
			downKube, err := kubernetes.NewForConfig(downCfg)
			if err != nil {
				return err
			}
			if mutator, err = startPodAPI(gctx, g, opts, directUp, tun.DialContext, downKube, podAPILn, log); err != nil {
				return err
			}
		case up.KCP:
			mutator = &downstream.PodMutatorOptions{APIURL: podAPI}
		default:
			closeAll(podAPILn)
		}
		if mutator != nil {
			// With the tunnel, the pods a workload makes go up, so pod logs work from the workspace.
			mutator.UpsyncPods = UpsyncPods(opts)
		}
		sync := func(ctx context.Context) error {
			return runSync(ctx, opts, up, downCfg, upKube, relay, reg, state, mutator, log)
		}
		if opts.LeaderElect {
			return runLeaderElected(gctx, opts, downCfg, sync, log)
		}
		return sync(gctx)
	})

	if err := waitDrained(ctx, g.Wait, shutdownGrace); err != nil || ctx.Err() == nil {
		return err
	}
	log.Info("stopped on signal")
	return nil
}

// waitDrained waits for wait (the components' errgroup) to return. Once ctx ends
// (the shutdown signal) the components have grace to drain; after that it gives up
// on them with an error. A signal-driven stop returns nil; a component's failure
// returns its classified error.
func waitDrained(ctx context.Context, wait func() error, grace time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case err = <-done:
		case <-timer.C:
			return errorf(ExitFailure, "components did not stop within %s of the shutdown signal", grace)
		}
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return classify(err)
}

// runSync runs the engine and the downstream and upstream syncers until ctx ends.
// Under kcp, podMutator makes the pods of synced workloads talk to their workspace.
func runSync(ctx context.Context, opts *options.Options, upCfgs upstreamConfigs, downCfg *rest.Config, upKube kubernetes.Interface, relay *rest.Config, reg prometheus.Registerer, p *syncState, podMutator *downstream.PodMutatorOptions, log logr.Logger) error {
	up, err := engine.ClientsFor(upCfgs.Workloads)
	if err != nil {
		return err
	}
	stClient, err := dynamic.NewForConfig(upCfgs.SyncTarget)
	if err != nil {
		return err
	}
	down, err := engine.ClientsFor(downCfg)
	if err != nil {
		return err
	}
	downKube, err := kubernetes.NewForConfig(downCfg)
	if err != nil {
		return err
	}
	// Events go straight to a plain hub; under kcp only through the tunnel server's relay.
	eventsKube := upKube
	if upCfgs.KCP {
		eventsKube = nil
		if relay != nil {
			if eventsKube, err = kubernetes.NewForConfig(relay); err != nil {
				return fmt.Errorf("event relay client: %w", err)
			}
		}
	}
	if eventsKube != nil {
		// kcp's plugin grants no Events on the physical cluster; forwarding them is then
		// off, with a warning, rather than a syncer that never becomes ready.
		if ok, why := mayWatchEvents(ctx, downKube); !ok {
			log.Info("WARNING: Events of synced objects are not forwarded upstream: the syncer may not list and watch events on the physical cluster (grant it, see docs/kcp.md)", "reason", why)
			eventsKube = nil
		}
	}
	eng, err := engine.New(engine.Config{
		SyncTargetName:    opts.SyncTargetName,
		SyncTargetUID:     types.UID(opts.SyncTargetUID),
		FromCluster:       opts.FromCluster,
		SyncTargetCluster: upCfgs.Cluster,
		Resources:         opts.Resources,
		Registry:          reg,
		SyncTarget:        stClient,
		KCP:               upCfgs.KCP,
		// kcp v0.11's syncer virtual workspace is listed as kcp's syncer lists it.
		UpstreamListPageSize: upstreamListPageSize(opts, upCfgs.KCP),
	}, up, down)
	if err != nil {
		return errorf(ExitUsage, "%w", err)
	}
	// The downstream controllers run on the engine's informers and follow its
	// resource set; they must be registered before the engine runs.
	dsClients := downstream.Clients{Upstream: up.Dynamic, Downstream: down.Dynamic}
	if !upCfgs.KCP {
		// kcp's syncer virtual workspace serves no Events (and the syncer may write
		// nothing else in the user's workspace): sync errors stay in the annotation.
		dsClients.UpstreamEvents = upKube
	}
	// Per-workspace DNS (--dns-image, kcp's flag): its Nameserver is what the pod mutator
	// gives pods, and a workload waits until its workspace's DNS is ready, as under kcp.
	dnsImage := opts.DNSImage
	if dnsImage != "" && opts.Namespace == "" {
		log.Info("--dns-image is set but env NAMESPACE is not: per-workspace DNS is off (its objects live in the syncer's namespace)")
		dnsImage = ""
	}
	workspaceDNS, err := dns.Register(eng, dns.Config{
		FromCluster: opts.FromCluster, Namespace: opts.Namespace, Image: dnsImage, Kube: downKube,
	})
	if err != nil {
		return err
	}
	if podMutator != nil {
		withDNS := *podMutator
		withDNS.Nameservers = workspaceDNS
		podMutator = &withDNS
	}
	ds, err := downstream.Register(eng, dsClients,
		downstream.Options{
			ConflictPolicy:      conflict.Policy(opts.ConflictPolicy),
			NamespaceCleanDelay: opts.DownstreamNamespaceCleanDelay,
			Workers:             opts.Workers,
			FromCluster:         opts.FromCluster,
			Registerer:          reg,
			PodMutator:          podMutator,
			NamespaceGrant:      namespaceGrant(ctx, opts.DownstreamNamespaceRole, downKube, log),
		})
	if err != nil {
		return err
	}
	defer ds.Close()
	p.setEngine(eng)
	heartbeatMetrics, err := tunnelmetrics.NewHeartbeat(reg, nil)
	if err != nil {
		return err
	}
	hb, err := heartbeat.New(heartbeat.Options{
		Client:   stClient.Resource(workloadv1alpha1.SyncTargetsResource),
		Name:     opts.SyncTargetName,
		UID:      types.UID(opts.SyncTargetUID),
		Ready:    p.ready,
		Observer: heartbeatMetrics,
		Logger:   log.WithName("heartbeat"),
	})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return eng.Run(gctx) })
	g.Go(func() error { return workspaceDNS.Run(gctx) })
	if upCfgs.KCP {
		imp, err := newAPIImporter(gctx, opts, eng.Target(), stClient, downCfg, downKube)
		if err != nil {
			return err
		}
		g.Go(func() error { return imp.Run(gctx) })
	}
	// Upsync (issue 16 §3). With --tunnel-url the pod mutator labels pod templates Upsync
	// (UpsyncPods), so the pods the physical cluster makes from synced workloads are
	// carried up by this controller (pod logs from the workspace).
	us, err := newUpsyncer(opts, upCfgs, up.Dynamic, down.Dynamic, eng, log)
	if err != nil {
		return err
	}
	if us != nil {
		g.Go(func() error {
			select {
			case <-eng.Ready():
			case <-gctx.Done():
				return nil
			}
			return us.Run(gctx)
		})
	}
	g.Go(func() error { p.watchProgress(gctx, 5*time.Second); return nil })
	g.Go(func() error {
		// The first heartbeat waits (up to firstHeartbeatWait) for the caches, so it
		// reports SyncerReady as it is rather than "not synced yet" for a whole period.
		_ = wait.PollUntilContextTimeout(gctx, 100*time.Millisecond, firstHeartbeatWait, true,
			func(context.Context) (bool, error) { return p.synced(), nil })
		return hb.Run(gctx)
	})
	g.Go(func() error {
		select {
		case <-eng.Ready():
		case <-gctx.Done():
			return nil
		}
		// The upstream syncers follow the resource set: under kcp it grows as kcp
		// accepts our API imports; on a plain hub as CRDs appear. A changed set
		// restarts them on the new one (the informers are the engine's and stay).
		for {
			gvrs := eng.Resources().Accepted().GVRs()
			log.Info("resources resolved", "resources", fmt.Sprint(gvrs))
			us, err := upstream.New(upstream.Config{
				Target:      eng.Target(),
				FromCluster: opts.FromCluster,
				Resources:   gvrs,
				Upstream:    upstream.Clients{Dynamic: up.Dynamic, Kube: eventsKube},
				Downstream:  upstream.Clients{Dynamic: down.Dynamic, Kube: downKube, Metadata: down.Metadata},
				Informers:   eng.Informers(),
				Registry:    reg,
				Options: upstream.Options{
					StatusWorkers: opts.Workers,
					Events:        events.Options{Limits: events.Limits{QPS: opts.EventRateLimit}},
					// kcp's syncer virtual workspace serves no Events, and the syncer's
					// ServiceAccount may write nothing else in the user's workspace: under
					// kcp, Events go up only through the tunnel server's Event relay.
					DisableEvents: eventsKube == nil,
				},
			})
			if err != nil {
				return err
			}
			p.setUpstream(us)
			runCtx, stop := context.WithCancel(gctx)
			done := make(chan error, 1)
			go func() { done <- us.Run(runCtx) }()
			changed := waitForChange(runCtx, resourceSetPoll, gvrs, func() []schema.GroupVersionResource { return eng.Resources().Accepted().GVRs() })
			stop()
			if err := <-done; err != nil {
				return err
			}
			if !changed {
				return nil
			}
		}
	})
	return g.Wait()
}

// UpsyncPods says whether pod templates are labelled Upsync by the pod mutator: with the
// tunnel on, as kcp's syncer does with its SyncerTunnel feature, so that upsynced pods
// give the workspace pod logs.
func UpsyncPods(opts *options.Options) bool { return opts.TunnelURL != "" }

// newUpsyncer wires the upsync controller: under kcp through the upsyncer virtual
// workspace (status.virtualWorkspaces[].upsyncerURL), on a plain hub with the hub's
// client. Under a kcp that advertises no upsyncer there is none (nil).
func newUpsyncer(opts *options.Options, upCfgs upstreamConfigs, hub, downDyn dynamic.Interface, eng *engine.Engine, log logr.Logger) (*upsync.Controller, error) {
	upClient := hub
	if upCfgs.KCP {
		if upCfgs.Upsyncer == nil {
			log.Info("kcp advertises no upsyncer virtual workspace: objects labelled Upsync stay downstream")
			return nil, nil
		}
		var err error
		if upClient, err = dynamic.NewForConfig(upCfgs.Upsyncer); err != nil {
			return nil, err
		}
	}
	c, err := upsync.New(upsync.Config{
		Target:      eng.Target(),
		FromCluster: opts.FromCluster,
		KCP:         upCfgs.KCP,
		Informers:   eng.Informers(),
		Upstream:    upClient,
		Downstream:  downDyn,
		Workers:     opts.Workers,
	})
	if err != nil {
		return nil, errorf(ExitUsage, "%w", err)
	}
	return c, nil
}

// resourceSetPoll is how often the upstream syncers look for a changed resource set.
const resourceSetPoll = 2 * time.Second

// waitForChange polls current until it differs from was (true) or ctx ends (false).
func waitForChange(ctx context.Context, every time.Duration, was []schema.GroupVersionResource, current func() []schema.GroupVersionResource) bool {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			if !slices.Equal(was, current()) {
				return true
			}
		}
	}
}

// newAPIImporter publishes the physical cluster's schemas of --resources as kcp
// APIResourceImports in the SyncTarget's workspace, from which kcp's controllers
// compute status.syncedResources; it also sets SyncerAuthorized (with kcp's "*"
// access check: kcp's plugin grants "*") and APIImporterReady.
func newAPIImporter(ctx context.Context, opts *options.Options, target identity.Target, stClient dynamic.Interface, downCfg *rest.Config, downKube kubernetes.Interface) (*apiimport.Importer, error) {
	grs, err := resources.Parse(opts.Resources)
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(downCfg)
	if err != nil {
		return nil, err
	}
	downDyn, err := dynamic.NewForConfig(downCfg)
	if err != nil {
		return nil, err
	}
	return apiimport.New(apiimport.Options{
		Target:    target,
		Resources: grs,
		Upstream:  stClient,
		Downstream: apiimport.Downstream{
			Discovery: disc,
			OpenAPI:   disc.OpenAPIV3WithContext(ctx),
			Dynamic:   downDyn,
			Kube:      downKube,
		},
		PollInterval: opts.APIImportPollInterval,
		Verbs:        []string{"*"},
	})
}

// runLeaderElected runs sync only while this replica holds the Lease in the
// syncer's namespace downstream; losing the lease ends the process (its
// replacement starts clean), as controllers usually do.
func runLeaderElected(ctx context.Context, opts *options.Options, downCfg *rest.Config, sync func(context.Context) error, log logr.Logger) error {
	kube, err := kubernetes.NewForConfig(downCfg)
	if err != nil {
		return err
	}
	id, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	id = fmt.Sprintf("%s_%d", id, os.Getpid())
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: opts.Namespace, Name: leaseName(opts.FromCluster, opts.SyncTargetName)},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	var syncErr error
	lost := errors.New("lost the leader lease")
	leCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.RenewDeadline,
		RetryPeriod:     opts.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            "tmc-syncer",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading", "identity", id)
				syncErr = sync(ctx)
				cancel(syncErr)
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					cancel(lost)
				}
			},
			OnNewLeader: func(identity string) { log.Info("leader", "identity", identity) },
		},
	})
	if err != nil {
		return errorf(ExitUsage, "leader election: %w", err)
	}
	le.Run(leCtx)
	if cause := context.Cause(leCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return syncErr
}

// leaseName names the leader-election Lease of a SyncTarget's replicas: a valid DNS
// subdomain (the syncTargetKey itself is mixed-case base62).
func leaseName(cluster, name string) string {
	sum := sha256.Sum256([]byte(identity.SyncTargetKey(cluster, name)))
	return "tmc-syncer-" + hex.EncodeToString(sum[:8])
}

// newTunnelClient returns the tunnel client and the configuration of its server's Event
// relay, which takes the same server certificate and the same credential.
func newTunnelClient(opts *options.Options, upCfg, downCfg *rest.Config, managed tunnelclient.ManagedNamespace, obs tunnel.Observer, log logr.Logger) (*tunnelclient.Client, *rest.Config, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TunnelCAFile != "" {
		pem, err := os.ReadFile(opts.TunnelCAFile)
		if err != nil {
			return nil, nil, errorf(ExitUsage, "--tunnel-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, errorf(ExitUsage, "--tunnel-ca-file %s: no PEM certificate in it", opts.TunnelCAFile)
		}
		tlsCfg.RootCAs = pool
	}
	token, err := tunnelCredential(opts, upCfg, tlsCfg, log)
	if err != nil {
		return nil, nil, err
	}
	// Only pods (and objects) this syncer synced are reachable, not whatever else is in its namespaces.
	owned := identity.NewTarget(opts.FromCluster, opts.SyncTargetName, types.UID(opts.SyncTargetUID)).DownstreamLabels()
	handler, err := tunnelclient.NewDownstreamHandler(downCfg, managed, log, tunnelclient.RequireLabels(owned))
	if err != nil {
		return nil, nil, err
	}
	c, err := tunnelclient.New(tunnelclient.Options{
		ServerURL: opts.TunnelURL,
		Target:    tunnel.Target{Cluster: opts.FromCluster, Name: opts.SyncTargetName},
		Token:     token,
		TLSConfig: tlsCfg,
		Handler:   handler,
		Observer:  obs,
		Logger:    log.WithName("tunnel"),
	})
	if err != nil {
		return nil, nil, errorf(ExitUsage, "--tunnel-url: %w", err)
	}
	target := tunnel.Target{Cluster: opts.FromCluster, Name: opts.SyncTargetName}
	return c, eventRelayConfig(opts.TunnelURL, target, tlsCfg, token, upCfg), nil
}

// classify maps a component's failure to its exit code.
func classify(err error) error {
	var mismatch *identity.UIDMismatchError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mismatch):
		return withCode(ExitSyncTarget, err)
	default:
		return withCode(ExitFailure, err)
	}
}

// upstreamCheckTTL is how long the readiness check's upstream answer is reused.
const upstreamCheckTTL = 15 * time.Second

func listen(flag, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errorf(ExitAddressInUse, "--%s %s: %w", flag, addr, err)
	}
	return ln, nil
}

func closeAll(lns ...net.Listener) {
	for _, ln := range lns {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// serve serves h on ln until ctx ends; a nil listener (disabled) serves nothing.
// metricsHandler serves /metrics and, with profiling, net/http/pprof under /debug/pprof/.
func metricsHandler(reg *prometheus.Registry, profiling bool) http.Handler {
	h := tunnelmetrics.Handler(reg)
	if !profiling {
		return h
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	if ln == nil {
		return nil
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// podAPIURL is the address pods reach their workspace API at: the scheme and host of the
// upstream kubeconfig's server, without a path (kcp routes a ServiceAccount token at the
// bare host to the ServiceAccount's own workspace).
func podAPIURL(host string) (*url.URL, error) {
	if !strings.Contains(host, "://") {
		host = "https://" + host // client-go's default for a bare host:port
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, errorf(ExitKubeconfig, "--from-kubeconfig: server %q is not an http(s) URL with a host", host)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// loadConfig reads a kubeconfig; an empty path means the in-cluster configuration.
func loadConfig(flag, path, context string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, errorf(ExitKubeconfig, "--%s: not set and not running in a cluster: %w", flag, err)
		}
		return cfg, nil
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, errorf(ExitKubeconfig, "--%s %s: %w", flag, path, err)
	}
	return cfg, nil
}

// checkResources refuses --resources entries the control plane does not serve at
// all: a typo must not look like a resource that is merely pending. (A resource the
// physical cluster lacks is not an error: the engine reports it as Incompatible.)
func checkResources(d discovery.DiscoveryInterface, values []string) error {
	wanted, err := resources.Parse(values)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	lists, err := d.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		return errorf(ExitUnreachable, "discover the control plane's resources: %w", err)
	}
	served := map[schema.GroupResource]bool{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			served[schema.GroupResource{Group: gv.Group, Resource: r.Name}] = true
		}
	}
	var unknown []string
	for _, gr := range wanted {
		if !served[gr] {
			unknown = append(unknown, gr.String())
		}
	}
	if len(unknown) > 0 {
		return errorf(ExitResource, "--resources: the control plane serves no %s", strings.Join(unknown, ", "))
	}
	return nil
}

func isUnreachable(err error) bool {
	var status apierrors.APIStatus
	return !errors.As(err, &status)
}
