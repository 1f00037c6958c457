package server

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeHijacker hands over one end of a pipe with a 4 KiB reader that has read ahead.
type fakeHijacker struct {
	http.ResponseWriter
	conn  net.Conn
	ahead string
}

func (h fakeHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	br := bufio.NewReaderSize(io.MultiReader(strings.NewReader(h.ahead), h.conn), 4096)
	if h.ahead != "" {
		_, _ = br.Peek(len(h.ahead))
	}
	return h.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(h.conn, 4096)), nil
}

func TestSmallBuffersKeepWhatTheServerReadAhead(t *testing.T) {
	for name, ahead := range map[string]string{
		"nothing":          "",
		"a frame":          "\x82\x05hello",
		"more than fits":   strings.Repeat("x", tunnelReadBuffer+1),
		"exactly the size": strings.Repeat("y", tunnelReadBuffer),
	} {
		t.Run(name, func(t *testing.T) {
			server, client := net.Pipe()
			defer func() { _ = server.Close(); _ = client.Close() }()
			w := withSmallBuffers(fakeHijacker{ResponseWriter: httptest.NewRecorder(), conn: server, ahead: ahead})
			c, rw, err := w.(http.Hijacker).Hijack()
			require.NoError(t, err)
			assert.Equal(t, len(ahead), rw.Reader.Buffered(), "read-ahead bytes stay buffered")
			if len(ahead) <= tunnelReadBuffer {
				assert.Equal(t, tunnelReadBuffer, rw.Reader.Size())
			}
			assert.Equal(t, tunnelWriteBuffer, rw.Writer.Size())
			// As the WebSocket library does: what is buffered, then the connection.
			b, _ := rw.Peek(rw.Reader.Buffered())
			rw.Reader.Reset(io.MultiReader(bytes.NewReader(b), c))
			go func() { _, _ = client.Write([]byte("after")); _ = client.Close() }()
			got, err := io.ReadAll(rw.Reader)
			require.NoError(t, err)
			assert.Equal(t, ahead+"after", string(got))
		})
	}
}
