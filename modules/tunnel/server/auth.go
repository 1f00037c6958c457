package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// UserInfo is an authenticated identity.
type UserInfo struct {
	// Name is the user name.
	Name string
	// UID is the user UID, when known.
	UID string
	// Groups are the user's groups.
	Groups []string
	// Extra holds additional authenticator attributes.
	Extra map[string][]string
}

// Authenticator validates bearer tokens.
type Authenticator interface {
	// AuthenticateToken validates token for the logical cluster. ok is false
	// for an invalid token; err is a failure to decide.
	AuthenticateToken(ctx context.Context, cluster, token string) (user UserInfo, ok bool, err error)
}

// Attributes is one authorisation question.
type Attributes struct {
	// User asks.
	User UserInfo
	// Cluster is the logical cluster the question is about.
	Cluster string
	// Verb is the Kubernetes verb (get, list, watch, create, update…).
	Verb string
	// Group is the API group of the resource.
	Group string
	// Resource is the plural resource.
	Resource string
	// Subresource is the subresource, if any.
	Subresource string
	// Namespace is the namespace ("" for cluster-scoped).
	Namespace string
	// Name is the object name, if any.
	Name string
}

func (a Attributes) String() string {
	res := a.Resource
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	if a.Group != "" {
		res += "." + a.Group
	}
	s := fmt.Sprintf("%s %s", a.Verb, res)
	if a.Name != "" {
		s += " " + a.Name
	}
	if a.Namespace != "" {
		s += " in namespace " + a.Namespace
	}
	return s + " in cluster " + a.Cluster
}

// Authorizer answers authorisation questions.
type Authorizer interface {
	// Authorize reports whether a.User may do a; reason explains a denial;
	// err is a failure to decide.
	Authorize(ctx context.Context, a Attributes) (allowed bool, reason string, err error)
}

// ClientForCluster returns a clientset that talks to a logical cluster.
type ClientForCluster func(cluster string) (kubernetes.Interface, error)

// SingleCluster serves every logical cluster with one clientset (a plain
// kube-apiserver upstream).
func SingleCluster(c kubernetes.Interface) ClientForCluster {
	return func(string) (kubernetes.Interface, error) { return c, nil }
}

// DefaultMaxKCPClusters bounds the clientsets KCPClients keeps.
const DefaultMaxKCPClusters = 1024

// KCPClients hands out clientsets for cfg.Host + "/clusters/<cluster>" (a kcp upstream).
// They share one HTTP client (connections, TLS) and, unless cfg has its own, one rate
// limiter built from cfg.QPS and cfg.Burst: the reviews of every cluster draw from a single
// budget. Only clusters of authenticated callers are kept, at most MaxClusters, least
// recently used first out, so that names sent by unauthenticated clients cannot grow the
// server's memory.
type KCPClients struct {
	cfg   *rest.Config
	http  *http.Client
	cache *lru[string, kubernetes.Interface]
}

// NewKCPClients prepares clientsets for a kcp upstream; maxClusters <= 0 means
// DefaultMaxKCPClusters.
func NewKCPClients(cfg *rest.Config, maxClusters int) (*KCPClients, error) {
	cc := rest.CopyConfig(cfg)
	if cc.RateLimiter == nil && cc.QPS > 0 {
		burst := max(cc.Burst, 1)
		cc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cc.QPS, burst)
	}
	hc, err := rest.HTTPClientFor(cc)
	if err != nil {
		return nil, fmt.Errorf("kcp clients: %w", err)
	}
	if maxClusters <= 0 {
		maxClusters = DefaultMaxKCPClusters
	}
	return &KCPClients{cfg: cc, http: hc, cache: newLRU[string, kubernetes.Interface](maxClusters)}, nil
}

func (c *KCPClients) build(cluster string) (kubernetes.Interface, error) {
	cc := rest.CopyConfig(c.cfg)
	cc.Host = strings.TrimSuffix(cc.Host, "/") + "/clusters/" + cluster
	k, err := kubernetes.NewForConfigAndClient(cc, c.http)
	if err != nil {
		return nil, fmt.Errorf("client for cluster %s: %w", cluster, err)
	}
	return k, nil
}

// Authenticated returns the (kept) clientset of cluster; use it for callers already
// authenticated (the SubjectAccessReviewAuthorizer).
func (c *KCPClients) Authenticated(cluster string) (kubernetes.Interface, error) {
	if k, ok := c.cache.get(cluster, time.Time{}); ok {
		return k, nil
	}
	k, err := c.build(cluster)
	if err != nil {
		return nil, err
	}
	c.cache.add(cluster, k, time.Time{})
	return k, nil
}

// Unauthenticated returns the kept clientset of cluster, or a new one that is not kept;
// use it before the caller is authenticated (the TokenReviewAuthenticator).
func (c *KCPClients) Unauthenticated(cluster string) (kubernetes.Interface, error) {
	if k, ok := c.cache.get(cluster, time.Time{}); ok {
		return k, nil
	}
	return c.build(cluster)
}

// Len returns the number of clientsets kept.
func (c *KCPClients) Len() int { return c.cache.len() }

// TokenReviewAuthenticator validates tokens with the upstream TokenReview API.
type TokenReviewAuthenticator struct {
	clients   ClientForCluster
	audiences []string
}

var _ Authenticator = (*TokenReviewAuthenticator)(nil)

// NewTokenReviewAuthenticator returns an Authenticator using TokenReview; the
// audiences may be empty (the API server's default audience).
func NewTokenReviewAuthenticator(clients ClientForCluster, audiences ...string) *TokenReviewAuthenticator {
	return &TokenReviewAuthenticator{clients: clients, audiences: audiences}
}

// AuthenticateToken implements Authenticator.
func (a *TokenReviewAuthenticator) AuthenticateToken(ctx context.Context, cluster, token string) (UserInfo, bool, error) {
	c, err := a.clients(cluster)
	if err != nil {
		return UserInfo{}, false, err
	}
	tr, err := c.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return UserInfo{}, false, fmt.Errorf("token review: %w", err)
	}
	if !acceptedReview(tr.Status, a.audiences) {
		return UserInfo{}, false, nil
	}
	u := UserInfo{Name: tr.Status.User.Username, UID: tr.Status.User.UID, Groups: tr.Status.User.Groups}
	if len(tr.Status.User.Extra) > 0 {
		u.Extra = map[string][]string{}
		for k, v := range tr.Status.User.Extra {
			u.Extra[k] = v
		}
	}
	return u, true, nil
}

// acceptedReview reports whether a TokenReview's answer accepts the token: authenticated,
// no error reported with it, and, when audiences were asked for, at least one of them
// confirmed in status.audiences. An API server that ignores spec.audiences (and so would
// accept a token meant for itself where one bound to the tunnel is required) answers
// without them and is not trusted.
func acceptedReview(st authnv1.TokenReviewStatus, audiences []string) bool {
	if !st.Authenticated || st.Error != "" || st.User.Username == "" {
		return false
	}
	if len(audiences) == 0 {
		return true
	}
	for _, want := range audiences {
		if slices.Contains(st.Audiences, want) {
			return true
		}
	}
	return false
}

// SubjectAccessReviewAuthorizer authorises with the upstream SubjectAccessReview API.
type SubjectAccessReviewAuthorizer struct {
	clients ClientForCluster
}

var _ Authorizer = (*SubjectAccessReviewAuthorizer)(nil)

// NewSubjectAccessReviewAuthorizer returns an Authorizer using SubjectAccessReview.
func NewSubjectAccessReviewAuthorizer(clients ClientForCluster) *SubjectAccessReviewAuthorizer {
	return &SubjectAccessReviewAuthorizer{clients: clients}
}

// Authorize implements Authorizer.
func (a *SubjectAccessReviewAuthorizer) Authorize(ctx context.Context, at Attributes) (bool, string, error) {
	c, err := a.clients(at.Cluster)
	if err != nil {
		return false, "", err
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   at.User.Name,
		UID:    at.User.UID,
		Groups: at.User.Groups,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Verb:        at.Verb,
			Group:       at.Group,
			Resource:    at.Resource,
			Subresource: at.Subresource,
			Namespace:   at.Namespace,
			Name:        at.Name,
		},
	}}
	if len(at.User.Extra) > 0 {
		sar.Spec.Extra = map[string]authzv1.ExtraValue{}
		for k, v := range at.User.Extra {
			sar.Spec.Extra[k] = v
		}
	}
	res, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subject access review: %w", err)
	}
	return res.Status.Allowed && !res.Status.Denied, res.Status.Reason, nil
}

// authenticate finds the caller's identity: a client certificate verified
// against the client CA (CN = user, O = groups) or a bearer token.
func (s *Server) authenticate(r *http.Request, authn Authenticator, cluster string) (UserInfo, int, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return certUser(r.TLS.VerifiedChains[0][0]), 0, nil
	}
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return UserInfo{}, http.StatusUnauthorized, fmt.Errorf("missing bearer token")
	}
	src := sourceOf(r.RemoteAddr)
	if !s.reviews.take(src) {
		return UserInfo{}, http.StatusTooManyRequests, fmt.Errorf("too many unauthenticated requests in flight from %s (limit %d)", src, s.opts.Limits.MaxReviewsPerSource)
	}
	u, ok, err := authn.AuthenticateToken(r.Context(), cluster, token)
	s.reviews.release(src)
	if err != nil {
		return UserInfo{}, http.StatusServiceUnavailable, fmt.Errorf("authentication unavailable: %w", err)
	}
	if !ok {
		return UserInfo{}, http.StatusUnauthorized, fmt.Errorf("invalid bearer token")
	}
	return u, 0, nil
}

func certUser(c *x509.Certificate) UserInfo {
	return UserInfo{Name: c.Subject.CommonName, Groups: append([]string(nil), c.Subject.Organization...)}
}

// authorize asks the Authorizer and turns the answer into an HTTP status.
func (s *Server) authorize(ctx context.Context, a Attributes) (int, error) {
	ok, reason, err := s.opts.Authorizer.Authorize(ctx, a)
	if err != nil {
		return http.StatusServiceUnavailable, fmt.Errorf("authorization unavailable: %w", err)
	}
	if !ok {
		msg := fmt.Sprintf("user %q may not %s", a.User.Name, a)
		if reason != "" {
			msg += ": " + reason
		}
		return http.StatusForbidden, fmt.Errorf("%s", msg)
	}
	return 0, nil
}
