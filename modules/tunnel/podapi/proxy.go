package podapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// DialFunc opens a connection to the control plane's API address (the tunnel's
// client.Client.DialContext).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// NewTransport returns a transport to the API server of upstream that dials through dial
// and verifies the server as upstream says (its CA, server name), but carries none of
// upstream's credentials: requests keep only the caller's own.
func NewTransport(upstream *rest.Config, dial DialFunc) (*http.Transport, error) {
	if dial == nil {
		return nil, errors.New("podapi: no dialer")
	}
	tlsCfg, err := rest.TLSConfigFor(rest.AnonymousClientConfig(upstream))
	if err != nil {
		return nil, fmt.Errorf("podapi: TLS configuration of the control plane: %w", err)
	}
	return &http.Transport{
		DialContext:           dial,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // watches and long lists
		MaxIdleConnsPerHost:   16,
	}, nil
}

// NewHandler returns the reverse proxy pods talk to: every request goes to target (the
// control plane's scheme and host; its path is kept as the pod sent it) over transport.
// The pod's Authorization header is forwarded as it is; headers that would let a caller
// act as someone else (Impersonate-*, and the front-proxy X-Remote-* headers) are removed,
// and the proxy adds no credentials of its own.
func NewHandler(target *url.URL, transport http.RoundTripper) http.Handler {
	scheme, host := target.Scheme, target.Host
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host, r.Out.Host = scheme, host, host
			for name := range r.Out.Header {
				if unsafeHeader(name) {
					r.Out.Header.Del(name)
				}
			}
		},
		Transport:     transport,
		FlushInterval: -1, // watch events go out as they come
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "the control plane is not reachable through the tunnel: "+err.Error(), http.StatusBadGateway)
		},
	}
}

// unsafeHeader reports the request headers the proxy never forwards.
func unsafeHeader(name string) bool {
	name = strings.ToLower(name)
	return strings.HasPrefix(name, "impersonate-") || strings.HasPrefix(name, "x-remote-")
}
