package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// newSessionProxy returns the reverse proxy that sends requests to the
// syncer over streams of sess.
func newSessionProxy(sess *Session, log logr.Logger) (*http.Transport, *httputil.ReverseProxy) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return sess.Open(ctx, tunnel.StreamDownstream)
		},
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // exec and follow=true may wait long
		DisableCompression:    true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "syncer.tunnel"
			pr.Out.Host = "syncer.tunnel"
			tunnel.StripCredentials(pr.Out.Header)
		},
		Transport:     tr,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				// An exec/attach/port-forward stream: no write deadline from here on.
				clearWriteDeadline(resp.Request.Context())
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Info("request through tunnel failed", "path", r.URL.Path, "err", err.Error())
			code := proxyErrorStatus(err)
			http.Error(w, "request through the tunnel failed: "+http.StatusText(code), code)
		},
	}
	return tr, rp
}

// serveProxy authorises a control plane request for t's physical cluster,
// maps its namespace and forwards it through the tunnel.
func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request, t tunnel.Target, apiPath string) {
	if s.opts.NamespaceMapper == nil {
		http.Error(w, "control plane → cluster requests are not enabled on this tunnel server", http.StatusNotFound)
		return
	}
	// Under kcp a user names the workspace of the namespace: authenticated, authorised and
	// mapped there. Without it, the namespace is one of the SyncTarget's own cluster.
	workspace, apiPath, err := tunnel.SplitWorkspace(apiPath)
	if err != nil {
		code := http.StatusNotFound
		if errors.Is(err, tunnel.ErrInvalidTarget) {
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
		return
	}
	if workspace != "" && s.opts.WorkspaceNamespaces == nil {
		http.Error(w, "requests naming a workspace are not enabled on this tunnel server (kcp only)", http.StatusNotFound)
		return
	}
	req, err := tunnel.ParseAPIPath(apiPath)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	verb, err := req.Verb(r.Method, r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusMethodNotAllowed)
		return
	}
	if !limitBody(w, r, s.opts.Limits.MaxRequestBodyBytes) {
		return
	}
	cluster := t.Cluster
	if workspace != "" {
		cluster = workspace
	}
	user, ok := s.proxyCaller(w, r, cluster, req, verb)
	if !ok {
		return
	}
	sess := s.registry.Get(t)
	if sess == nil {
		// Another replica may hold the session: the request, authorised here, goes there.
		if !isPeerRequest(r) && s.opts.Replicas != nil && s.opts.Replicas.forwardRequest(w, r, t, user) {
			return
		}
		http.Error(w, fmt.Sprintf("sync target %s is not connected", t), http.StatusServiceUnavailable)
		return
	}
	// Counted from here on only: the caller is authorised and the target connected, so
	// no unauthenticated input can add a label value.
	if ro, ok := s.obs.(RequestObserver); ok {
		rec := &statusRecorder{ResponseWriter: w}
		defer func() { ro.ProxiedRequest(t, rec.code()) }()
		w = rec
	}
	uk := userKey(user)
	switch sess.limits.takeRequest(uk) {
	case "per user":
		http.Error(w, fmt.Sprintf("too many requests in flight for user %q through the tunnel of %s (limit %d per user)", user.Name, t, s.opts.Limits.MaxProxyRequestsPerUser), http.StatusTooManyRequests)
		return
	case "per target":
		http.Error(w, fmt.Sprintf("too many requests in flight through the tunnel of %s (limit %d)", t, s.opts.Limits.MaxProxyRequests), http.StatusTooManyRequests)
		return
	}
	defer sess.limits.releaseRequest(uk)
	var downNS string
	if workspace != "" {
		downNS, err = s.opts.WorkspaceNamespaces(r.Context(), t, workspace, req.Namespace)
	} else {
		downNS, err = s.opts.NamespaceMapper(r.Context(), t, req.Namespace)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("namespace %s of %s has no downstream namespace on %s: %v", req.Namespace, cluster, t, err), http.StatusNotFound)
		return
	}
	down := req
	down.Namespace = downNS
	s.log.V(2).Info("forwarding request through tunnel", "syncTarget", t.String(), "cluster", cluster, "user", user.Name, "verb", verb, "path", down.Path())
	// Followed logs, exec and port-forward sessions and watches end at the latest here
	// (ReverseProxy closes an upgraded connection when the request's context ends).
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.Limits.MaxRequestDuration)
	defer cancel()
	r2 := r.Clone(ctx)
	r2.URL = &url.URL{Path: down.Path(), RawQuery: r.URL.RawQuery}
	r2.RequestURI = ""
	sess.reverseProxy(s.log.WithValues("syncTarget", t.String())).ServeHTTP(w, r2)
}
