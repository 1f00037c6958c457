package client

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"

	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// TestServerAwayTellsAnAbsentServerFromARefusingOne: only attempts that found
// no server are retried on the short delays after an announced restart.
func TestServerAwayTellsAnAbsentServerFromARefusingOne(t *testing.T) {
	dial := func(err error) error {
		return &attemptError{reason: tunnel.ReasonDial, err: fmt.Errorf("dial tunnel server: %w", err)}
	}
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: errno}}
	}
	refused := func(status int) error {
		return handshakeError(&http.Response{StatusCode: status, Status: http.StatusText(status)}, errors.New("refused"))
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", dial(opErr(syscall.ECONNREFUSED)), true},
		{"connection reset", dial(opErr(syscall.ECONNRESET)), true},
		{"host unreachable", dial(opErr(syscall.EHOSTUNREACH)), true},
		{"network unreachable", dial(opErr(syscall.ENETUNREACH)), true},
		{"closed during the handshake", dial(io.ErrUnexpectedEOF), true},
		{"502 from a proxy", refused(http.StatusBadGateway), true},
		{"503 shutting down", refused(http.StatusServiceUnavailable), true},
		{"504 from a proxy", refused(http.StatusGatewayTimeout), true},
		{"401", refused(http.StatusUnauthorized), false},
		{"403", refused(http.StatusForbidden), false},
		{"409 held by another identity", refused(http.StatusConflict), false},
		{"400 bad handshake", refused(http.StatusBadRequest), false},
		{"429 too many reviews", refused(http.StatusTooManyRequests), false},
		{"untrusted certificate", dial(x509.UnknownAuthorityError{}), false},
		{"breaker open", gobreaker.ErrOpenState, false},
		{"no token", &attemptError{reason: tunnel.ReasonHandshake, err: errors.New("get token: boom")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, serverAway(tc.err))
		})
	}
}
