package server

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Defaults of the connection limits (Limits.MaxConnections, Limits.MaxConnectionsPerSource)
// and of Options.WriteTimeout.
const (
	DefaultMaxConnections          = 10000
	DefaultMaxConnectionsPerSource = 2048
	DefaultWriteTimeout            = 30 * time.Second
)

// connLimitListener caps the TCP connections the server holds, in total and per source IP
// address, counted when accepted: before TLS, before any HTTP and before authentication,
// so that a client that opens connections and sends nothing (or a slow TLS handshake)
// cannot take every file descriptor of the shared process. A connection over a cap is
// closed at once and Accept goes on with the next one.
type connLimitListener struct {
	net.Listener
	log       logr.Logger
	max       int64
	total     atomic.Int64
	perSource *sourceLimiter
	refused   atomic.Int64 // refusals since the last log line
	lastLog   atomic.Int64 // unix nanoseconds of the last log line
}

func newConnLimitListener(ln net.Listener, l Limits, log logr.Logger) *connLimitListener {
	return &connLimitListener{Listener: ln, log: log, max: int64(l.MaxConnections), perSource: newSourceLimiter(l.MaxConnectionsPerSource)}
}

// Accept returns the next connection within the caps.
func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr().String())
		if l.total.Add(1) > l.max {
			l.total.Add(-1)
			l.refuse(c, src, "total")
			continue
		}
		if !l.perSource.take(src) {
			l.total.Add(-1)
			l.refuse(c, src, "per source")
			continue
		}
		return &limitedConn{Conn: c, release: func() {
			l.perSource.release(src)
			l.total.Add(-1)
		}}, nil
	}
}

// refuse closes c and logs at most once a second how many were refused.
func (l *connLimitListener) refuse(c net.Conn, src, which string) {
	_ = c.Close()
	n := l.refused.Add(1)
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.refused.Add(-n)
	l.log.Info("connections refused: over the connection limit", "limit", which, "source", src, "refused", n)
}

// limitedConn gives its slot back once, on the first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// deadlineWriter sets the connection's write deadline before every write: each write,
// and each flush, must complete within timeout, so a client that stops reading a response
// is cut off after timeout instead of holding the handler (and a tunnel stream) for ever,
// while a followed log or a watch that writes rarely stays open as long as its reader
// keeps up. An upgrade (a tunnel, an exec/attach/port-forward session) clears the
// deadline when it answers 101 (clearWriteDeadline): its liveness is the WebSocket
// keepalive and Limits.MaxRequestDuration.
type deadlineWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	timeout  time.Duration
	hijacked bool
}

func (w *deadlineWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher.
func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController calls.
func (w *deadlineWriter) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

// hijackableDeadlineWriter is a deadlineWriter over a writer that can be hijacked (the
// tunnel's WebSocket accept needs it); a writer that cannot stays without Hijack, so
// that callers see the difference.
type hijackableDeadlineWriter struct{ *deadlineWriter }

// Hijack implements http.Hijacker.
func (w hijackableDeadlineWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return w.rc.Hijack() //nolint:wrapcheck // the server's own error
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withWriteDeadlines wraps w so that every write has a deadline. The returned function
// runs after the handler: the server's own last write (the end of a chunked body) gets a
// fresh deadline too.
func withWriteDeadlines(w http.ResponseWriter, timeout time.Duration) (http.ResponseWriter, func()) {
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
	dw.extend()
	var out http.ResponseWriter = dw
	if _, ok := w.(http.Hijacker); ok {
		out = hijackableDeadlineWriter{dw}
	}
	return out, func() {
		if !dw.hijacked {
			dw.extend()
		}
	}
}

// clearWriteDeadline lifts the write deadline of the request's connection, once the
// request is known to become an upgraded stream.
func clearWriteDeadline(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(net.Conn); ok {
		_ = c.SetWriteDeadline(time.Time{})
	}
}

// unwrapDeadline returns the writer under a deadlineWriter.
func unwrapDeadline(w http.ResponseWriter) http.ResponseWriter {
	switch dw := w.(type) {
	case *deadlineWriter:
		return dw.ResponseWriter
	case hijackableDeadlineWriter:
		return dw.ResponseWriter
	}
	return w
}
