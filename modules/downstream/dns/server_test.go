package dns

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stubResolver is a tiny DNS server standing for the cluster's DNS and the Internet: it
// answers example.com, pg.kcp-bbbb.svc.cluster.local (a headless Service's pod) and
// NXDOMAIN for everything else.
func stubResolver(t testing.TB) string {
	t.Helper()
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		q := r.Question[0]
		switch q.Name {
		case "example.com.":
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("93.184.215.14")})
		case "pg.kcp-bbbb.svc.cluster.local.":
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP("10.244.1.7")})
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, l, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	udp := &dns.Server{PacketConn: pc, Handler: mux}
	tcp := &dns.Server{Listener: l, Handler: mux}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() { _ = udp.Shutdown(); _ = tcp.Shutdown() })
	return pc.LocalAddr().String()
}

// startServer serves a Server with testTable on 127.0.0.1:<random> (UDP and TCP).
func startServer(t testing.TB, forward ...string) (*Server, string) {
	t.Helper()
	s, err := NewServer(ServerConfig{Forward: forward, Timeout: time.Second, Logger: logr.Discard()})
	require.NoError(t, err)
	s.SetTable(testTable())
	pc, l, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, pc.LocalAddr().String()
}

func query(t *testing.T, addr, netw, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
	m := new(dns.Msg).SetQuestion(name, qtype)
	var resp *dns.Msg
	require.Eventually(t, func() bool {
		var err error
		resp, _, err = c.Exchange(m, addr)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "query %s %s over %s", name, dns.TypeToString[qtype], netw)
	return resp
}

func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.Hdr.Name+" A "+v.A.String())
		case *dns.AAAA:
			out = append(out, v.Hdr.Name+" AAAA "+v.AAAA.String())
		}
	}
	return out
}

func TestServerAnswersWithARealClient(t *testing.T) {
	_, addr := startServer(t, stubResolver(t))
	tests := []struct {
		desc, name string
		qtype      uint16
		rcode      int
		auth       bool
		want       []string
		soa        bool
	}{
		{"Service, short name", "web.shop.", dns.TypeA, dns.RcodeSuccess, true, []string{"web.shop. A 10.96.0.10"}, false},
		{"Service, long name", "web.shop.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, true, []string{"web.shop.svc.cluster.local. A 10.96.0.10"}, false},
		{"dual-stack, AAAA", "dual.shop.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, true, []string{"dual.shop.svc.cluster.local. AAAA fd00::11"}, false},
		{"IPv4-only Service, AAAA: NODATA", "web.shop.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, true, nil, true},
		{"IPv6-only Service, A: NODATA", "v6only.shop.", dns.TypeA, dns.RcodeSuccess, true, nil, true},
		{"Service, MX: NODATA", "web.shop.svc.cluster.local.", dns.TypeMX, dns.RcodeSuccess, true, nil, true},
		{"unknown Service of a known namespace: NXDOMAIN", "nope.shop.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, true, nil, true},
		{"headless Service: the cluster's DNS, under the upstream name", "pg.db.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, false, []string{"pg.db.svc.cluster.local. A 10.244.1.7"}, false},
		{"outside name forwarded", "example.com.", dns.TypeA, dns.RcodeSuccess, false, []string{"example.com. A 93.184.215.14"}, false},
		{"outside NXDOMAIN forwarded", "nothing.example.", dns.TypeA, dns.RcodeNameError, false, nil, false},
	}
	for _, netw := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(netw+"/"+tt.desc, func(t *testing.T) {
				resp := query(t, addr, netw, tt.name, tt.qtype)
				assert.Equal(t, dns.RcodeToString[tt.rcode], dns.RcodeToString[resp.Rcode])
				assert.Equal(t, tt.auth, resp.Authoritative)
				assert.Equal(t, tt.want, answers(resp))
				require.Len(t, resp.Question, 1)
				assert.Equal(t, tt.name, resp.Question[0].Name, "the question comes back as asked")
				if tt.soa {
					require.Len(t, resp.Ns, 1, "negative answers carry an SOA")
					assert.Equal(t, dns.TypeSOA, resp.Ns[0].Header().Rrtype)
				}
			})
		}
	}
}

func TestServerFollowsTableAndFailsOver(t *testing.T) {
	// The first resolver does not answer: the second one does.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer dead.Close()
	s, addr := startServer(t, dead.LocalAddr().String(), stubResolver(t))
	resp := query(t, addr, "udp", "example.com.", dns.TypeA)
	assert.Equal(t, []string{"example.com. A 93.184.215.14"}, answers(resp), "failed over to the second resolver")

	s.SetTable(Table{Namespaces: map[string]string{"shop": "kcp-aaaa"}})
	resp = query(t, addr, "udp", "web.shop.svc.cluster.local.", dns.TypeA)
	assert.Equal(t, dns.RcodeNameError, resp.Rcode, "a Service gone from the table is gone")
}

func TestServerWithoutResolverAnswersServfail(t *testing.T) {
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer dead.Close()
	s, err := NewServer(ServerConfig{Forward: []string{dead.LocalAddr().String()}, Timeout: 100 * time.Millisecond, Logger: logr.Discard()})
	require.NoError(t, err)
	resp := s.Handle(context.Background(), new(dns.Msg).SetQuestion("example.com.", dns.TypeA), false)
	assert.Equal(t, dns.RcodeServerFailure, resp.Rcode)

	bad := new(dns.Msg).SetQuestion("example.com.", dns.TypeA)
	bad.Question = append(bad.Question, bad.Question[0])
	assert.Equal(t, dns.RcodeFormatError, s.Handle(context.Background(), bad, false).Rcode, "two questions")
	notify := new(dns.Msg).SetNotify("example.com.")
	assert.Equal(t, dns.RcodeNotImplemented, s.Handle(context.Background(), notify, false).Rcode)

	_, err = NewServer(ServerConfig{})
	require.Error(t, err, "a server needs a resolver")
	_, err = NewServer(ServerConfig{Forward: []string{"10.0.0.1"}})
	require.Error(t, err, "resolvers are host:port")
}
