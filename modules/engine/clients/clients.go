// Package clients builds the rest.Configs of the two clusters a syncer talks to:
// kcp's QPS/burst defaults, the tmc-syncer user agent, and a dialer hook the
// tunnel uses to route upstream traffic.
package clients

import (
	"context"
	"fmt"
	"net"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kcp's syncer defaults for --qps and --burst.
const (
	DefaultQPS   = 30
	DefaultBurst = 20
)

// DialFunc dials a connection; it has the shape of rest.Config.Dial.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Options adjust a rest.Config. Zero fields take the defaults.
type Options struct {
	QPS   float32
	Burst int
	// Version goes into the user agent "tmc-syncer/<version>"; empty means "dev".
	Version string
	// Dial, when set, replaces the dialer (the tunnel routes upstream traffic through it).
	Dial DialFunc
}

// UserAgent returns "tmc-syncer/<version>".
func UserAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return "tmc-syncer/" + version
}

// Configure returns a copy of cfg with QPS, burst, user agent and dialer set.
func Configure(cfg *rest.Config, opts Options) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.QPS = opts.QPS
	if out.QPS <= 0 {
		out.QPS = DefaultQPS
	}
	out.Burst = opts.Burst
	if out.Burst <= 0 {
		out.Burst = DefaultBurst
	}
	out.UserAgent = UserAgent(opts.Version)
	if opts.Dial != nil {
		out.Dial = opts.Dial
	}
	return out
}

// Load reads the kubeconfig file path (empty: the default loading rules) and
// returns the config of kubeContext (empty: the current context).
func Load(path, kubeContext string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q context %q: %w", path, kubeContext, err)
	}
	return cfg, nil
}
