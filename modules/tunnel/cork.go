package tunnel

import (
	"net"
	"sync"
)

// maxCorked bounds what a CorkedConn holds back; a larger message is sent in
// pieces of about this size.
const maxCorked = 1 << 20

// CorkedConn is a net.Conn that, while corked, collects writes and sends them
// as one write when uncorked. The session corks it around each WebSocket
// message: the WebSocket library masks a client frame through a 4 KiB buffer
// and flushes every 4 KiB, so without the cork one 256 KiB yamux frame costs
// 64 writes (syscalls and TLS records) instead of one.
type CorkedConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	buf    []byte
}

// NewCorkedConn wraps c; it starts uncorked (writes pass straight through).
func NewCorkedConn(c net.Conn) *CorkedConn { return &CorkedConn{Conn: c} }

// Write sends p, or holds it back while corked.
func (c *CorkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	if len(c.buf)+len(p) > maxCorked {
		// Too big to hold back: send what is held, then p itself, without copying it.
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxCorked {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// CloseWrite half-closes the wrapped connection when it can (a TCP connection), so
// an HTTP server can signal the end of a response before reading the rest of a body.
func (c *CorkedConn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Cork holds back the following writes until Uncork.
func (c *CorkedConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork sends what was held back as one write and lets writes pass again.
func (c *CorkedConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *CorkedConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > maxCorked+maxCorked/4 {
		c.buf = nil // do not pin an outsized buffer
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// corker is what a session needs of a CorkedConn.
type corker interface {
	Cork()
	Uncork() error
}

// corks corks and uncorks several stacked connections, outermost first, so
// that what the outer one releases is held by the inner one until it is
// released too.
type corks []corker

func (cs corks) Cork() {
	for _, c := range cs {
		c.Cork()
	}
}

func (cs corks) Uncork() error {
	var first error
	for _, c := range cs {
		if err := c.Uncork(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// SessionOption configures NewSession.
type SessionOption func(*sessionOptions)

type sessionOptions struct {
	cork       corks
	streams    func(net.Conn) // WithStreamHandler
	streamKind StreamKind
}

// WithStreamHandler hands every stream the peer opens, counted as kind, to h,
// from the session's own goroutine, which otherwise only waits for the end:
// an owner that serves the peer's streams needs no goroutine of its own for
// it. h must not block (it starts a goroutine for the stream's work); Accept
// and Listener are not used then.
func WithStreamHandler(kind StreamKind, h func(net.Conn)) SessionOption {
	return func(o *sessionOptions) {
		o.streams, o.streamKind = h, kind
	}
}

// WithCork makes the session cork the given connections under the WebSocket,
// outermost first (e.g. the one above TLS, then the TCP connection under it),
// around every message it writes, so that each message leaves in one write.
// Nil connections are skipped.
func WithCork(cs ...*CorkedConn) SessionOption {
	return func(o *sessionOptions) {
		for _, c := range cs {
			if c != nil {
				o.cork = append(o.cork, c)
			}
		}
	}
}
