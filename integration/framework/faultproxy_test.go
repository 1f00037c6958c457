package framework

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoServer echoes every line back until the connection ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func dialProxy(t *testing.T, p *FaultProxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reads the echo within timeout.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func startProxy(t *testing.T) *FaultProxy {
	t.Helper()
	p, err := StartFaultProxy(echoServer(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestFaultProxyPassForwardsBothWays(t *testing.T) {
	p := startProxy(t)
	c, r := dialProxy(t, p)
	for _, line := range []string{"hello", "world", strings.Repeat("x", 100<<10)} {
		got, err := roundTrip(c, r, line, 10*time.Second)
		require.NoError(t, err)
		assert.Equal(t, line, got)
	}
}

func TestFaultProxyDropResetsOpenAndNewConnections(t *testing.T) {
	p := startProxy(t)
	c, r := dialProxy(t, p)
	_, err := roundTrip(c, r, "before", 10*time.Second)
	require.NoError(t, err)

	p.SetMode(Drop)
	_, err = roundTrip(c, r, "after", 10*time.Second)
	require.Error(t, err, "the open connection is cut")
	assert.NotContains(t, err.Error(), "timeout", "cut at once, not left hanging")

	// A new connection is cut too: at once (the dial itself may see the reset) or on use.
	c2, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.Addr())
	if err == nil {
		t.Cleanup(func() { _ = c2.Close() })
		_, err = roundTrip(c2, bufio.NewReader(c2), "new", 10*time.Second)
	}
	require.Error(t, err, "a new connection is cut too")

	p.SetMode(Pass)
	c3, r3 := dialProxy(t, p)
	got, err := roundTrip(c3, r3, "again", 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "again", got)
}

func TestFaultProxyStallHoldsBytesWithoutClosing(t *testing.T) {
	p := startProxy(t)
	c, r := dialProxy(t, p)
	_, err := roundTrip(c, r, "before", 10*time.Second)
	require.NoError(t, err)

	p.SetMode(Stall)
	_, err = roundTrip(c, r, "held", 300*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne, "silence, not a reset or EOF")
	assert.True(t, ne.Timeout())
	c2, r2 := dialProxy(t, p)
	_, err = roundTrip(c2, r2, "new", 300*time.Millisecond)
	require.ErrorAs(t, err, &ne, "a new connection is accepted but silent")
	assert.True(t, ne.Timeout())

	p.SetMode(Pass)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := r.ReadString('\n')
	require.NoError(t, err, "the held bytes flow once the stall ends")
	assert.Equal(t, "held\n", got)
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err = r2.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "new\n", got)
}

func TestFaultProxySlowDelaysButDelivers(t *testing.T) {
	p := startProxy(t)
	p.SetSlow(50*time.Millisecond, 64<<10)
	p.SetMode(Slow)
	c, r := dialProxy(t, p)
	line := strings.Repeat("y", 32<<10)
	start := time.Now()
	got, err := roundTrip(c, r, line, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, line, got)
	// 32 KiB each way at 64 KiB/s is at least half a second: a lower bound only.
	assert.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond)
	assert.Equal(t, Slow, p.Mode())
	assert.Equal(t, "slow", Slow.String())
}
