package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// ManagedNamespace reports whether the syncer manages a downstream namespace.
type ManagedNamespace func(namespace string) bool

// DownstreamOption configures NewDownstreamHandler.
type DownstreamOption func(*downstreamHandler)

// RequireLabels serves a request that names an object (a pod's log, exec, …)
// only when the downstream object carries all of want: the labels the syncer
// puts on what it synced. A pod that someone else created in a managed
// namespace is then out of reach of the control plane's users.
func RequireLabels(want map[string]string) DownstreamOption {
	return func(h *downstreamHandler) { h.owned = labels.SelectorFromSet(want) }
}

// NewDownstreamHandler returns the handler that serves control plane requests
// arriving through the tunnel against the downstream (physical cluster) API
// with the syncer's own credentials from cfg. It serves only namespaced paths
// in namespaces for which managed returns true, only read-only methods on
// resources and the pod subresources log, exec, attach and portforward
// (HTTP upgrades and streaming responses pass through). The caller's
// credential headers are dropped.
func NewDownstreamHandler(cfg *rest.Config, managed ManagedNamespace, log logr.Logger, opts ...DownstreamOption) (http.Handler, error) {
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
	h := &downstreamHandler{
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
	}
	for _, o := range opts {
		o(h)
	}
	if h.owned != nil && !h.owned.Empty() {
		if h.meta, err = metadata.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("downstream metadata client: %w", err)
		}
	}
	return h, nil
}

type downstreamHandler struct {
	managed ManagedNamespace
	log     logr.Logger
	proxy   *httputil.ReverseProxy
	owned   labels.Selector    // nil: every object in a managed namespace
	meta    metadata.Interface // reads the labels when owned is set
}

// maxOwnerDepth bounds the controller chain checkOwned follows (Pod → ReplicaSet →
// Deployment is two steps; CronJob → Job → Pod too).
const maxOwnerDepth = 3

// checkOwned returns the HTTP status and error refusing req when it names an
// object that does not carry the syncer's labels, itself or through its chain of
// controllers in the same namespace (the pods a synced Deployment's ReplicaSet
// creates carry no labels of ours).
func (h *downstreamHandler) checkOwned(ctx context.Context, req tunnel.APIRequest) (int, error) {
	if h.meta == nil || req.Name == "" {
		return 0, nil
	}
	gvr := schema.GroupVersionResource{Group: req.Group, Version: req.Version, Resource: req.Resource}
	obj, err := h.meta.Resource(gvr).Namespace(req.Namespace).Get(ctx, req.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return http.StatusNotFound, fmt.Errorf("%s %s/%s not found", req.Resource, req.Namespace, req.Name)
	case apierrors.IsForbidden(err):
		return http.StatusForbidden, fmt.Errorf("read %s %s/%s: %w", req.Resource, req.Namespace, req.Name, err)
	case err != nil:
		return http.StatusBadGateway, fmt.Errorf("read %s %s/%s: %w", req.Resource, req.Namespace, req.Name, err)
	}
	for range maxOwnerDepth + 1 {
		if h.owned.Matches(labels.Set(obj.GetLabels())) {
			return 0, nil
		}
		ref := metav1.GetControllerOf(obj)
		if ref == nil {
			break
		}
		owner, ok := ownerResource(ref)
		if !ok {
			break
		}
		if obj, err = h.meta.Resource(owner).Namespace(req.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err != nil || obj.GetUID() != ref.UID {
			break
		}
	}
	return http.StatusForbidden, fmt.Errorf("%s %s/%s was not synced by this syncer", req.Resource, req.Namespace, req.Name)
}

// ownerResource maps the controllers that own pods (directly or through one another)
// to their resources; other owners end the chain.
func ownerResource(ref *metav1.OwnerReference) (schema.GroupVersionResource, bool) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return schema.GroupVersionResource{}, false
	}
	resource, ok := map[string]string{
		"apps/ReplicaSet": "replicasets", "apps/Deployment": "deployments", "apps/StatefulSet": "statefulsets",
		"apps/DaemonSet": "daemonsets", "batch/Job": "jobs", "batch/CronJob": "cronjobs",
		"/ReplicationController": "replicationcontrollers",
	}[gv.Group+"/"+ref.Kind]
	return gv.WithResource(resource), ok
}

// scopeToOwned narrows a list or watch (a request naming no object) to the objects
// carrying the syncer's labels: the selector is ANDed with the caller's.
func (h *downstreamHandler) scopeToOwned(req tunnel.APIRequest, q url.Values) url.Values {
	if h.owned == nil || h.owned.Empty() || req.Name != "" {
		return q
	}
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	sel := h.owned.String()
	if caller := q.Get("labelSelector"); caller != "" {
		sel = caller + "," + sel
	}
	out.Set("labelSelector", sel)
	return out
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
	if code, err := h.checkOwned(r.Context(), req); err != nil {
		h.log.Info("refusing tunnelled request", "method", r.Method, "path", r.URL.Path, "err", err.Error())
		http.Error(w, err.Error(), code)
		return
	}
	h.log.V(2).Info("serving tunnelled request", "method", r.Method, "path", r.URL.Path)
	// Rebuild the path from the parsed request so nothing unparsed reaches downstream.
	r2 := r.Clone(r.Context())
	r2.URL = &url.URL{Path: req.Path(), RawQuery: h.scopeToOwned(req, r.URL.Query()).Encode()}
	h.proxy.ServeHTTP(w, r2)
}
