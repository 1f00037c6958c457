package client

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// ManagedNamespace reports whether the syncer manages a downstream namespace.
type ManagedNamespace func(namespace string) bool

// NewDownstreamHandler returns the handler that serves control plane requests
// arriving through the tunnel against the downstream (physical cluster) API
// with the syncer's own credentials from cfg. It serves only namespaced paths
// in namespaces for which managed returns true, only read-only methods on
// resources and the pod subresources log, exec, attach and portforward
// (HTTP upgrades and streaming responses pass through). The caller's
// credential headers are dropped.
func NewDownstreamHandler(cfg *rest.Config, managed ManagedNamespace, log logr.Logger) (http.Handler, error) {
	if managed == nil {
		return nil, fmt.Errorf("managed namespace predicate is required")
	}
	cfg = rest.CopyConfig(cfg)
	// HTTP/1.1 only: upgrades (exec, attach, port-forward) do not work over HTTP/2.
	cfg.NextProtos = []string{"http/1.1"}
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("downstream transport: %w", err)
	}
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("downstream URL: %w", err)
	}
	return &downstreamHandler{
		managed: managed,
		log:     log,
		proxy: &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(base)
				tunnel.StripCredentials(pr.Out.Header)
			},
			Transport:     rt,
			FlushInterval: -1, // stream logs and watches as they come
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				log.Info("downstream request failed", "path", r.URL.Path, "err", err.Error())
				http.Error(w, "downstream request failed", http.StatusBadGateway)
			},
		},
	}, nil
}

type downstreamHandler struct {
	managed ManagedNamespace
	log     logr.Logger
	proxy   *httputil.ReverseProxy
}

func (h *downstreamHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := tunnel.ParseAPIPath(r.URL.Path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if _, err := req.Verb(r.Method, r.URL.Query()); err != nil {
		http.Error(w, err.Error(), http.StatusMethodNotAllowed)
		return
	}
	if !h.managed(req.Namespace) {
		http.Error(w, fmt.Sprintf("namespace %q is not managed by this syncer", req.Namespace), http.StatusForbidden)
		return
	}
	h.log.V(2).Info("serving tunnelled request", "method", r.Method, "path", r.URL.Path)
	// Rebuild the path from the parsed request so nothing unparsed reaches downstream.
	r2 := r.Clone(r.Context())
	r2.URL = &url.URL{Path: req.Path(), RawQuery: r.URL.RawQuery}
	h.proxy.ServeHTTP(w, r2)
}
