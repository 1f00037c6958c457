package dns

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// FuzzParseTable: any ConfigMap data parses without panicking, and what parses renders back
// to data that parses to the same table.
func FuzzParseTable(f *testing.F) {
	f.Add("shop", "kcp-aaaa", "web.shop", "10.0.0.1,fd00::1")
	f.Add("a.b", "", "x", "::ffff:10.0.0.1")
	f.Add("", "kcp-", "web.shop", "1.2.3.4,1.2.3.4,1.2.3.4")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		tab, _ := ParseTable(map[string]string{k1: v1, k2: v2})
		again, err := ParseTable(tab.Data())
		require.NoError(t, err)
		require.Equal(t, tab, again)
	})
}

// FuzzResolve: any name resolves without panicking, and a rewritten name stays under the
// cluster domain.
func FuzzResolve(f *testing.F) {
	f.Add("web.shop.svc.cluster.local.", "cluster.local")
	f.Add("pg-0.pg.db.svc.cluster.local", "cluster.local.")
	f.Add("..svc.cluster.local", "")
	f.Add("web.shop.", ".")
	tab := testTable()
	f.Fuzz(func(t *testing.T, name, domain string) {
		r := tab.Resolve(name, domain)
		if r.Kind == ForwardRewritten {
			require.Contains(t, r.Rewritten, ".svc.")
		}
	})
}

// FuzzHandle: any message off the wire gets an answer (forwarding to a local resolver) and
// never a panic.
func FuzzHandle(f *testing.F) {
	for _, q := range []*dns.Msg{
		new(dns.Msg).SetQuestion("web.shop.svc.cluster.local.", dns.TypeA),
		new(dns.Msg).SetQuestion("pg.db.", dns.TypeAAAA),
		new(dns.Msg).SetQuestion("example.com.", dns.TypeMX),
		new(dns.Msg).SetQuestion("nope.shop.svc.cluster.local.", dns.TypeANY),
	} {
		b, err := q.Pack()
		require.NoError(f, err)
		f.Add(b)
	}
	s, err := NewServer(ServerConfig{Forward: []string{stubResolver(f)}, Timeout: time.Second, Logger: logr.Discard()})
	require.NoError(f, err)
	s.SetTable(testTable())
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		resp := s.Handle(context.Background(), m, false)
		require.NotNil(t, resp)
		require.Equal(t, m.Id, resp.Id)
		_, err := resp.Pack()
		require.NoError(t, err, "the answer can be sent")
	})
}
