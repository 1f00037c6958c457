package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Buffers of a tunnel's WebSocket on the server. The HTTP server hands a hijacked
// connection over with its own 4 KiB reader and 4 KiB writer, which the WebSocket keeps
// for the session's life; every idle session would hold them. Reads the size of the
// reader or more bypass it (yamux reads 4 KiB at a time, and data frames are read
// straight into the stream's buffer), so a small one costs bulk transfers nothing; the
// writer holds a message's frame header and its start, so a message up to its size
// leaves in one TLS record.
const (
	tunnelReadBuffer  = 1 << 10
	tunnelWriteBuffer = 2 << 10
)

// smallBuffers is the ResponseWriter the tunnel's WebSocket handshake sees: its Hijack
// returns the connection with tunnelReadBuffer and tunnelWriteBuffer sized buffers.
type smallBuffers struct {
	http.ResponseWriter
	hj http.Hijacker
}

// withSmallBuffers wraps w (which must be an http.Hijacker; otherwise w is returned and
// the WebSocket handshake reports it).
func withSmallBuffers(w http.ResponseWriter) http.ResponseWriter {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return w
	}
	return smallBuffers{ResponseWriter: w, hj: hj}
}

// Hijack implements http.Hijacker. Bytes the HTTP server has read ahead stay buffered in
// the new reader; when there are more than it holds, the server's reader is kept.
func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.hj.Hijack()
	if err != nil {
		return nil, nil, err //nolint:wrapcheck // the server's own error
	}
	if rw.Writer.Buffered() > 0 {
		if err := rw.Flush(); err != nil {
			_ = c.Close()
			return nil, nil, fmt.Errorf("flush the handshake response: %w", err)
		}
	}
	br := rw.Reader
	if n := br.Buffered(); n <= tunnelReadBuffer {
		ahead, _ := br.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), c), tunnelReadBuffer)
		if n > 0 {
			_, _ = br.Peek(n) // buffered again, from memory: no read on c
		}
	}
	return c, bufio.NewReadWriter(br, bufio.NewWriterSize(c, tunnelWriteBuffer)), nil
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }
