package app

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	dnsserver "github.com/tmc-syncer/syncer/modules/downstream/dns"
)

// dnsOptions are the flags of `syncer dns`.
type dnsOptions struct {
	kubeconfig, kubeContext string
	configMap, namespace    string
	listen, clusterDomain   string
	forward                 []string
	resolvConf              string
}

// newDNSCommand is `syncer dns` (and `syncer dns start`, the command line kcp's per-workspace
// DNS Deployments run): one workspace's DNS server.
func newDNSCommand() *cobra.Command {
	o := &dnsOptions{namespace: os.Getenv("NAMESPACE"), listen: ":" + strconv.Itoa(dnsserver.Port),
		clusterDomain: dnsserver.DefaultClusterDomain, resolvConf: "/etc/resolv.conf"}
	run := func(cmd *cobra.Command, _ []string) error { return runDNS(cmd, o) }
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Serve one workspace's DNS: <service>.<upstream namespace> to its downstream Service, everything else forwarded",
		Long: "dns answers <service>.<namespace> and <service>.<namespace>.svc.<cluster domain> of one workspace with\n" +
			"the ClusterIP of the Service synced to the physical cluster, from the table ConfigMap the syncer\n" +
			"keeps, and forwards every other query. The syncer deploys one per workspace (--dns-image).",
		Args: cobra.NoArgs,
		RunE: run,
	}
	start := &cobra.Command{Use: "start", Short: "The same as dns (kcp's command line)", Args: cobra.NoArgs, RunE: run}
	for _, c := range []*cobra.Command{cmd, start} {
		fs := c.Flags()
		fs.StringVar(&o.kubeconfig, "kubeconfig", o.kubeconfig, "kubeconfig of the physical cluster (empty: in-cluster)")
		fs.StringVar(&o.kubeContext, "context", o.kubeContext, "context in --kubeconfig")
		fs.StringVar(&o.configMap, "configmap-name", o.configMap, "the workspace's table ConfigMap (kcp's flag; required)")
		fs.StringVar(&o.namespace, "configmap-namespace", o.namespace, "namespace of the table ConfigMap (default: env NAMESPACE)")
		fs.StringVar(&o.listen, "listen-address", o.listen, "UDP and TCP address to answer on")
		fs.StringSliceVar(&o.forward, "forward", o.forward, "resolvers (host or host:port) other queries go to, in order (default: the nameservers of --resolv-conf)")
		fs.StringVar(&o.resolvConf, "resolv-conf", o.resolvConf, "resolver configuration read when --forward is not set")
		fs.StringVar(&o.clusterDomain, "cluster-domain", o.clusterDomain, "the physical cluster's DNS domain")
	}
	cmd.AddCommand(start)
	return cmd
}

func runDNS(cmd *cobra.Command, o *dnsOptions) error {
	if o.configMap == "" {
		return withCode(ExitUsage, errors.New("--configmap-name is required"))
	}
	if o.namespace == "" {
		return withCode(ExitUsage, errors.New("--configmap-namespace (or env NAMESPACE) is required"))
	}
	forward, err := resolvers(o.forward, o.resolvConf)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	cfg, err := loadConfig("kubeconfig", o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return errorf(ExitKubeconfig, "--kubeconfig: %w", err)
	}
	log := klog.Background().WithName("dns")
	s, err := dnsserver.NewServer(dnsserver.ServerConfig{ClusterDomain: o.clusterDomain, Forward: forward, Logger: log})
	if err != nil {
		return withCode(ExitUsage, err)
	}
	ctx := cmd.Context()
	// Load the table first: the socket opens (and the readiness probe passes) only then.
	if err := dnsserver.WatchTable(ctx, kube, o.namespace, o.configMap, s); err != nil {
		return ignoreCanceled(err)
	}
	pc, l, err := dnsserver.Listen(o.listen)
	if err != nil {
		return withCode(ExitAddressInUse, err)
	}
	log.Info("serving", "address", pc.LocalAddr().String(), "configMap", o.namespace+"/"+o.configMap, "forward", forward)
	return ignoreCanceled(s.Serve(ctx, pc, l))
}

// resolvers returns the forward targets as host:port: the flag's, else resolv.conf's.
func resolvers(flag []string, resolvConf string) ([]string, error) {
	if len(flag) == 0 {
		conf, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("--forward not set and %s unreadable: %w", resolvConf, err)
		}
		for _, s := range conf.Servers {
			flag = append(flag, net.JoinHostPort(s, conf.Port))
		}
		if len(flag) == 0 {
			return nil, fmt.Errorf("--forward not set and %s names no nameserver", resolvConf)
		}
		return flag, nil
	}
	out := make([]string, 0, len(flag))
	for _, f := range flag {
		if _, _, err := net.SplitHostPort(f); err != nil {
			f = net.JoinHostPort(f, "53")
		}
		out = append(out, f)
	}
	return out, nil
}
