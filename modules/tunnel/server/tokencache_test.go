package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// countingReviewer is a fake TokenReview backend: "good" authenticates, "down" fails,
// anything else is refused; every call is counted; release, when set, holds each review.
type countingReviewer struct {
	calls   atomic.Int64
	release chan struct{}
}

func (c *countingReviewer) AuthenticateToken(ctx context.Context, cluster, token string) (server.UserInfo, bool, error) {
	c.calls.Add(1)
	if c.release != nil {
		select {
		case <-c.release:
		case <-ctx.Done():
			return server.UserInfo{}, false, fmt.Errorf("review: %w", ctx.Err())
		}
	}
	switch token {
	case "good":
		return server.UserInfo{Name: "syncer@" + cluster}, true, nil
	case "down":
		return server.UserInfo{}, false, errors.New("backend down")
	}
	return server.UserInfo{}, false, nil
}

func TestTokenReviewsAreCachedByTokenHash(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	rev := &countingReviewer{}
	a := server.NewCachedAuthenticator(rev, server.TokenCacheOptions{TTL: 10 * time.Second, NegativeTTL: 2 * time.Second, Clock: clk})

	for range 100 {
		u, ok, err := a.AuthenticateToken(ctx, "root", "good")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "syncer@root", u.Name)
	}
	assert.EqualValues(t, 1, rev.calls.Load(), "one review for a hundred requests with the same token")

	_, ok, err := a.AuthenticateToken(ctx, "root:other", "good")
	require.NoError(t, err)
	require.True(t, ok)
	assert.EqualValues(t, 2, rev.calls.Load(), "the same token in another cluster is reviewed again")

	clk.SetTime(clk.Now().Add(9 * time.Second))
	_, _, _ = a.AuthenticateToken(ctx, "root", "good")
	assert.EqualValues(t, 2, rev.calls.Load(), "still cached within the TTL")
	clk.SetTime(clk.Now().Add(time.Second))
	_, _, _ = a.AuthenticateToken(ctx, "root", "good")
	assert.EqualValues(t, 3, rev.calls.Load(), "reviewed again once the TTL is over")

	for range 50 {
		_, ok, err := a.AuthenticateToken(ctx, "root", "garbage")
		require.NoError(t, err)
		require.False(t, ok)
	}
	assert.EqualValues(t, 4, rev.calls.Load(), "a refused token is cached too")
	clk.SetTime(clk.Now().Add(2 * time.Second))
	_, _, _ = a.AuthenticateToken(ctx, "root", "garbage")
	assert.EqualValues(t, 5, rev.calls.Load(), "the negative TTL is shorter")

	for range 3 {
		_, _, err := a.AuthenticateToken(ctx, "root", "down")
		require.Error(t, err)
	}
	assert.EqualValues(t, 8, rev.calls.Load(), "failures to decide are not cached")
}

func TestConcurrentReviewsOfOneTokenAreMergedAndBoundedInTime(t *testing.T) {
	rev := &countingReviewer{release: make(chan struct{})}
	a := server.NewCachedAuthenticator(rev, server.TokenCacheOptions{Timeout: 200 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	start := time.Now()
	for range 20 {
		wg.Go(func() {
			_, _, err := a.AuthenticateToken(context.Background(), "root", "good")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, context.DeadlineExceeded, "a hung backend fails the review at its timeout")
	}
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.EqualValues(t, 1, rev.calls.Load(), "twenty callers, one review")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := a.AuthenticateToken(ctx, "root", "other")
	require.ErrorIs(t, err, context.Canceled, "the caller's own context still ends its wait")
}

// slowBackend is a TokenReview backend with room for capacity reviews at a time, each
// taking delay: the shape of an API server under load.
type slowBackend struct {
	slots chan struct{}
	delay time.Duration
	auth  tunneltest.Auth
}

func (b *slowBackend) AuthenticateToken(ctx context.Context, cluster, token string) (server.UserInfo, bool, error) {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return server.UserInfo{}, false, fmt.Errorf("review: %w", ctx.Err())
	}
	defer func() { <-b.slots }()
	time.Sleep(b.delay)
	return b.auth.AuthenticateToken(ctx, cluster, token)
}

func TestGarbageTokensFromOneSourceCannotDelayOthers(t *testing.T) {
	backend := &slowBackend{slots: make(chan struct{}, 4), delay: 50 * time.Millisecond}
	h := newHostileServer(t, func(o *server.Options) {
		o.Authenticator = server.NewCachedAuthenticator(backend, server.TokenCacheOptions{})
	})
	proxy := tunneltest.Target.ProxyPath() + "/api/v1/namespaces/team-a/pods/web/log"

	var wg sync.WaitGroup
	var refused, unauthorized atomic.Int64
	for i := range 500 {
		wg.Go(func() {
			r := tunnelRequest(proxy, fmt.Sprintf("garbage-%d", i), false)
			r.RemoteAddr = "203.0.113.9:40000"
			switch h.serve(r).Code {
			case http.StatusTooManyRequests:
				refused.Add(1)
			case http.StatusUnauthorized:
				unauthorized.Add(1)
			}
		})
	}
	// While the flood is on, a user and a syncer from elsewhere get their answer promptly.
	time.Sleep(20 * time.Millisecond)
	for _, r := range []*http.Request{
		tunnelRequest(proxy, tunneltest.UserToken, false),
		tunnelRequest(tunneltest.Target.Path(), tunneltest.SyncerToken, true),
	} {
		r.RemoteAddr = "198.51.100.7:50000"
		start := time.Now()
		rec := h.serve(r)
		elapsed := time.Since(start)
		assert.NotEqual(t, http.StatusUnauthorized, rec.Code, rec.Body.String())
		assert.NotEqual(t, http.StatusTooManyRequests, rec.Code, rec.Body.String())
		assert.Less(t, elapsed, time.Second, "a legitimate request waits for no garbage review")
	}
	wg.Wait()
	assert.Positive(t, refused.Load(), "the flooding source is capped")
	assert.LessOrEqual(t, unauthorized.Load(), int64(500))
	assert.EqualValues(t, 500, refused.Load()+unauthorized.Load())
}

// TestGarbageFloodDoesNotDelayARealSyncerOrPodLogs is the scenario over a real TLS
// tunnel: while 500 garbage-token requests from one address keep a slow TokenReview
// backend busy, a pod-log request through the connected tunnel and a new handshake of the
// syncer (from another address) each complete within 1 s.
func TestGarbageFloodDoesNotDelayARealSyncerOrPodLogs(t *testing.T) {
	backend := &slowBackend{slots: make(chan struct{}, 4), delay: 50 * time.Millisecond}
	logs := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "log line\n") })
	p := newPair(t, "127.0.0.1:1", logs, func(o *server.Options) {
		o.Authenticator = server.NewCachedAuthenticator(backend, server.TokenCacheOptions{})
	})

	flood := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Go(func() {
			<-flood
			r := tunnelRequest(tunneltest.Target.ProxyPath()+"/api/v1/namespaces/team/pods/web/log", fmt.Sprintf("garbage-%d", i), false)
			r.RemoteAddr = "203.0.113.9:40000"
			rec := httptest.NewRecorder()
			p.srv.Server().ServeHTTP(rec, r)
		})
	}
	close(flood)
	time.Sleep(20 * time.Millisecond) // the flood is on

	start := time.Now()
	code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/pods/web/log", tunneltest.UserToken, nil)
	assert.Equal(t, http.StatusOK, code, body)
	assert.Less(t, time.Since(start), time.Second, "pod logs during the flood")

	held := p.srv.Registry().Get(tunneltest.Target)
	c, err := client.New(client.Options{
		ServerURL: p.srv.URL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		TLSConfig: p.pki.ClientTLS(), Handler: logs,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- c.Run(ctx) }()
	tunneltest.Eventually(t, 5*time.Second, "the syncer's new tunnel", func() bool {
		s := p.srv.Registry().Get(tunneltest.Target)
		return s != nil && s != held
	})
	assert.Less(t, time.Since(start), time.Second, "a syncer handshake during the flood")
	cancel()
	require.NoError(t, <-done)
	wg.Wait()
}
