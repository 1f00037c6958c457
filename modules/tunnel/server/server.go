// Package server is the control-plane side of the tunnel: it accepts syncer
// connections (one per SyncTarget, authenticated and authorised against the
// upstream API), connects the syncer's upstream streams to the one upstream
// API address, and forwards authorised control plane requests for pod
// subresources and read-only GETs through the tunnel to the syncer.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// NamespaceMapper maps an upstream namespace of the target's logical cluster
// to the downstream namespace on the target's physical cluster.
type NamespaceMapper func(ctx context.Context, target tunnel.Target, upstreamNamespace string) (string, error)

// WorkspaceNamespaceMapper maps an upstream namespace of a kcp workspace (a logical
// cluster name or path, already validated) to the downstream namespace on the target's
// physical cluster; it fails when the namespace is not placed on the target.
type WorkspaceNamespaceMapper func(ctx context.Context, target tunnel.Target, workspace, upstreamNamespace string) (string, error)

// Options configure a Server.
type Options struct {
	// UpstreamAddress is host:port of the upstream API server; every syncer
	// stream is connected there and nowhere else. Required.
	UpstreamAddress string
	// Authenticator validates the bearer tokens of users' requests (tokens meant for the
	// API server). Required.
	Authenticator Authenticator
	// SyncerAuthenticator validates the bearer tokens of syncer handshakes (and of their
	// re-checks): typically a TokenReviewAuthenticator with the tunnel's own audience, so
	// that the token a syncer shows the tunnel server is not one the API server accepts.
	// Default Authenticator.
	SyncerAuthenticator Authenticator
	// Authorizer answers SubjectAccessReviews. Required.
	Authorizer Authorizer
	// NamespaceMapper maps namespaces for control plane → cluster requests.
	// Nil disables those requests (404).
	NamespaceMapper NamespaceMapper
	// WorkspaceNamespaces maps namespaces of requests that name a workspace
	// (<target>/proxy/clusters/<workspace>/api/...; kcp): the caller is authenticated and
	// authorised in that workspace. Nil disables those requests (404).
	WorkspaceNamespaces WorkspaceNamespaceMapper
	// TunnelVerb is the verb on synctargets/tunnel (resource name = the SyncTarget) that
	// lets an identity hold a target's tunnel. Default "update"; kcp's plugin grants
	// "get", so a server for kcp sets that.
	TunnelVerb string
	// Events relays syncers' Events into the workspaces placed on their SyncTargets
	// (<target>/events/clusters/<cluster>/api/v1/...). Nil disables the relay (404).
	Events EventSink
	// EventQPS and EventBurst bound the Events relayed for one SyncTarget (defaults
	// DefaultEventQPS, DefaultEventBurst).
	EventQPS   float64
	EventBurst int
	// Registry holds live sessions. Default a new one.
	Registry *Registry
	// Logger receives structured logs. Default logr.Discard().
	Logger logr.Logger
	// Observer receives events. Default tunnel.NopObserver.
	Observer tunnel.Observer
	// Keepalive configures WebSocket pings (5 s, 3 missed).
	Keepalive tunnel.Keepalive
	// UpstreamDialTimeout bounds dials to UpstreamAddress. Default 10 s.
	UpstreamDialTimeout time.Duration
	// Limits bound each session's streams, requests and request sizes.
	Limits Limits
	// ReauthorizePeriod is how often a session's identity is checked again (token still
	// valid for the same user, RBAC still allowing the tunnel, client certificate not
	// expired); a definite no closes the session (reason revoked). Default 1 min;
	// negative disables.
	ReauthorizePeriod time.Duration
	// IdleTimeout closes a keep-alive connection that sends no new request for this
	// long (tunnels and upgraded streams are not idle connections). Default 2 min.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write of a response (and each flush): a client that stops
	// reading is cut off after it. Followed logs and watches stay open while their reader
	// keeps up; tunnels and upgraded exec/attach/port-forward sessions have no write
	// deadline. Default 30 s.
	WriteTimeout time.Duration

	// Addr is the listen address of ListenAndServe, e.g. ":8443".
	Addr string
	// CertFile and KeyFile are the serving certificate. Required unless
	// TLSConfig or Insecure is set.
	CertFile, KeyFile string
	// ClientCAFile verifies optional client certificates (CN = user, O = groups).
	ClientCAFile string
	// TLSConfig overrides CertFile, KeyFile and ClientCAFile.
	TLSConfig *tls.Config
	// Insecure serves plain HTTP. For tests only.
	Insecure bool
	// Handler serves every path outside tunnel.PathPrefix (status page,
	// health endpoints, metrics). Nil answers them with 404.
	Handler http.Handler
	// Replicas coordinates this server with other replicas (session Leases, forwarding
	// users' requests to the replica holding a session). Nil: a single replica.
	Replicas *Replicas
}

// Defaults of Options.
const (
	DefaultReauthorizePeriod = time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultTunnelVerb        = "update"
)

// RequestObserver is implemented by an Observer that also wants to count
// control plane → cluster requests by response status code. Upgrades that
// succeed count as 101. Only requests that were authorised and found their
// target connected are counted, so its target labels stay bounded by the
// sessions the server held.
type RequestObserver interface {
	ProxiedRequest(t tunnel.Target, code int)
}

// Server is the tunnel server. It is an http.Handler; Serve and
// ListenAndServe run it with TLS.
type Server struct {
	opts     Options
	log      logr.Logger
	obs      tunnel.Observer
	registry *Registry
	tls      *tls.Config
	reviews  *sourceLimiter // bearer-token reviews in flight per source address
	events   *eventRelay    // nil: no Event relay

	baseCtx context.Context
	stop    context.CancelFunc
	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup // live tunnel handlers
}

var _ http.Handler = (*Server)(nil)

// New validates opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.UpstreamAddress == "" {
		return nil, errors.New("tunnel server: UpstreamAddress is required")
	}
	if _, _, err := net.SplitHostPort(opts.UpstreamAddress); err != nil {
		return nil, fmt.Errorf("tunnel server: UpstreamAddress: %w", err)
	}
	if opts.Authenticator == nil || opts.Authorizer == nil {
		return nil, errors.New("tunnel server: Authenticator and Authorizer are required")
	}
	if opts.SyncerAuthenticator == nil {
		opts.SyncerAuthenticator = opts.Authenticator
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	if opts.Observer == nil {
		opts.Observer = tunnel.NopObserver{}
	}
	if opts.Registry == nil {
		opts.Registry = NewRegistry()
	}
	if opts.UpstreamDialTimeout <= 0 {
		opts.UpstreamDialTimeout = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.TunnelVerb == "" {
		opts.TunnelVerb = DefaultTunnelVerb
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.ReauthorizePeriod == 0 {
		opts.ReauthorizePeriod = DefaultReauthorizePeriod
	}
	opts.Limits = opts.Limits.withDefaults()
	s := &Server{opts: opts, log: opts.Logger, obs: opts.Observer, registry: opts.Registry,
		reviews: newSourceLimiter(opts.Limits.MaxReviewsPerSource), events: newEventRelay(opts.Events, maxRelayTargets, opts.EventQPS, opts.EventBurst)}
	if !opts.Insecure {
		cfg, err := serverTLS(opts)
		if err != nil {
			return nil, fmt.Errorf("tunnel server: %w", err)
		}
		s.tls = cfg
	}
	s.baseCtx, s.stop = context.WithCancel(context.Background())
	return s, nil
}

func serverTLS(opts Options) (*tls.Config, error) {
	if opts.TLSConfig != nil {
		cfg := opts.TLSConfig.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		return atLeastTLS12(cfg), nil
	}
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("TLS is required: set CertFile and KeyFile (or Insecure for tests)")
	}
	cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load serving certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// HTTP/1.1 only: WebSocket and upgrades need it.
		NextProtos: []string{"http/1.1"},
	}
	if opts.ClientCAFile != "" {
		pem, err := os.ReadFile(opts.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA file %s holds no certificate", opts.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// Registry returns the live session registry.
func (s *Server) Registry() *Registry { return s.registry }

// TLSConfig returns the serving TLS configuration (nil when Insecure).
func (s *Server) TLSConfig() *tls.Config { return s.tls }

// ListenAndServe listens on Options.Addr and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("tunnel server listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (wrapped in TLS unless Insecure) until ctx ends, then
// closes every session gracefully and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if !s.closed {
		s.wg.Go(s.reauthorizeLoop)
	}
	s.mu.Unlock()
	ln = corkListener{newConnLimitListener(ln, s.opts.Limits, s.log)}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	srv := &http.Server{
		Handler:           s,
		ConnContext:       withConn,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.Limits.MaxHeaderBytes,
		ErrorLog:          stdlog.New(logWriter{s.log}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("tunnel server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	s.Close()
	err := srv.Shutdown(shutdownCtx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("tunnel server shutdown: %w", err)
	}
	return nil
}

// Close closes every session gracefully and waits for their handlers. The
// server refuses new tunnels afterwards.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	var wg sync.WaitGroup
	for _, sess := range s.registry.all() {
		wg.Go(func() { sess.Close(tunnel.ReasonShutdown) })
	}
	wg.Wait()
	s.wg.Wait()
}

// ServeHTTP routes syncer tunnel handshakes and control plane requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w, done := withWriteDeadlines(w, s.opts.WriteTimeout)
	defer done()
	if s.opts.Handler != nil && !strings.HasPrefix(r.URL.Path, tunnel.PathPrefix) && !isPeerRequest(r) {
		s.opts.Handler.ServeHTTP(w, r)
		return
	}
	// The target is checked before anything else: an invalid name never reaches the
	// Authenticator, the Authorizer, the registry, logs or metric labels.
	t, rest, err := tunnel.ParsePath(r.URL.Path)
	if err != nil {
		code := http.StatusNotFound
		if errors.Is(err, tunnel.ErrInvalidTarget) {
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
		return
	}
	switch {
	case rest == "" && isPeerRequest(r):
		http.Error(w, "tunnels are not accepted on the replica port", http.StatusNotFound)
	case rest == "":
		s.serveTunnel(w, r, t)
	case strings.HasPrefix(rest, "/"+tunnel.ProxySegment+"/"):
		s.serveProxy(w, r, t, strings.TrimPrefix(rest, "/"+tunnel.ProxySegment))
	case strings.HasPrefix(rest, "/"+tunnel.EventsSegment+"/"):
		s.serveEvents(w, r, t, strings.TrimPrefix(rest, "/"+tunnel.EventsSegment))
	default:
		http.Error(w, fmt.Sprintf("no such tunnel endpoint %q", r.URL.Path), http.StatusNotFound)
	}
}

// refuseAuthentication answers a failed authentication: 401 with a Bearer challenge, 429
// with a hint to come back in a second, 503 as it is.
func refuseAuthentication(w http.ResponseWriter, code int, err error) {
	switch code {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="tmc-syncer-tunnel"`)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, err.Error(), code)
}

func isWebSocketUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// serveTunnel handles a syncer handshake and blocks for the session's life.
func (s *Server) serveTunnel(w http.ResponseWriter, r *http.Request, t tunnel.Target) {
	log := s.log.WithValues("syncTarget", t.String(), "remote", r.RemoteAddr)
	if !isWebSocketUpgrade(r) {
		http.Error(w, "expected a WebSocket upgrade (GET with Connection: Upgrade, Upgrade: websocket)", http.StatusBadRequest)
		return
	}
	if !headerHasToken(r.Header, "Sec-WebSocket-Protocol", tunnel.Subprotocol) {
		http.Error(w, fmt.Sprintf("unsupported tunnel protocol: want WebSocket subprotocol %s", tunnel.Subprotocol), http.StatusBadRequest)
		return
	}
	user, code, err := s.authenticate(r, s.opts.SyncerAuthenticator, t.Cluster)
	if err != nil {
		log.Info("tunnel refused", "code", code, "err", err.Error())
		refuseAuthentication(w, code, err)
		return
	}
	attrs := Attributes{
		User: user, Cluster: t.Cluster, Verb: s.opts.TunnelVerb,
		Group: "workload.kcp.io", Resource: "synctargets", Subresource: "tunnel", Name: t.Name,
	}
	if code, err := s.authorize(r.Context(), attrs); err != nil {
		log.Info("tunnel refused", "user", user.Name, "code", code, "err", err.Error())
		http.Error(w, err.Error(), code)
		return
	}
	// Only the identity holding a target's session may replace it: another one, even
	// authorised, would take over the target's traffic (hijack).
	if holder, ok := s.registry.holder(t); ok && !sameIdentity(holder, user) {
		log.Info("tunnel refused: held by another identity", "user", user.Name, "holder", holder.Name)
		http.Error(w, fmt.Sprintf("sync target %s is connected with another identity", t), http.StatusConflict)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "tunnel server is shutting down", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	// The handler returns once the session is up (the WebSocket is hijacked, so the HTTP
	// server lets go of the connection and of this goroutine with its handshake-sized
	// stack); the session's own goroutine serves its streams and cleans up at its end.
	live := false
	defer func() {
		if !live {
			s.wg.Done()
		}
	}()
	clearWriteDeadline(r.Context()) // the tunnel's liveness is its keepalive
	// With several replicas the Lease says who holds the target: taken here (or refused
	// when another identity holds it live on another replica), released when the
	// session ends.
	if code, err := s.acquireLease(r.Context(), t, user, r.RemoteAddr); err != nil {
		log.Info("tunnel refused", "user", user.Name, "code", code, "err", err.Error())
		http.Error(w, err.Error(), code)
		return
	}
	ws, err := websocket.Accept(withSmallBuffers(w), r, &websocket.AcceptOptions{Subprotocols: []string{tunnel.Subprotocol}})
	if err != nil {
		// Accept has written the HTTP error already.
		log.Info("tunnel handshake failed", "err", err.Error())
		s.releaseLease(t, nil)
		return
	}
	limits := newSessionLimits(s.opts.Limits)
	var streams sync.WaitGroup // upstream streams; added to only by the session's goroutine
	upstream := func(c net.Conn) {
		if !limits.takeStream() {
			log.Info("upstream stream refused: session at its stream limit", "limit", s.opts.Limits.MaxUpstreamStreams)
			_ = c.Close()
			return
		}
		streams.Go(func() {
			defer limits.releaseStream()
			s.pipeUpstream(log, c)
		})
	}
	tsess, err := tunnel.NewSession(s.baseCtx, ws, false, t, s.opts.Keepalive, s.obs, log,
		tunnel.WithCork(corkOf(r.Context())), tunnel.WithStreamHandler(tunnel.StreamUpstream, upstream))
	if err != nil {
		log.Error(err, "tunnel session")
		s.releaseLease(t, nil)
		return
	}
	sess := &Session{Session: tsess, User: user, RemoteAddr: r.RemoteAddr, ConnectedAt: time.Now(), limits: limits,
		cred: credentialOf(r), attrs: attrs}
	old, ok := s.registry.put(sess)
	if !ok {
		// Another identity won the race since the check above.
		log.Info("tunnel refused: held by another identity", "user", user.Name, "holder", old.User.Name)
		sess.Close(tunnel.ReasonConflict)
		sess.closeIdleProxyConnections()
		streams.Wait()
		s.releaseLease(t, nil)
		return
	}
	s.holdLease(sess)
	if old != nil {
		log.Info("newer tunnel replaces the older one", "old", old.RemoteAddr)
		s.wg.Go(func() { old.Close(tunnel.ReasonReplaced) })
	}
	log.Info("tunnel connected", "user", user.Name)
	s.obs.Connected(t, 0)
	live = true
	sess.AfterClose(func() {
		defer s.wg.Done()
		s.registry.remove(sess)
		sess.closeIdleProxyConnections()
		streams.Wait()
		log.Info("tunnel disconnected", "reason", string(sess.Reason()))
		s.obs.Disconnected(t, sess.Reason())
		s.releaseLease(t, sess)
	})
}

// pipeUpstream connects one syncer stream to the upstream API address.
func (s *Server) pipeUpstream(log logr.Logger, c net.Conn) {
	ctx, cancel := context.WithTimeout(s.baseCtx, s.opts.UpstreamDialTimeout)
	defer cancel()
	up, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.opts.UpstreamAddress)
	if err != nil {
		log.Info("dial upstream failed", "upstream", s.opts.UpstreamAddress, "err", err.Error())
		_ = c.Close()
		return
	}
	tunnel.Pipe(c, up)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(2).Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
