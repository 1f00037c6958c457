package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"
)

// DefaultTunnelAudience is the audience of the token a syncer shows the tunnel server: the
// API server refuses a token bound to it, so a tunnel server that keeps it cannot use it
// against the control plane.
const DefaultTunnelAudience = "tmc-syncer-tunnel"

// TokenRequester creates a token for the ServiceAccount namespace/name (the TokenRequest
// API, ServiceAccounts(namespace).CreateToken of client-go).
type TokenRequester func(ctx context.Context, namespace, name string, req *authnv1.TokenRequest) (*authnv1.TokenRequest, error)

// BoundTokenOptions configure BoundToken.
type BoundTokenOptions struct {
	// Namespace and Name are the ServiceAccount the token is for (the syncer's own).
	Namespace, Name string
	// Audience the token is bound to. Default DefaultTunnelAudience.
	Audience string
	// Expiration asked for. Default 1 h (the API server may shorten it).
	Expiration time.Duration
	// Clock is for tests. Default real time.
	Clock clock.PassiveClock
}

// BoundToken returns a TokenSource of short-lived tokens of one ServiceAccount bound to an
// audience, from the TokenRequest API. A token is reused until 80 % of its lifetime has
// passed, then a new one is requested; when that fails and the old token has not expired,
// the old one is used meanwhile.
func BoundToken(request TokenRequester, o BoundTokenOptions) TokenSource {
	if o.Audience == "" {
		o.Audience = DefaultTunnelAudience
	}
	if o.Expiration <= 0 {
		o.Expiration = time.Hour
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	b := &boundToken{request: request, o: o}
	return b.get
}

type boundToken struct {
	request TokenRequester
	o       BoundTokenOptions

	mu        sync.Mutex
	token     string
	refreshAt time.Time
	expiresAt time.Time
}

func (b *boundToken) get(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.o.Clock.Now()
	if b.token != "" && now.Before(b.refreshAt) {
		return b.token, nil
	}
	secs := int64(b.o.Expiration / time.Second)
	tr, err := b.request(ctx, b.o.Namespace, b.o.Name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{b.o.Audience}, ExpirationSeconds: &secs,
	}})
	if err == nil && (tr == nil || tr.Status.Token == "") {
		err = errors.New("the TokenRequest answer holds no token")
	}
	if err != nil {
		if b.token != "" && now.Before(b.expiresAt) {
			return b.token, nil
		}
		return "", fmt.Errorf("token for ServiceAccount %s/%s with audience %q: %w", b.o.Namespace, b.o.Name, b.o.Audience, err)
	}
	expires := tr.Status.ExpirationTimestamp.Time
	if expires.IsZero() || !expires.After(now) {
		expires = now.Add(b.o.Expiration)
	}
	b.token, b.expiresAt = tr.Status.Token, expires
	b.refreshAt = now.Add(expires.Sub(now) * 4 / 5)
	return b.token, nil
}

// ServiceAccountOfToken reads which ServiceAccount a Kubernetes ServiceAccount token (a
// JWT) names, without verifying it: it is for a syncer to learn its own identity from its
// own credential, never to trust someone else's. Both the bound token claims
// ("kubernetes.io": namespace, serviceaccount.name) and the legacy Secret token claims
// are understood.
func ServiceAccountOfToken(token string) (namespace, name string, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", "", errors.New("not a JWT (want three dot-separated parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", "", fmt.Errorf("JWT payload: %w", err)
	}
	var claims struct {
		Kubernetes *struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
		} `json:"kubernetes.io"`
		LegacyNamespace string `json:"kubernetes.io/serviceaccount/namespace"`
		LegacyName      string `json:"kubernetes.io/serviceaccount/service-account.name"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", fmt.Errorf("JWT claims: %w", err)
	}
	namespace, name = claims.LegacyNamespace, claims.LegacyName
	if claims.Kubernetes != nil {
		namespace, name = claims.Kubernetes.Namespace, claims.Kubernetes.ServiceAccount.Name
	}
	if namespace == "" || name == "" {
		return "", "", errors.New("the token names no ServiceAccount")
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return "", "", fmt.Errorf("the token's namespace is not a namespace name: %s", strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", "", fmt.Errorf("the token's ServiceAccount name is not a name: %s", strings.Join(errs, "; "))
	}
	return namespace, name, nil
}
