package app

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// MonitorLeaseName is the Lease the tunnel server replicas elect the heartbeat monitor's
// writer with.
const MonitorLeaseName = "tmc-syncer-tunnel-monitor"

// replicaOptions are the `syncer tunnel-server` settings for running several replicas.
type replicaOptions struct {
	advertiseAddress string
	peerBindAddress  string
	peerCertFile     string
	peerKeyFile      string
	peerCAFile       string
	peerServerName   string
	leaseNamespace   string
	leaseDuration    time.Duration
}

func (o *replicaOptions) addFlags(fs *pflag.FlagSet) {
	o.peerBindAddress, o.leaseNamespace, o.leaseDuration = ":8445", "tmc-tunnel-server", server.DefaultLeaseDuration
	fs.StringVar(&o.advertiseAddress, "advertise-address", "", "host:port at which the other replicas reach this replica's --peer-bind-address (e.g. $(POD_IP):8445); set, the server runs as one of several replicas: session Leases, forwarding to the holder, an elected heartbeat monitor")
	fs.StringVar(&o.peerBindAddress, "peer-bind-address", o.peerBindAddress, "listen address of the replica-to-replica port (mutual TLS with --peer-ca-file); with --advertise-address")
	fs.StringVar(&o.peerCertFile, "peer-tls-cert-file", "", "this replica's certificate for the replica port, signed by --peer-ca-file, valid for --peer-server-name as server and client")
	fs.StringVar(&o.peerKeyFile, "peer-tls-private-key-file", "", "key of --peer-tls-cert-file")
	fs.StringVar(&o.peerCAFile, "peer-ca-file", "", "CA of the replica certificates; used for nothing else (never the CA of users' client certificates)")
	fs.StringVar(&o.peerServerName, "peer-server-name", server.DefaultPeerServerName, "DNS name every replica certificate carries and is verified for")
	fs.StringVar(&o.leaseNamespace, "lease-namespace", o.leaseNamespace, "namespace of the --kubeconfig cluster (with --kcp: of the server's own workspace) holding the session Leases and the monitor's election Lease")
	fs.DurationVar(&o.leaseDuration, "lease-duration", o.leaseDuration, "validity of a session Lease; renewed every third of it")
}

// replicaSetup is what running as one of several replicas adds to the tunnel server.
type replicaSetup struct {
	replicas *server.Replicas
	peerLn   net.Listener
	elector  *leaderelection.LeaderElector
	leading  atomic.Bool
	onLead   func()
}

// setUpReplicas prepares the Leases, the replica port and the monitor election; nil
// without --advertise-address.
func setUpReplicas(cfg *rest.Config, o replicaOptions, onChange func(tunnel.Target), log logr.Logger) (*replicaSetup, error) {
	if o.advertiseAddress == "" {
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(o.advertiseAddress); err != nil {
		return nil, errorf(ExitUsage, "--advertise-address %q: %w", o.advertiseAddress, err)
	}
	if o.peerCertFile == "" || o.peerKeyFile == "" || o.peerCAFile == "" {
		return nil, errorf(ExitUsage, "--advertise-address needs --peer-tls-cert-file, --peer-tls-private-key-file and --peer-ca-file (replicas trust each other by mutual TLS)")
	}
	if o.leaseNamespace == "" || o.leaseDuration < 3*time.Second {
		return nil, errorf(ExitUsage, "--lease-namespace must be set and --lease-duration at least 3s")
	}
	peer, err := server.LoadPeerTLS(o.peerCertFile, o.peerKeyFile, o.peerCAFile, o.peerServerName)
	if err != nil {
		return nil, errorf(ExitUsage, "%w", err)
	}
	// The Leases get a client of their own: renewals never wait behind reviews.
	leaseCfg := rest.CopyConfig(cfg)
	leaseCfg.QPS, leaseCfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(leaseCfg)
	if err != nil {
		return nil, errorf(ExitKubeconfig, "--kubeconfig: %w", err)
	}
	reps, err := server.NewReplicas(server.ReplicaOptions{
		Client: kube, Namespace: o.leaseNamespace, Self: o.advertiseAddress, LeaseDuration: o.leaseDuration,
		Peer: peer, OnChange: onChange, Logger: log,
	})
	if err != nil {
		return nil, errorf(ExitUsage, "%w", err)
	}
	rs := &replicaSetup{replicas: reps}
	rs.elector, err = leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: MonitorLeaseName, Namespace: o.leaseNamespace},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: o.advertiseAddress},
		},
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ReleaseOnCancel: true, Name: "tunnel-heartbeat-monitor",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				log.Info("leading: this replica's heartbeat monitor writes SyncTarget conditions")
				rs.leading.Store(true)
				if rs.onLead != nil {
					rs.onLead()
				}
			},
			OnStoppedLeading: func() { rs.leading.Store(false) },
			OnNewLeader: func(id string) {
				log.Info("heartbeat monitor leader", "replica", id)
			},
		},
	})
	if err != nil {
		return nil, errorf(ExitUsage, "heartbeat monitor election: %w", err)
	}
	if rs.peerLn, err = listen("peer-bind-address", o.peerBindAddress); err != nil {
		return nil, err
	}
	if rs.peerLn == nil {
		return nil, errorf(ExitUsage, "--advertise-address needs --peer-bind-address")
	}
	return rs, nil
}

// run runs the Lease informer and renewals, the replica port and the election until
// ctx ends.
func (rs *replicaSetup) run(ctx context.Context, srv *server.Server, g interface{ Go(func() error) }) {
	g.Go(func() error { return rs.replicas.Run(ctx) })
	g.Go(func() error {
		if err := srv.ServePeer(ctx, rs.peerLn); err != nil {
			return fmt.Errorf("replica port: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		for ctx.Err() == nil { // leadership lost: stand for election again
			rs.elector.Run(ctx)
		}
		return nil
	})
}

func peerListener(rs *replicaSetup) net.Listener {
	if rs == nil {
		return nil
	}
	return rs.peerLn
}
