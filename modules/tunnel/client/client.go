// Package client is the syncer side of the tunnel: it dials the tunnel
// server, keeps the connection up (backoff, circuit breaker, keepalive),
// offers a DialContext for the upstream rest.Config and serves control plane
// requests that arrive through the tunnel.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/sony/gobreaker/v2"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// TokenSource returns the bearer token presented to the tunnel server. It is
// called before every connection attempt, so rotated tokens are picked up.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken returns a TokenSource of a fixed token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

// FileToken returns a TokenSource that reads the token file (e.g. a projected
// ServiceAccount token) on every attempt.
func FileToken(path string) TokenSource {
	return func(context.Context) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// Breaker configures the circuit breaker around connection attempts.
type Breaker struct {
	// FailureThreshold consecutive failed attempts open the breaker. Default 5.
	FailureThreshold uint32
	// OpenTimeout is how long the breaker stays open before one half-open
	// probe is allowed. Default 30 s (the backoff cap, so an open breaker
	// never delays a reconnect much beyond what the backoff would).
	OpenTimeout time.Duration
}

// Options configure a Client.
type Options struct {
	// ServerURL is the tunnel server base URL, https://host:port (http:// only
	// for a server run with Insecure). Required.
	ServerURL string
	// Target is the SyncTarget this syncer serves. Required.
	Target tunnel.Target
	// Token is the bearer token source: a token bound to the tunnel's audience
	// (BoundToken, a projected token file), or the syncer's upstream token where the
	// control plane cannot issue one. Required unless TLSConfig carries a client
	// certificate; with none, no Authorization header is sent.
	Token TokenSource
	// TLSConfig verifies the server (RootCAs) and may carry a client
	// certificate. Nil means the system roots.
	TLSConfig *tls.Config
	// Handler serves control plane → physical cluster requests (see
	// NewDownstreamHandler). Nil refuses them all with 404.
	Handler http.Handler
	// Logger receives structured logs. Default logr.Discard().
	Logger logr.Logger
	// Observer receives events. Default tunnel.NopObserver.
	Observer tunnel.Observer
	// Keepalive configures WebSocket pings (5 s, 3 missed).
	Keepalive tunnel.Keepalive
	// Backoff configures reconnect delays (250 ms … 30 s, reset by a healthy
	// session; ≤ 500 ms for 30 s after the server announced a restart).
	Backoff Backoff
	// Breaker configures the circuit breaker (5 failures, 30 s open).
	Breaker Breaker
	// HandshakeTimeout bounds one connection attempt. Default 30 s.
	HandshakeTimeout time.Duration
	// Clock is the time source of the backoff. Default real time.
	Clock Clock
}

// Client keeps one tunnel to the server up while Run runs.
type Client struct {
	opts    Options
	url     string
	log     logr.Logger
	obs     tunnel.Observer
	clock   Clock
	rnd     func() float64
	httpc   *http.Client
	breaker *gobreaker.CircuitBreaker[*tunnel.Session]

	mu      sync.Mutex
	state   tunnel.State
	sess    *tunnel.Session
	ready   chan struct{} // closed when sess becomes non-nil
	stopped chan struct{} // closed when Run returns
	running bool
}

// ErrStopped is returned by DialContext after Run has returned.
var ErrStopped = errors.New("tunnel client stopped")

// New validates opts and returns a Client; call Run to connect.
func New(opts Options) (*Client, error) {
	if opts.ServerURL == "" {
		return nil, errors.New("tunnel client: ServerURL is required")
	}
	if !strings.HasPrefix(opts.ServerURL, "https://") && !strings.HasPrefix(opts.ServerURL, "http://") {
		return nil, fmt.Errorf("tunnel client: ServerURL %q must be http(s)", opts.ServerURL)
	}
	if err := opts.Target.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel client: %w", err)
	}
	if opts.Token == nil && !hasClientCertificate(opts.TLSConfig) {
		return nil, errors.New("tunnel client: Token is required without a client certificate")
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	if opts.Observer == nil {
		opts.Observer = tunnel.NopObserver{}
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 30 * time.Second
	}
	if opts.Breaker.FailureThreshold == 0 {
		opts.Breaker.FailureThreshold = 5
	}
	if opts.Breaker.OpenTimeout <= 0 {
		opts.Breaker.OpenTimeout = 30 * time.Second
	}
	if opts.Handler == nil {
		opts.Handler = http.NotFoundHandler()
	}
	opts.Backoff = opts.Backoff.withDefaults()
	c := &Client{
		opts:    opts,
		url:     strings.TrimSuffix(opts.ServerURL, "/") + opts.Target.Path(),
		log:     opts.Logger.WithValues("syncTarget", opts.Target.String()),
		obs:     opts.Observer,
		clock:   opts.Clock,
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
	}
	c.httpc = &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     secureTLS(opts.TLSConfig),
			TLSHandshakeTimeout: 10 * time.Second,
		},
		// Never follow redirects: the token must only go to the configured server.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.breaker = gobreaker.NewCircuitBreaker[*tunnel.Session](gobreaker.Settings{
		Name:        "tunnel " + opts.Target.String(),
		MaxRequests: 1,
		Timeout:     opts.Breaker.OpenTimeout,
		ReadyToTrip: func(counts gobreaker.Counts) bool {
			return counts.ConsecutiveFailures >= opts.Breaker.FailureThreshold
		},
		// A server that is not listening (restarting, not up yet) costs nothing to
		// retry and the backoff already paces the attempts; opening the breaker on it
		// would delay the reconnect by OpenTimeout after the server is back. Only
		// servers that answer and fail (refusals, TLS or handshake errors) count.
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, syscall.ECONNREFUSED)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			c.log.Info("tunnel circuit breaker changed", "from", from.String(), "to", to.String())
		},
	})
	return c, nil
}

// State returns the connection manager state.
func (c *Client) State() tunnel.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// BreakerState returns the circuit breaker state: "closed", "half-open" or "open".
func (c *Client) BreakerState() string { return c.breaker.State().String() }

// Session returns the live session, or nil while disconnected.
func (c *Client) Session() *tunnel.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

func (c *Client) setState(to tunnel.State) {
	c.mu.Lock()
	from := c.state
	c.state = to
	c.mu.Unlock()
	if from != to {
		c.log.V(1).Info("tunnel state changed", "from", from.String(), "to", to.String())
		c.obs.StateChanged(c.opts.Target, from, to)
	}
}

// Run connects and keeps the tunnel up until ctx ends, then closes it
// gracefully and returns nil. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("tunnel client: Run called twice")
	}
	c.running = true
	c.mu.Unlock()
	defer func() {
		c.setState(tunnel.StateDisconnected)
		c.httpc.CloseIdleConnections()
		close(c.stopped)
	}()

	p := &pacer{b: c.opts.Backoff, rnd: c.rnd}
	var lostAt time.Time
	for ctx.Err() == nil {
		c.setState(tunnel.StateConnecting)
		sess, err := c.breaker.Execute(func() (*tunnel.Session, error) { return c.connect(ctx) })
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			reason := classify(err)
			delay, bound := p.failed(c.clock.Now(), err)
			c.obs.ConnectFailed(c.opts.Target, reason)
			c.log.Info("tunnel connection failed", "reason", string(reason), "attempt", p.attempt,
				"retryIn", delay.String(), "backoffBound", bound.String(), "err", err.Error())
			if !c.wait(ctx, delay) {
				return nil
			}
			continue
		}

		connectedAt := c.clock.Now()
		var reconnect time.Duration
		if !lostAt.IsZero() {
			reconnect = connectedAt.Sub(lostAt)
		}
		c.log.Info("tunnel connected", "reconnectAfter", reconnect.String())
		c.obs.Connected(c.opts.Target, reconnect)
		c.setState(tunnel.StateConnected)
		reason := c.serve(ctx, sess)
		lostAt = c.clock.Now()
		c.obs.Disconnected(c.opts.Target, reason)
		if ctx.Err() != nil {
			return nil
		}
		healthy := sess.Healthy() || lostAt.Sub(connectedAt) >= c.opts.Backoff.ResetAfter
		delay, bound := p.ended(lostAt, reason, healthy)
		c.log.Info("tunnel disconnected", "reason", string(reason), "healthy", healthy,
			"retryIn", delay.String(), "backoffBound", bound.String())
		if !c.wait(ctx, delay) {
			return nil
		}
	}
	return nil
}

func (c *Client) wait(ctx context.Context, d time.Duration) bool {
	c.setState(tunnel.StateBackoff)
	select {
	case <-ctx.Done():
		return false
	case <-c.clock.After(d):
		return true
	}
}

// serve publishes the session for dials, serves downstream requests on it
// and returns when it ends.
func (c *Client) serve(ctx context.Context, sess *tunnel.Session) tunnel.Reason {
	srv := &http.Server{
		Handler:           c.opts.Handler,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          stdlog.New(logWriter{c.log}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(sess.Listener(tunnel.StreamDownstream))
	}()

	c.mu.Lock()
	c.sess = sess
	close(c.ready)
	c.mu.Unlock()

	select {
	case <-sess.Done():
	case <-ctx.Done():
		sess.Close(tunnel.ReasonShutdown)
	}

	c.mu.Lock()
	c.sess = nil
	c.ready = make(chan struct{})
	c.mu.Unlock()
	_ = srv.Close()
	<-served
	return sess.Reason()
}

func hasClientCertificate(cfg *tls.Config) bool {
	return cfg != nil && (len(cfg.Certificates) > 0 || cfg.GetClientCertificate != nil)
}

// connect performs one attempt: WebSocket handshake with the bearer token,
// then the yamux session.
func (c *Client) connect(ctx context.Context) (*tunnel.Session, error) {
	hctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	header := http.Header{}
	if c.opts.Token != nil {
		token, err := c.opts.Token(hctx)
		if err != nil {
			return nil, &attemptError{reason: tunnel.ReasonHandshake, err: fmt.Errorf("get token: %w", err)}
		}
		header.Set("Authorization", "Bearer "+token)
	}
	var corked attemptCorks
	httpc := c.attemptClient(&corked)
	defer httpc.CloseIdleConnections()
	ws, resp, err := websocket.Dial(hctx, c.url, &websocket.DialOptions{
		HTTPClient:   httpc,
		HTTPHeader:   header,
		Subprotocols: []string{tunnel.Subprotocol},
	})
	if err != nil {
		return nil, handshakeError(resp, err)
	}
	if ws.Subprotocol() != tunnel.Subprotocol {
		_ = ws.Close(websocket.StatusProtocolError, "unsupported tunnel protocol")
		return nil, &attemptError{reason: tunnel.ReasonHandshake, err: fmt.Errorf("server did not agree to subprotocol %s", tunnel.Subprotocol)}
	}
	sess, err := tunnel.NewSession(ctx, ws, true, c.opts.Target, c.opts.Keepalive, c.obs, c.log, tunnel.WithCork(corked.outer.Load(), corked.inner.Load()))
	if err != nil {
		return nil, &attemptError{reason: tunnel.ReasonHandshake, err: err}
	}
	return sess, nil
}

// attemptCorks are the corked connections of one attempt: above TLS (outer)
// and the TCP connection (inner); over plain HTTP only inner.
type attemptCorks struct {
	outer, inner atomic.Pointer[tunnel.CorkedConn]
}

// attemptClient returns the HTTP client of one connection attempt. Its
// connection is corked (see tunnel.CorkedConn) above and below TLS, so the
// session can send every message in one TLS record run and one write.
func (c *Client) attemptClient(corked *attemptCorks) *http.Client {
	tr := c.httpc.Transport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := tunnel.NewCorkedConn(conn)
		corked.inner.Store(cc)
		return cc, nil
	}
	tr.DialContext = dial
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := secureTLS(c.opts.TLSConfig)
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		cfg.NextProtos = []string{"http/1.1"} // the WebSocket upgrade needs HTTP/1.1
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		cc := tunnel.NewCorkedConn(tc)
		corked.outer.Store(cc)
		return cc, nil
	}
	return &http.Client{Transport: tr, CheckRedirect: c.httpc.CheckRedirect}
}

// attemptError is a failed attempt with its classified reason.
type attemptError struct {
	reason tunnel.Reason
	status int // HTTP status of a refused handshake; 0 without a response
	err    error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

func handshakeError(resp *http.Response, err error) error {
	if resp == nil {
		return &attemptError{reason: tunnel.ReasonDial, err: fmt.Errorf("dial tunnel server: %w", err)}
	}
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
		_ = resp.Body.Close()
	}
	reason := tunnel.ReasonHandshake
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		reason = tunnel.ReasonUnauthorized
	case http.StatusForbidden:
		reason = tunnel.ReasonForbidden
	}
	msg := strings.TrimSpace(string(body))
	return &attemptError{
		reason: reason,
		status: resp.StatusCode,
		err:    fmt.Errorf("tunnel handshake refused: %s: %s", resp.Status, msg),
	}
}

func classify(err error) tunnel.Reason {
	var ae *attemptError
	switch {
	case errors.As(err, &ae):
		return ae.reason
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return tunnel.ReasonBreakerOpen
	}
	return tunnel.ReasonHandshake
}

// serverAway reports whether a failed attempt found no server to talk to: the
// connection was refused, reset or could not be routed, or the answer was 502,
// 503 or 504 (a server shutting down, or a proxy in front of it without a
// backend). Right after an announced restart these are expected and retried
// quickly; a server that answers and refuses is not.
func serverAway(err error) bool {
	var ae *attemptError
	if errors.As(err, &ae) && ae.status != 0 {
		switch ae.status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// DialContext opens a stream to the upstream API through the tunnel. network
// must be tcp, tcp4 or tcp6; addr is ignored because the server connects every
// stream to its one configured upstream address (TLS stays end to end, so the
// rest.Config keeps its host for SNI and verification). While the tunnel is
// down DialContext waits for it, bounded by ctx, so watches resume instead of
// failing. Set it as rest.Config.Dial.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("tunnel dial %s %s: unsupported network", network, addr)
	}
	for {
		c.mu.Lock()
		sess, ready := c.sess, c.ready
		c.mu.Unlock()
		if sess != nil {
			conn, err := sess.Open(ctx, tunnel.StreamUpstream)
			if err == nil {
				return conn, nil
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("tunnel dial %s: %w", addr, ctx.Err())
			}
			// The session is going away; wait for the next one.
			select {
			case <-sess.Done():
			case <-ctx.Done():
				return nil, fmt.Errorf("tunnel dial %s: %w", addr, ctx.Err())
			}
			continue
		}
		select {
		case <-ready:
		case <-c.stopped:
			return nil, ErrStopped
		case <-ctx.Done():
			return nil, fmt.Errorf("tunnel dial %s: waiting for the tunnel: %w", addr, ctx.Err())
		}
	}
}

// UpstreamConfig returns a copy of cfg whose connections go through the
// tunnel (Dial = DialContext). Host, TLS and credentials stay as they are:
// TLS to the upstream API is end to end.
func (c *Client) UpstreamConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Dial = c.DialContext
	return cfg
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(2).Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
