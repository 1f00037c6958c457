package tunnel_test

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// writeLog is a net.Conn that records each write it gets.
type writeLog struct {
	net.Conn
	writes [][]byte
	err    error
}

func (w *writeLog) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCorkedConnSendsWhatItHeldBackInOneWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		run    func(c *tunnel.CorkedConn)
		writes []string
	}{
		{"uncorked writes pass through", func(c *tunnel.CorkedConn) {
			_, _ = c.Write([]byte("a"))
			_, _ = c.Write([]byte("b"))
		}, []string{"a", "b"}},
		{"corked writes leave as one on uncork", func(c *tunnel.CorkedConn) {
			c.Cork()
			_, _ = c.Write([]byte("head"))
			_, _ = c.Write([]byte("body"))
			require.NoError(t, c.Uncork())
			_, _ = c.Write([]byte("after"))
		}, []string{"headbody", "after"}},
		{"uncork with nothing held writes nothing", func(c *tunnel.CorkedConn) {
			c.Cork()
			require.NoError(t, c.Uncork())
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &writeLog{}
			tc.run(tunnel.NewCorkedConn(log))
			var got []string
			for _, w := range log.writes {
				got = append(got, string(w))
			}
			assert.Equal(t, tc.writes, got)
		})
	}
}

func TestCorkedConnBoundsWhatItHoldsBack(t *testing.T) {
	log := &writeLog{}
	c := tunnel.NewCorkedConn(log)
	c.Cork()
	chunk := make([]byte, 256<<10)
	for range 5 {
		n, err := c.Write(chunk)
		require.NoError(t, err)
		require.Equal(t, len(chunk), n)
	}
	require.Len(t, log.writes, 1, "1 MiB held back is sent without waiting for Uncork")
	assert.Len(t, log.writes[0], 4*len(chunk))
	require.NoError(t, c.Uncork())
	require.Len(t, log.writes, 2)
	assert.Len(t, log.writes[1], len(chunk))
}

func TestCorkedConnReportsWriteErrors(t *testing.T) {
	broken := errors.New("broken pipe")
	log := &writeLog{err: broken}
	c := tunnel.NewCorkedConn(log)
	c.Cork()
	_, err := c.Write([]byte("held"))
	require.NoError(t, err, "nothing is written while corked")
	require.ErrorIs(t, c.Uncork(), broken)
	_, err = c.Write([]byte("direct"))
	require.ErrorIs(t, err, broken)
	c.Cork()
	_, err = c.Write(make([]byte, 2<<20))
	require.ErrorIs(t, err, broken, "a flush forced by size reports the error")
}
