package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/hashicorp/yamux"
)

const (
	// DefaultPingInterval is how often each side pings the other.
	DefaultPingInterval = 5 * time.Second
	// DefaultMaxMissedPings is how many consecutive pings may go unanswered
	// before the connection is declared dead (3 × 5 s = 15 s).
	DefaultMaxMissedPings = 3
	// readEndWait bounds how long a session whose yamux ended waits for the
	// read side's end, which carries the peer's close status.
	readEndWait = time.Second
	// streamWindow is the yamux per-stream receive window; larger than the
	// 256 KiB default so one bulk stream fills a fast link.
	streamWindow = 4 << 20
)

// Keepalive configures the WebSocket ping loop.
type Keepalive struct {
	// Interval between pings; also the deadline of each ping. Default 5 s.
	Interval time.Duration
	// MaxMissed consecutive unanswered pings close the connection. Default 3.
	MaxMissed int
}

func (k Keepalive) withDefaults() Keepalive {
	if k.Interval <= 0 {
		k.Interval = DefaultPingInterval
	}
	if k.MaxMissed <= 0 {
		k.MaxMissed = DefaultMaxMissedPings
	}
	return k
}

// Session is one tunnel connection: a yamux session over a WebSocket, with
// a keepalive loop and byte accounting. Both client and server use it.
//
// Besides yamux's own two goroutines (reading and writing the connection), a
// session runs one goroutine of its own: it waits for the end (and, with
// WithStreamHandler, accepts the peer's streams). Pings run from a timer and
// the end of the context from context.AfterFunc, so an idle session costs no
// goroutine for them.
type Session struct {
	target Target
	ws     *websocket.Conn
	conn   *countingConn
	mux    *yamux.Session
	obs    Observer
	log    logr.Logger
	ka     Keepalive
	opts   sessionOptions

	inner  context.Context // ends when the session is torn down
	cancel context.CancelFunc
	done   chan struct{}

	closing sync.Mutex // held by closeGracefully

	mu         sync.Mutex
	reason     Reason
	rtt        time.Duration
	answered   bool        // the peer answered a ping at least once
	missed     int         // consecutive unanswered pings
	pinger     *time.Timer // nil once the session is torn down
	afterClose []func()
	closed     bool // torn down: AfterClose runs its function at once
	pinging    sync.WaitGroup
}

// NewSession starts a yamux session over an established WebSocket. isClient
// selects the yamux role (the side that dialed the WebSocket). The session
// pings the peer as configured by ka and closes itself when the peer is gone
// or ctx ends.
func NewSession(ctx context.Context, ws *websocket.Conn, isClient bool, t Target, ka Keepalive, obs Observer, log logr.Logger, opts ...SessionOption) (*Session, error) {
	if obs == nil {
		obs = NopObserver{}
	}
	var so sessionOptions
	for _, o := range opts {
		o(&so)
	}
	ka = ka.withDefaults()
	// The connection lives on an inner context so that the end of ctx leads
	// to a graceful close (GoAway, close frame) rather than an abrupt one.
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx))
	nc := &countingConn{Conn: websocket.NetConn(inner, ws, websocket.MessageBinary), ws: ws, ctx: inner, readEnded: make(chan struct{}), target: t, obs: obs}
	if len(so.cork) > 0 {
		nc.cork = so.cork
	}
	cfg := yamuxConfig(log)
	var (
		mux *yamux.Session
		err error
	)
	if isClient {
		mux, err = yamux.Client(nc, cfg)
	} else {
		mux, err = yamux.Server(nc, cfg)
	}
	if err != nil {
		cancel()
		_ = ws.CloseNow()
		return nil, fmt.Errorf("start yamux session: %w", err)
	}
	s := &Session{target: t, ws: ws, conn: nc, mux: mux, obs: obs, log: log, ka: ka, opts: so, inner: inner, cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	return s, nil
}

func yamuxConfig(log logr.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false // the WebSocket ping loop does this job
	cfg.MaxStreamWindowSize = streamWindow
	cfg.ConnectionWriteTimeout = 30 * time.Second
	cfg.StreamOpenTimeout = 30 * time.Second
	cfg.StreamCloseTimeout = time.Minute
	cfg.LogOutput = nil
	cfg.Logger = yamuxLogger{log: log}
	return cfg
}

// run is the session's goroutine: it hands the peer's streams to the stream
// handler (if any), waits for the end and tears the session down.
func (s *Session) run(ctx context.Context) {
	// The end of ctx closes the session gracefully.
	shutdown := make(chan struct{})
	stopShutdown := context.AfterFunc(ctx, func() {
		defer close(shutdown)
		s.setReason(ReasonShutdown)
		s.closeGracefully()
		s.cancel()
	})
	s.mu.Lock()
	s.pinger = time.AfterFunc(s.ka.Interval, s.ping)
	s.mu.Unlock()

	if h := s.opts.streams; h != nil {
		for {
			c, err := s.mux.AcceptStreamWithContext(s.inner)
			if err != nil {
				break
			}
			h(s.track(c, s.opts.streamKind))
		}
	}
	select {
	case <-s.inner.Done(): // Close, the end of ctx, missed pings
	case <-s.mux.CloseChan():
		// yamux may notice the end on its write side first (a write after the
		// close frames crossed fails) while its receive loop is still reading:
		// the peer's close status comes with the end of that read, which
		// follows at once (yamux closes the connection). A receive loop that
		// stopped on its own (a protocol error) is not waited for.
		if s.conn.reading.Load() {
			wait := time.NewTimer(readEndWait)
			select {
			case <-s.conn.readEnded:
			case <-wait.C:
			}
			wait.Stop()
		}
		switch r, named := s.conn.closedFor.Load().(Reason); {
		case s.conn.peerClose() == websocket.StatusGoingAway:
			s.setReason(ReasonGoingAway)
		case named:
			s.setReason(r)
		default:
			s.setReason(ReasonClosed)
		}
	}

	// Let a graceful close in flight finish before the inner context ends:
	// ending it aborts a blocked read by closing the connection, and the peer
	// would see a broken connection instead of the close frame (and its reason).
	if !stopShutdown() {
		<-shutdown // the end of ctx came first
	}
	s.closing.Lock()
	s.closing.Unlock() //nolint:staticcheck // waits for Close's closeGracefully
	s.cancel()
	s.mu.Lock()
	s.pinger.Stop()
	s.pinger = nil // no ping starts from here on
	s.mu.Unlock()
	_ = s.mux.Close()
	_ = s.ws.CloseNow()
	s.pinging.Wait()
	close(s.done)

	s.mu.Lock()
	s.closed = true
	after := s.afterClose
	s.afterClose = nil
	s.mu.Unlock()
	for _, f := range after {
		f()
	}
}

// AfterClose has f called once the session is torn down (after Done is
// closed), from the session's goroutine; when it is torn down already, f runs
// before AfterClose returns. It lets an owner clean up without a goroutine of
// its own waiting for the session's end.
func (s *Session) AfterClose(f func()) {
	s.mu.Lock()
	if !s.closed {
		s.afterClose = append(s.afterClose, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	f()
}

func (s *Session) closeGracefully() {
	s.closing.Lock()
	defer s.closing.Unlock()
	_ = s.mux.GoAway()
	s.mu.Lock()
	reason := s.reason
	s.mu.Unlock()
	code := websocket.StatusNormalClosure
	if reason == ReasonShutdown {
		code = websocket.StatusGoingAway
	}
	// Close performs the close handshake (bounded by the library's timeout)
	// so the peer learns the reason instead of seeing a broken connection.
	_ = s.ws.Close(code, string(reason))
}

// ping sends one ping and waits for its pong (at most an interval), then
// schedules the next. It runs in a goroutine of its own, started by the
// session's timer, so only a ping in flight holds a goroutine.
func (s *Session) ping() {
	s.mu.Lock()
	if s.pinger == nil {
		s.mu.Unlock()
		return // torn down meanwhile
	}
	s.pinging.Add(1)
	s.mu.Unlock()
	defer s.pinging.Done()

	pctx, cancel := context.WithTimeout(s.inner, s.ka.Interval)
	start := time.Now()
	err := s.ws.Ping(pctx)
	cancel()
	next := s.ka.Interval
	if err == nil {
		rtt := time.Since(start)
		s.mu.Lock()
		s.missed = 0
		s.rtt = rtt
		s.answered = true
		s.mu.Unlock()
		s.obs.PingRTT(s.target, rtt)
		next -= rtt
	} else {
		if s.inner.Err() != nil {
			return
		}
		s.mu.Lock()
		s.missed++
		missed := s.missed
		s.mu.Unlock()
		next = 0 // the failed ping already waited a full interval
		s.log.V(2).Info("tunnel ping missed", "target", s.target.String(), "missed", missed, "err", err.Error())
		if missed >= s.ka.MaxMissed {
			s.log.Info("tunnel peer missed pongs, closing", "target", s.target.String(), "missed", missed)
			s.setReason(ReasonPingTimeout)
			s.cancelWith()
			return
		}
	}
	s.mu.Lock()
	if s.pinger != nil {
		s.pinger.Reset(max(next, time.Millisecond))
	}
	s.mu.Unlock()
}

// cancelWith ends the session without a close handshake: the peer is gone.
func (s *Session) cancelWith() {
	_ = s.mux.Close()
	_ = s.ws.CloseNow()
}

func (s *Session) setReason(r Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason == "" {
		s.reason = r
	}
}

// Close ends the session gracefully with the given reason and waits until it
// is torn down.
func (s *Session) Close(reason Reason) {
	s.setReason(reason)
	select {
	case <-s.done:
		return
	default:
	}
	s.closeGracefully()
	s.cancel()
	<-s.done
}

// Done is closed once the session is fully torn down.
func (s *Session) Done() <-chan struct{} { return s.done }

// Reason returns why the session ended ("" while it is up).
func (s *Session) Reason() Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Target returns the SyncTarget of the session.
func (s *Session) Target() Target { return s.target }

// PingRTT returns the last measured ping round trip time (0 before the first).
func (s *Session) PingRTT() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rtt
}

// Healthy reports whether the peer has answered a keepalive ping on this
// session: it accepted the connection and is serving it, not just accepting
// and dropping. The first ping goes out one Keepalive.Interval after the start.
func (s *Session) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.answered
}

// NumStreams returns the number of open streams.
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// Open opens a stream of the given kind to the peer. It fails fast when the
// session is closed; ctx bounds the wait for the peer's acknowledgement.
func (s *Session) Open(ctx context.Context, kind StreamKind) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := s.mux.OpenStream()
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{c: c}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("open tunnel stream: %w", r.err)
		}
		return s.track(r.c, kind), nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				_ = r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Accept waits for a stream opened by the peer.
func (s *Session) Accept(kind StreamKind) (net.Conn, error) {
	c, err := s.mux.AcceptStream()
	if err != nil {
		return nil, err
	}
	return s.track(c, kind), nil
}

// Listener returns a net.Listener of the streams the peer opens, for serving
// HTTP over the tunnel. Closing it does not close the session.
func (s *Session) Listener(kind StreamKind) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamListener{s: s, kind: kind, ctx: ctx, cancel: cancel}
}

func (s *Session) track(c net.Conn, kind StreamKind) net.Conn {
	s.obs.StreamOpened(s.target, kind)
	return &trackedConn{Conn: c, onClose: func() { s.obs.StreamClosed(s.target, kind) }}
}

type streamListener struct {
	s      *Session
	kind   StreamKind
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *streamListener) Accept() (net.Conn, error) {
	c, err := l.s.mux.AcceptStreamWithContext(l.ctx)
	if err != nil {
		if l.ctx.Err() != nil || errors.Is(err, yamux.ErrSessionShutdown) {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	return l.s.track(c, l.kind), nil
}

func (l *streamListener) Close() error {
	l.cancel()
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.s.mux.Addr() }

type trackedConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.onClose)
	return err
}

// CloseWrite half-closes the stream: yamux's Close sends FIN but keeps
// reading until the peer closes too.
func (c *trackedConn) CloseWrite() error { return c.Conn.Close() }

type countingConn struct {
	net.Conn // websocket.NetConn of ws: writes, Close, addresses
	target   Target
	obs      Observer
	cork     corker // nil: no cork under the WebSocket

	// Write coalescing: yamux writes a data frame as two writes, the 12-byte
	// header and then the body. Sending them as one WebSocket message (or,
	// with a cork, as two messages in one write) halves the TLS records and
	// syscalls per data frame. Only yamux's send loop writes, so no lock is
	// needed.
	hdr     [yamuxHeaderSize]byte
	pending bool
	buf     []byte

	// Reads go to ws directly rather than through websocket.NetConn, which turns
	// the peer's close frame into a bare io.EOF: the session needs its status to
	// tell a peer going away (1001) from one closing for another reason. Only
	// yamux's receive loop reads.
	ws        *websocket.Conn
	ctx       context.Context
	reader    io.Reader
	eof       bool
	closedBy  atomic.Int32  // close status the peer sent; 0 before that
	closedFor atomic.Value  // Reason the peer's normal closure named (replaced, revoked), if known
	readEnded chan struct{} // closed once a read fails: the read side is over
	endOnce   sync.Once
	reading   atomic.Bool // yamux's receive loop is inside Read
}

const yamuxHeaderSize = 12

// isDataHeader reports whether p is a yamux data frame header (version 0,
// type 0) announcing a non-empty body, which yamux writes next.
func isDataHeader(p []byte) bool {
	return len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == 0 && binary.BigEndian.Uint32(p[8:12]) > 0
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reading.Store(true)
	defer c.reading.Store(false)
	for {
		n, err := c.read(p)
		if err != nil {
			c.endOnce.Do(func() { close(c.readEnded) })
		}
		if n > 0 {
			c.obs.Bytes(c.target, Received, n)
			return n, err
		}
		if err != nil || len(p) == 0 {
			return 0, err
		}
	}
}

// read reads from the current binary message, moving to the next one at its
// end. Like websocket.NetConn, a normal or going-away close by the peer reads
// as io.EOF; unlike it, the status is kept (peerClose).
func (c *countingConn) read(p []byte) (int, error) {
	if c.eof {
		return 0, io.EOF
	}
	if c.reader == nil {
		typ, r, err := c.ws.Reader(c.ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != -1 {
				var ce websocket.CloseError
				if errors.As(err, &ce) && code == websocket.StatusNormalClosure {
					if r, ok := peerReasons[ce.Reason]; ok {
						c.closedFor.Store(r)
					}
				}
				c.closedBy.Store(int32(code))
				if code == websocket.StatusNormalClosure || code == websocket.StatusGoingAway {
					c.eof = true
					return 0, io.EOF
				}
			}
			return 0, err
		}
		if typ != websocket.MessageBinary {
			err := fmt.Errorf("unexpected %v message on the tunnel", typ)
			_ = c.ws.Close(websocket.StatusUnsupportedData, "binary messages only")
			return 0, err
		}
		c.reader = r
	}
	n, err := c.reader.Read(p)
	if errors.Is(err, io.EOF) {
		c.reader = nil
		err = nil
	}
	return n, err
}

// peerReasons are the reasons a peer may name in a normal closure's text and this
// side reports as such: the server replaced the session by a newer one of the same
// SyncTarget, or revoked it (token or RBAC gone). Any other text (it comes off the
// wire) is never used as a reason.
var peerReasons = map[string]Reason{string(ReasonReplaced): ReasonReplaced, string(ReasonRevoked): ReasonRevoked}

// peerClose returns the close status the peer sent, or -1 when it sent none
// (yet): the connection broke, or this side closed first.
func (c *countingConn) peerClose() websocket.StatusCode {
	if code := c.closedBy.Load(); code != 0 {
		return websocket.StatusCode(code)
	}
	return -1
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.cork != nil {
		return c.writeCorked(p)
	}
	if !c.pending && isDataHeader(p) {
		copy(c.hdr[:], p)
		c.pending = true
		return len(p), nil
	}
	if c.pending {
		c.pending = false
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err := c.write(c.buf)
		if cap(c.buf) > 1<<20 {
			c.buf = nil // do not pin a large buffer
		}
		return max(n-yamuxHeaderSize, 0), err
	}
	return c.write(p)
}

func (c *countingConn) write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.obs.Bytes(c.target, Sent, n)
	}
	return n, err
}

// writeCorked sends every write as its own WebSocket message, holding a data
// frame's header back under the cork until its body follows: one write on the
// connection per yamux frame, without copying the body.
func (c *countingConn) writeCorked(p []byte) (int, error) {
	header := !c.pending && isDataHeader(p)
	if !c.pending {
		c.cork.Cork()
	}
	n, err := c.write(p)
	if header && err == nil {
		c.pending = true
		return n, nil
	}
	c.pending = false
	if uerr := c.cork.Uncork(); err == nil && uerr != nil {
		return 0, uerr
	}
	return n, err
}

type yamuxLogger struct{ log logr.Logger }

func (l yamuxLogger) Print(v ...any)                 { l.log.V(4).Info(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.log.V(4).Info(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.log.V(4).Info(fmt.Sprint(v...)) }

const pipeBuffer = 128 << 10

// Pipe copies both ways between a and b, half-closing each side's write end
// when the other side's read ends, and closes both when done.
func Pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		// A larger buffer than io.Copy's 32 KiB, and no ReaderFrom/WriterTo
		// shortcuts (they fall back to 32 KiB too): fewer syscalls per MiB.
		buf := make([]byte, pipeBuffer)
		_, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
		if err != nil {
			// Broken: tear down both directions.
			_ = a.Close()
			_ = b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}
