package server

import (
	"net/http"
	"net/http/httputil"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// Session is a live syncer connection in the registry.
type Session struct {
	*tunnel.Session
	// User is the authenticated syncer identity.
	User UserInfo
	// RemoteAddr is the syncer's network address as seen by the server.
	RemoteAddr string
	// ConnectedAt is when the tunnel was established.
	ConnectedAt time.Time

	proxyMu   sync.Mutex
	transport *http.Transport        // nil until the first control plane → cluster request
	proxy     *httputil.ReverseProxy // nil until the first control plane → cluster request
	limits    *sessionLimits
	cred      credential // what the session was authenticated with, to check it again
	attrs     Attributes // the authorisation it was granted, to ask again
}

// reverseProxy returns the reverse proxy to the syncer over the session's streams, made
// on the first request: an idle session holds no proxy or transport.
func (s *Session) reverseProxy(log logr.Logger) *httputil.ReverseProxy {
	s.proxyMu.Lock()
	defer s.proxyMu.Unlock()
	if s.proxy == nil {
		s.transport, s.proxy = newSessionProxy(s, log)
	}
	return s.proxy
}

// closeIdleProxyConnections closes the proxy's idle streams, if it has any.
func (s *Session) closeIdleProxyConnections() {
	s.proxyMu.Lock()
	tr := s.transport
	s.proxyMu.Unlock()
	if tr != nil {
		tr.CloseIdleConnections()
	}
}

// SessionInfo describes a live session, for status pages and health checks.
type SessionInfo struct {
	// Target is the SyncTarget.
	Target tunnel.Target
	// User is the syncer identity.
	User string
	// RemoteAddr is the syncer's address.
	RemoteAddr string
	// ConnectedAt is when the tunnel was established.
	ConnectedAt time.Time
	// PingRTT is the last ping round trip time.
	PingRTT time.Duration
	// Streams is the number of open streams.
	Streams int
	// Replica is the advertised address of the replica holding the session (several
	// replicas only; see Replicas.Sessions).
	Replica string
}

// Info returns a description of the session.
func (s *Session) Info() SessionInfo {
	return SessionInfo{
		Target:      s.Target(),
		User:        s.User.Name,
		RemoteAddr:  s.RemoteAddr,
		ConnectedAt: s.ConnectedAt,
		PingRTT:     s.PingRTT(),
		Streams:     s.NumStreams(),
	}
}

// Registry holds at most one live session per SyncTarget. It is safe for
// concurrent use.
type Registry struct {
	mu       sync.Mutex
	sessions map[tunnel.Target]*Session
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{sessions: map[tunnel.Target]*Session{}}
}

// Get returns the live session of t, or nil.
func (r *Registry) Get(t tunnel.Target) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[t]
}

// Connected reports whether t has a live session.
func (r *Registry) Connected(t tunnel.Target) bool { return r.Get(t) != nil }

// List describes every live session, sorted by target.
func (r *Registry) List() []SessionInfo {
	r.mu.Lock()
	all := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	out := make([]SessionInfo, 0, len(all))
	for _, s := range all {
		out = append(out, s.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target.String() < out[j].Target.String() })
	return out
}

// sameIdentity reports whether a and b are the same authenticated identity (name and UID;
// groups may change between tokens of one identity).
func sameIdentity(a, b UserInfo) bool { return a.Name == b.Name && a.UID == b.UID }

// holder returns the identity holding t's session and whether there is one.
func (r *Registry) holder(t tunnel.Target) (UserInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sessions[t]; ok {
		return s.User, true
	}
	return UserInfo{}, false
}

// put registers s and returns the session it replaces, if any. A session of another
// identity is not replaced: put then registers nothing and reports false.
func (r *Registry) put(s *Session) (*Session, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.sessions[s.Target()]
	if old != nil && !sameIdentity(old.User, s.User) {
		return old, false
	}
	r.sessions[s.Target()] = s
	return old, true
}

// remove unregisters s unless a newer session replaced it already.
func (r *Registry) remove(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sessions[s.Target()] == s {
		delete(r.sessions, s.Target())
	}
}

func (r *Registry) all() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}
