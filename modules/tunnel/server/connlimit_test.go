package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// served reports whether the server answers an HTTP request on c (false: it closed c
// without a response).
func served(t *testing.T, c net.Conn) bool {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	if _, err := io.WriteString(c, "GET /livez HTTP/1.1\r\nHost: tunnel.test\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server neither answered nor closed the connection")
		return false
	}
	_ = resp.Body.Close()
	return true
}

func TestConnectionsAreCappedPerSourceAndInTotal(t *testing.T) {
	logs := &logBuffer{}
	srv := tunneltest.NewServer(t, nil, "127.0.0.1:1", func(o *server.Options) {
		o.Limits.MaxConnectionsPerSource, o.Limits.MaxConnections = 3, 5
		o.Logger = logs.logger()
	})
	var held []net.Conn
	for range 3 {
		c := dialFrom(t, "127.0.0.1", srv.Addr)
		require.True(t, served(t, c), "a connection within the per-source cap is served")
		held = append(held, c)
	}
	assert.False(t, served(t, dialFrom(t, "127.0.0.1", srv.Addr)), "a 4th connection from the same address is closed at once")

	for range 2 {
		c := dialFrom(t, "127.0.0.2", srv.Addr)
		require.True(t, served(t, c), "another address has its own per-source budget")
		held = append(held, c)
	}
	assert.False(t, served(t, dialFrom(t, "127.0.0.3", srv.Addr)), "a 6th connection is over the total cap, whatever its address")
	assert.Contains(t, logs.String(), "over the connection limit")

	_ = held[0].Close()
	tunneltest.Eventually(t, 5*time.Second, "a closed connection gives its slot back", func() bool {
		c, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			return false
		}
		defer func() { _ = c.Close() }()
		return served(t, c)
	})
}

func TestASlowReaderIsCutOffByTheWriteDeadline(t *testing.T) {
	writeErr := make(chan error, 1)
	big := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 1024 { // 64 MiB: far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	})
	srv := tunneltest.NewServer(t, nil, "127.0.0.1:1", func(o *server.Options) {
		o.Handler, o.WriteTimeout = big, 200*time.Millisecond
	})
	c := dialFrom(t, "127.0.0.1", srv.Addr)
	_, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: tunnel.test\r\n\r\n")
	require.NoError(t, err)
	// The client never reads.
	select {
	case err := <-writeErr:
		require.Error(t, err, "the response cannot have been written: nobody reads it")
	case <-time.After(10 * time.Second):
		t.Fatal("the handler is still blocked writing to a client that does not read")
	}
}

func TestQuietStreamsOutliveTheWriteDeadline(t *testing.T) {
	const quiet = 600 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/exec") {
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer func() { _ = ws.CloseNow() }()
			typ, msg, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			time.Sleep(quiet)
			_ = ws.Write(context.Background(), typ, msg)
			return
		}
		// A followed log with a pause longer than the write deadline.
		_, _ = io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		time.Sleep(quiet)
		_, _ = io.WriteString(w, "b")
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) { o.WriteTimeout = 150 * time.Millisecond })
	time.Sleep(quiet) // the tunnel itself stays quiet longer than the write deadline
	code, body := p.do(t, http.MethodGet, "/api/v1/namespaces/team/pods/web/log?follow=true", tunneltest.UserToken, nil)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ab", body, "the whole followed log arrives")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(proxyURL(p.srv, "/api/v1/namespaces/team/pods/web/exec?command=sh"), "https://", "wss://", 1)
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: p.hc, HTTPHeader: http.Header{"Authorization": {"Bearer " + tunneltest.UserToken}},
	})
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	defer func() { _ = ws.CloseNow() }()
	require.NoError(t, ws.Write(ctx, websocket.MessageBinary, []byte("echo")))
	_, got, err := ws.Read(ctx)
	require.NoError(t, err, "an exec session quiet for longer than the write deadline still works")
	assert.Equal(t, "echo", string(got))
}
