package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"golang.org/x/sync/singleflight"
	"k8s.io/utils/clock"
)

// TokenCacheOptions configure NewCachedAuthenticator. Zero fields take the defaults.
type TokenCacheOptions struct {
	// TTL is how long an accepted token's identity is reused. Default 10 s: a revoked
	// token is refused at most this long after the revocation.
	TTL time.Duration
	// NegativeTTL is how long a refused token stays refused without a new review.
	// Default 2 s, short so that a token created just now works almost at once.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache. Default 10,000.
	MaxEntries int
	// Timeout bounds each review. Default 5 s.
	Timeout time.Duration
	// Clock is for tests. Default real time.
	Clock clock.PassiveClock
}

// Defaults of TokenCacheOptions.
const (
	DefaultTokenTTL         = 10 * time.Second
	DefaultTokenNegativeTTL = 2 * time.Second
	DefaultTokenCacheSize   = 10000
	DefaultReviewTimeout    = 5 * time.Second
)

// tokenKey is the SHA-256 of the logical cluster and the token: the cache never holds a
// token itself.
type tokenKey [sha256.Size]byte

type tokenResult struct {
	user UserInfo
	ok   bool
}

// CachedAuthenticator caches another Authenticator's answers by token hash, merges
// concurrent reviews of the same token into one and bounds each review in time. Failures
// to decide are not cached.
type CachedAuthenticator struct {
	inner Authenticator
	opts  TokenCacheOptions
	cache *lru[tokenKey, tokenResult]
	group singleflight.Group
}

var _ Authenticator = (*CachedAuthenticator)(nil)

// NewCachedAuthenticator wraps inner.
func NewCachedAuthenticator(inner Authenticator, opts TokenCacheOptions) *CachedAuthenticator {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTokenTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultTokenNegativeTTL
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultTokenCacheSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultReviewTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &CachedAuthenticator{inner: inner, opts: opts, cache: newLRU[tokenKey, tokenResult](opts.MaxEntries)}
}

func keyOf(cluster, token string) tokenKey {
	h := sha256.New()
	_, _ = h.Write([]byte(cluster))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(token))
	var k tokenKey
	copy(k[:], h.Sum(nil))
	return k
}

// AuthenticateToken implements Authenticator.
func (a *CachedAuthenticator) AuthenticateToken(ctx context.Context, cluster, token string) (UserInfo, bool, error) {
	key := keyOf(cluster, token)
	if r, ok := a.cache.get(key, a.opts.Clock.Now()); ok {
		return r.user, r.ok, nil
	}
	ch := a.group.DoChan(hex.EncodeToString(key[:]), func() (any, error) {
		// The review is shared by every caller waiting for this token: one caller going
		// away must not fail it for the others.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.Timeout)
		defer cancel()
		user, ok, err := a.inner.AuthenticateToken(rctx, cluster, token)
		if err != nil {
			return nil, err
		}
		ttl := a.opts.TTL
		if !ok {
			ttl = a.opts.NegativeTTL
		}
		r := tokenResult{user: user, ok: ok}
		a.cache.add(key, r, a.opts.Clock.Now().Add(ttl))
		return r, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return UserInfo{}, false, fmt.Errorf("cached token review: %w", res.Err)
		}
		r := res.Val.(tokenResult)
		return r.user, r.ok, nil
	case <-ctx.Done():
		return UserInfo{}, false, fmt.Errorf("token review: %w", ctx.Err())
	}
}
