package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	nsname "github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	tunnelclient "github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// kcpEventSink is the tunnel server's side of the Event relay under kcp: it reads the
// SyncTarget and the namespace with the server's own identity and writes the Events
// with it.
type kcpEventSink struct {
	cfg      *rest.Config
	http     *http.Client
	clusters *server.KCPClients
	// targets caches each SyncTarget's identity, mapped its workspaces' namespace names:
	// a proxied pod request asks after authorisation, and must not cost two reads of the
	// control plane every time. Bounded: the keys come from authorised requests only.
	targets, mapped *utilcache.LRUExpireCache
}

// How long the sink trusts what it read: a SyncTarget's identity does not change for its
// life; a namespace mapping goes stale only when the namespace is unplaced.
const (
	syncTargetTTL   = 5 * time.Minute
	namespaceMapTTL = 30 * time.Second
	sinkCacheSize   = 4096
)

func newKCPEventSink(cfg *rest.Config, clusters *server.KCPClients) (*kcpEventSink, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("event relay: %w", err)
	}
	return &kcpEventSink{cfg: cfg, http: hc, clusters: clusters,
		targets: utilcache.NewLRUExpireCache(sinkCacheSize), mapped: utilcache.NewLRUExpireCache(sinkCacheSize)}, nil
}

// Placed reports whether namespace of cluster carries the state label of the SyncTarget t,
// whose key comes from its own kcp.io/cluster annotation as everywhere else.
func (s *kcpEventSink) Placed(ctx context.Context, t tunnel.Target, cluster, namespace string) (bool, error) {
	st, err := s.syncTarget(ctx, t)
	if err != nil {
		return false, err
	}
	ns, err := s.namespace(ctx, cluster, namespace)
	if err != nil {
		return false, err
	}
	return ns.Labels[st.StateLabel()] != "", nil
}

// syncTarget reads the SyncTarget t at /clusters/<t.Cluster> with the server's identity:
// its own logical cluster (kcp.io/cluster), key and UID, as the syncer computes them.
func (s *kcpEventSink) syncTarget(ctx context.Context, t tunnel.Target) (identity.Target, error) {
	if v, ok := s.targets.Get(t); ok {
		return v.(identity.Target), nil
	}
	stCfg, err := clients.ForCluster(s.cfg, strings.TrimSuffix(s.cfg.Host, "/"), t.Cluster)
	if err != nil {
		return identity.Target{}, err
	}
	dyn, err := dynamic.NewForConfigAndClient(stCfg, s.http)
	if err != nil {
		return identity.Target{}, err
	}
	st, err := dyn.Resource(v1alpha1.SyncTargetsResource).Get(ctx, t.Name, metav1.GetOptions{})
	if err != nil {
		return identity.Target{}, fmt.Errorf("read SyncTarget %s: %w", t, err)
	}
	id := identity.TargetOf(st, t.Cluster)
	s.targets.Add(t, id, syncTargetTTL)
	return id, nil
}

func (s *kcpEventSink) namespace(ctx context.Context, cluster, name string) (*corev1.Namespace, error) {
	kube, err := s.clusters.Authenticated(cluster)
	if err != nil {
		return nil, err
	}
	ns, err := kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read namespace %s of %s: %w", name, cluster, err)
	}
	return ns, nil
}

// WorkspaceNamespace maps namespace of workspace (a logical cluster name or path, named
// by an authorised user) to its downstream namespace on t's physical cluster, exactly as
// the syncer names it: the locator holds the SyncTarget's own logical cluster, name and
// UID and the workspace's logical cluster (the namespace's kcp.io/cluster, whatever path
// the user wrote). A namespace that is not placed on t has none.
func (s *kcpEventSink) WorkspaceNamespace(ctx context.Context, t tunnel.Target, workspace, namespace string) (string, error) {
	key := t.String() + "|" + workspace + "|" + namespace
	if v, ok := s.mapped.Get(key); ok {
		return v.(string), nil
	}
	st, err := s.syncTarget(ctx, t)
	if err != nil {
		return "", err
	}
	ns, err := s.namespace(ctx, workspace, namespace)
	if err != nil {
		return "", err
	}
	if ns.Labels[st.StateLabel()] == "" {
		return "", fmt.Errorf("namespace %s of %s is not placed on sync target %s", namespace, workspace, t)
	}
	down, err := nsname.DownstreamName(nsname.Locator{
		SyncTarget: nsname.SyncTarget{Cluster: st.Cluster, Name: st.Name, UID: string(st.UID)},
		Cluster:    identity.LogicalCluster(ns, workspace),
		Namespace:  namespace,
	})
	if err != nil {
		return "", err
	}
	s.mapped.Add(key, down, namespaceMapTTL)
	return down, nil
}

// Client returns the server's clientset of cluster.
func (s *kcpEventSink) Client(cluster string) (kubernetes.Interface, error) {
	return s.clusters.Authenticated(cluster)
}

// eventRelayConfig is the syncer's client of its tunnel server's Event relay: the
// tunnel's URL, TLS settings and credential (never the upstream token unless that is
// the tunnel credential), and kcp-style cluster routing so that each Event goes to the
// workspace of the object it is about.
func eventRelayConfig(tunnelURL string, target tunnel.Target, tlsCfg *tls.Config, token tunnelclient.TokenSource, upCfg *rest.Config) *rest.Config {
	cfg := &rest.Config{
		Host:      strings.TrimSuffix(tunnelURL, "/") + target.EventsPath(),
		QPS:       upCfg.QPS,
		Burst:     upCfg.Burst,
		UserAgent: upCfg.UserAgent,
		Transport: &http.Transport{TLSClientConfig: tlsCfg.Clone(), Proxy: http.ProxyFromEnvironment, IdleConnTimeout: 90 * time.Second},
		// The relay reads and answers JSON only (client-go would send protobuf).
		ContentConfig: rest.ContentConfig{ContentType: "application/json", AcceptContentTypes: "application/json"},
	}
	if token != nil {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return bearer{token: token, next: rt} })
	}
	return clients.ForAllClusters(cfg, cfg.Host)
}

// bearer adds the tunnel credential to each request.
type bearer struct {
	token tunnelclient.TokenSource
	next  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := b.token(req.Context())
	if err != nil {
		return nil, fmt.Errorf("tunnel credential: %w", err)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}

// mayWatchEvents asks the physical cluster whether the syncer may list and watch Events
// in every namespace, as the event forwarder does.
func mayWatchEvents(ctx context.Context, kube kubernetes.Interface) (bool, string) {
	for _, verb := range []string{"list", "watch"} {
		r, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: "events"}},
		}, metav1.CreateOptions{})
		if err != nil {
			// Undecided: try, the forwarder reports its own errors.
			return true, ""
		}
		if !r.Status.Allowed {
			return false, verb + " events denied: " + r.Status.Reason
		}
	}
	return true, ""
}
