package server

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// corkListener hands out connections wrapped in tunnel.CorkedConn (uncorked:
// writes pass through), so a tunnel session can send each message in one
// write below TLS.
type corkListener struct{ net.Listener }

func (l corkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tunnel.NewCorkedConn(c), nil
}

type connKey struct{}

// withConn is the http.Server's ConnContext: it remembers the connection of
// each request.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// corkOf returns the CorkedConn under the request's connection, or nil.
func corkOf(ctx context.Context) *tunnel.CorkedConn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*tunnel.CorkedConn)
	return cc
}
