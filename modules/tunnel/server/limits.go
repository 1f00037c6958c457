package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound what one tunnel session may hold on the server, so that one syncer (or the
// users of one SyncTarget) cannot exhaust the server for the others. Zero fields take the
// defaults.
type Limits struct {
	// MaxUpstreamStreams is the most syncer → upstream streams one session may have open at
	// once; a stream beyond it is closed at once (client-go retries). Default 1024.
	MaxUpstreamStreams int
	// MaxProxyRequests is the most control plane → cluster requests in flight through one
	// session (log follows and exec sessions count while they last); beyond it: 429.
	// Default 256.
	MaxProxyRequests int
	// MaxProxyRequestsPerUser is the most of those one user (name and UID) may hold, so
	// that one user cannot take all of a target's slots; beyond it: 429. Default 64.
	MaxProxyRequestsPerUser int
	// MaxRequestDuration ends a control plane → cluster request (a followed log, an
	// exec or port-forward session, a watch) that lasts longer. Default 4 h.
	MaxRequestDuration time.Duration
	// MaxRequestBodyBytes bounds the body of a forwarded request that is not an upgrade;
	// beyond it: 413. Default 1 MiB.
	MaxRequestBodyBytes int64
	// MaxHeaderBytes bounds the request headers the server reads. Default 64 KiB.
	MaxHeaderBytes int
	// MaxReviewsPerSource is the most bearer-token reviews in flight for callers of one
	// source IP address; beyond it: 429, before any review. Cached tokens hold a slot only
	// for the cache lookup. Default 16.
	MaxReviewsPerSource int
	// MaxConnections is the most TCP connections the server holds at once, counted when
	// accepted (before TLS and authentication); a connection beyond it is closed at once.
	// Default 10,000.
	MaxConnections int
	// MaxConnectionsPerSource is the most of those from one source IP address. Syncers
	// behind one NAT share an address: keep it above the number of clusters behind one.
	// Default 2,048.
	MaxConnectionsPerSource int
}

// Default limits.
const (
	DefaultMaxUpstreamStreams  = 1024
	DefaultMaxProxyRequests    = 256
	DefaultMaxRequestsPerUser  = 64
	DefaultMaxRequestDuration  = 4 * time.Hour
	DefaultMaxRequestBodyBytes = 1 << 20
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultMaxReviewsPerSource = 16
)

func (l Limits) withDefaults() Limits {
	if l.MaxUpstreamStreams <= 0 {
		l.MaxUpstreamStreams = DefaultMaxUpstreamStreams
	}
	if l.MaxProxyRequests <= 0 {
		l.MaxProxyRequests = DefaultMaxProxyRequests
	}
	if l.MaxProxyRequestsPerUser <= 0 {
		l.MaxProxyRequestsPerUser = DefaultMaxRequestsPerUser
	}
	if l.MaxRequestDuration <= 0 {
		l.MaxRequestDuration = DefaultMaxRequestDuration
	}
	if l.MaxRequestBodyBytes <= 0 {
		l.MaxRequestBodyBytes = DefaultMaxRequestBodyBytes
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.MaxConnectionsPerSource <= 0 {
		l.MaxConnectionsPerSource = DefaultMaxConnectionsPerSource
	}
	if l.MaxReviewsPerSource <= 0 {
		l.MaxReviewsPerSource = DefaultMaxReviewsPerSource
	}
	return l
}

// sessionLimits counts what one session holds.
type sessionLimits struct {
	max      Limits
	streams  atomic.Int64
	requests atomic.Int64
	perUser  *sourceLimiter // requests in flight per user
}

func newSessionLimits(l Limits) *sessionLimits {
	l = l.withDefaults()
	return &sessionLimits{max: l, perUser: newSourceLimiter(l.MaxProxyRequestsPerUser)}
}

// take increments c unless that would exceed limit.
func take(c *atomic.Int64, limit int) bool {
	if c.Add(1) > int64(limit) {
		c.Add(-1)
		return false
	}
	return true
}

func (l *sessionLimits) takeStream() bool { return take(&l.streams, l.max.MaxUpstreamStreams) }
func (l *sessionLimits) releaseStream()   { l.streams.Add(-1) }

// userKey identifies a user for the per-user limit.
func userKey(u UserInfo) string { return u.Name + "\x00" + u.UID }

// takeRequest takes a slot of the session and one of the user; it reports which limit
// refused it ("" when taken).
func (l *sessionLimits) takeRequest(user string) string {
	if !l.perUser.take(user) {
		return "per user"
	}
	if !take(&l.requests, l.max.MaxProxyRequests) {
		l.perUser.release(user)
		return "per target"
	}
	return ""
}

func (l *sessionLimits) releaseRequest(user string) {
	l.requests.Add(-1)
	l.perUser.release(user)
}

// limitBody refuses a declared body over max with 413 and caps an undeclared one (chunked);
// upgrades are streams, not bodies, and are not capped. It reports whether to go on.
func limitBody(w http.ResponseWriter, r *http.Request, limit int64) bool {
	if isUpgrade(r) {
		return true
	}
	if r.ContentLength > limit {
		http.Error(w, fmt.Sprintf("request body of %d bytes is over the tunnel's limit of %d bytes", r.ContentLength, limit), http.StatusRequestEntityTooLarge)
		return false
	}
	if r.Body != nil && r.Body != http.NoBody {
		// The server's own writer: MaxBytesReader tells it to close the connection once
		// the limit is hit (the rest of the body is never read), through a method no
		// wrapper passes on.
		r.Body = http.MaxBytesReader(unwrapDeadline(w), r.Body, limit)
	}
	return true
}

func isUpgrade(r *http.Request) bool {
	if !headerHasToken(r.Header, "Connection", "upgrade") {
		return false
	}
	// Only the protocols the API server upgrades exec/attach/port-forward to; any
	// other Upgrade header must not lift the body limit.
	up := strings.ToLower(r.Header.Get("Upgrade"))
	return up == "websocket" || strings.HasPrefix(up, "spdy/")
}

// proxyErrorStatus maps a failure inside the reverse proxy to a status: a body cut at the
// limit is the caller's fault (413), anything else is the tunnel's (502).
func proxyErrorStatus(err error) int {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadGateway
}

// sourceLimiter counts work in flight per key (a source address, a user). Entries leave
// the map when their count drops to zero, so it holds at most one entry per request in
// flight.
type sourceLimiter struct {
	max   int
	mu    sync.Mutex
	count map[string]int
}

func newSourceLimiter(limit int) *sourceLimiter {
	return &sourceLimiter{max: limit, count: map[string]int{}}
}

// sourceOf is the IP address of a request's peer (RemoteAddr without the port).
func sourceOf(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

func (l *sourceLimiter) take(src string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[src] >= l.max {
		return false
	}
	l.count[src]++
	return true
}

func (l *sourceLimiter) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[src] <= 1 {
		delete(l.count, src)
		return
	}
	l.count[src]--
}
