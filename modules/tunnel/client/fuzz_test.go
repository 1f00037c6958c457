package client

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// FuzzHandshakeRefusal: whatever status and body a server (or something pretending to be
// one) answers to the handshake, the client classifies it without panicking, reads at most
// 1 KiB of the body into its error, and only 401/403 count as unauthorized/forbidden.
func FuzzHandshakeRefusal(f *testing.F) {
	f.Add(401, "invalid bearer token\n")
	f.Add(403, `user "x" may not update synctargets/tunnel`)
	f.Add(400, strings.Repeat("A", 5000))
	f.Add(101, "")
	f.Add(-1, "\x00\xff")
	f.Fuzz(func(t *testing.T, code int, body string) {
		resp := &http.Response{StatusCode: code, Status: http.StatusText(code), Body: io.NopCloser(strings.NewReader(body))}
		err := handshakeError(resp, errors.New("bad handshake"))
		require.Error(t, err)
		reason := classify(err)
		switch code {
		case http.StatusUnauthorized:
			require.Equal(t, tunnel.ReasonUnauthorized, reason)
		case http.StatusForbidden:
			require.Equal(t, tunnel.ReasonForbidden, reason)
		default:
			require.Equal(t, tunnel.ReasonHandshake, reason)
		}
		require.LessOrEqual(t, len(err.Error()), 1024+len("tunnel handshake refused: ")+len(resp.Status)+2)
		require.Equal(t, tunnel.ReasonDial, classify(handshakeError(nil, errors.New("refused"))))
	})
}
