package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
	tunnelclient "github.com/tmc-syncer/syncer/modules/tunnel/client"
)

// tunnelCredential chooses what the syncer shows the tunnel server at its handshake, and
// sets a client certificate on tlsCfg when one is configured. In order: a client
// certificate (no token unless --tunnel-token-file), --tunnel-token-file, a token bound to
// --tunnel-token-audience requested for the syncer's own upstream ServiceAccount, and only
// with --tunnel-token-audience="" the upstream token itself (which a tunnel server could
// replay against the control plane).
func tunnelCredential(opts *options.Options, upCfg *rest.Config, tlsCfg *tls.Config, log logr.Logger) (tunnelclient.TokenSource, error) {
	if opts.TunnelClientCertFile != "" {
		if _, err := tls.LoadX509KeyPair(opts.TunnelClientCertFile, opts.TunnelClientKeyFile); err != nil {
			return nil, errorf(ExitUsage, "--tunnel-client-cert-file: %w", err)
		}
		certFile, keyFile := opts.TunnelClientCertFile, opts.TunnelClientKeyFile
		// Read at every handshake: a renewed certificate is used without a restart.
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("tunnel client certificate: %w", err)
			}
			return &c, nil
		}
	}
	switch {
	case opts.TunnelTokenFile != "":
		return tunnelclient.FileToken(opts.TunnelTokenFile), nil
	case opts.TunnelClientCertFile != "":
		return nil, nil
	}
	upstreamToken := upCfg.BearerToken
	if upCfg.BearerTokenFile != "" {
		b, err := os.ReadFile(upCfg.BearerTokenFile)
		if err != nil {
			return nil, errorf(ExitKubeconfig, "--from-kubeconfig: token file: %w", err)
		}
		upstreamToken = strings.TrimSpace(string(b))
	}
	if opts.TunnelTokenAudience == "" {
		switch {
		case upCfg.BearerTokenFile != "":
			log.Info("WARNING: the tunnel server is shown the upstream token (--tunnel-token-audience is empty); a compromised tunnel server could use it against the control plane")
			return tunnelclient.FileToken(upCfg.BearerTokenFile), nil
		case upCfg.BearerToken != "":
			log.Info("WARNING: the tunnel server is shown the upstream token (--tunnel-token-audience is empty); a compromised tunnel server could use it against the control plane")
			return tunnelclient.StaticToken(upCfg.BearerToken), nil
		}
		return nil, errorf(ExitKubeconfig, "--from-kubeconfig: the tunnel needs a bearer token in the upstream kubeconfig, --tunnel-token-file or --tunnel-client-cert-file")
	}
	if upstreamToken == "" {
		return nil, errorf(ExitKubeconfig, "--tunnel-token-audience: the upstream kubeconfig has no ServiceAccount token to request a tunnel token with; use --tunnel-token-file or --tunnel-client-cert-file")
	}
	ns, name, err := tunnelclient.ServiceAccountOfToken(upstreamToken)
	if err != nil {
		return nil, errorf(ExitKubeconfig, "--tunnel-token-audience: the upstream token is not a ServiceAccount token (%w); use --tunnel-token-file, --tunnel-client-cert-file, or --tunnel-token-audience=\"\" to show the upstream token itself", err)
	}
	// Straight to the upstream API, not through the tunnel: the token opens the tunnel.
	kube, err := kubernetes.NewForConfig(upCfg)
	if err != nil {
		return nil, errorf(ExitKubeconfig, "--from-kubeconfig: %w", err)
	}
	log.Info("the tunnel server is shown a token bound to its audience", "serviceAccount", ns+"/"+name, "audience", opts.TunnelTokenAudience)
	request := func(ctx context.Context, ns, name string, req *authnv1.TokenRequest) (*authnv1.TokenRequest, error) {
		return kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, req, metav1.CreateOptions{})
	}
	return tunnelclient.BoundToken(request, tunnelclient.BoundTokenOptions{Namespace: ns, Name: name, Audience: opts.TunnelTokenAudience}), nil
}
