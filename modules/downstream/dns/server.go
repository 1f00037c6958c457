package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
)

const (
	// DefaultClusterDomain is the physical cluster's DNS domain.
	DefaultClusterDomain = "cluster.local"
	// DefaultForwardTimeout bounds each exchange with an upstream resolver.
	DefaultForwardTimeout = 2 * time.Second
	// answerTTL is the TTL of local answers, kube-dns's for Services.
	answerTTL = 5
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// ClusterDomain is the physical cluster's DNS domain (DefaultClusterDomain).
	ClusterDomain string
	// Forward are the resolvers (host:port) every other query goes to, tried in order.
	Forward []string
	// Timeout bounds each exchange with a resolver (DefaultForwardTimeout).
	Timeout time.Duration
	// Logger logs forwarding failures and table changes.
	Logger logr.Logger
}

// Server answers DNS queries for one workspace from its Table and forwards the rest.
type Server struct {
	cfg   ServerConfig
	table atomic.Pointer[Table]
}

// NewServer returns a Server with an empty table: until SetTable it forwards everything.
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.Forward) == 0 {
		return nil, errors.New("dns server: no resolver to forward to")
	}
	for _, f := range cfg.Forward {
		if _, _, err := net.SplitHostPort(f); err != nil {
			return nil, fmt.Errorf("dns server: resolver %q: %w", f, err)
		}
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultForwardTimeout
	}
	s := &Server{cfg: cfg}
	s.table.Store(&Table{})
	return s, nil
}

// SetTable replaces the table the Server answers from.
func (s *Server) SetTable(t Table) { s.table.Store(&t) }

// Serve answers on pc (UDP) and l (TCP), either may be nil, until ctx ends.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: s})
	}
	if l != nil {
		servers = append(servers, &dns.Server{Listener: l, Handler: s})
	}
	if len(servers) == 0 {
		return errors.New("dns server: nothing to serve on")
	}
	errs := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errs <- srv.ActivateAndServe() }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	for _, srv := range servers {
		_ = srv.Shutdown()
	}
	return err
}

// Listen opens the UDP and TCP sockets of addr (host:port; port 0 picks one, the same for
// both).
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns server: listen udp %s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		_ = pc.Close()
		return nil, nil, fmt.Errorf("dns server: listen tcp %s: %w", addr, err)
	}
	return pc, l, nil
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	_ = w.WriteMsg(s.Handle(context.Background(), r, tcp))
}

// Handle answers r; tcp says whether it came over TCP (forwarded queries keep the transport).
func (s *Server) Handle(ctx context.Context, r *dns.Msg, tcp bool) *dns.Msg {
	if r.Opcode != dns.OpcodeQuery {
		return new(dns.Msg).SetRcode(r, dns.RcodeNotImplemented)
	}
	if len(r.Question) != 1 {
		return new(dns.Msg).SetRcode(r, dns.RcodeFormatError)
	}
	q := r.Question[0]
	res := Resolution{Kind: Forward}
	if q.Qclass == dns.ClassINET || q.Qclass == dns.ClassANY {
		res = s.table.Load().Resolve(q.Name, s.cfg.ClusterDomain)
	}
	switch res.Kind {
	case Answer:
		return s.answer(r, res)
	case NXDomain:
		m := new(dns.Msg).SetRcode(r, dns.RcodeNameError)
		m.Authoritative = true
		m.Ns = []dns.RR{s.soa(res.Zone)}
		return withEDNS(m, r)
	case ForwardRewritten:
		return s.forwardRewritten(ctx, r, res.Rewritten, tcp)
	default:
		return s.forward(ctx, r, tcp)
	}
}

func (s *Server) answer(r *dns.Msg, res Resolution) *dns.Msg {
	q := r.Question[0]
	m := new(dns.Msg).SetReply(r)
	m.Authoritative = true
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: answerTTL}
	}
	for _, ip := range res.IPs {
		switch {
		case ip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IP(ip.AsSlice())})
		case ip.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.IP(ip.AsSlice())})
		}
	}
	if len(m.Answer) == 0 { // the name exists, not with this type: NODATA
		m.Ns = []dns.RR{s.soa(res.Zone)}
	}
	return withEDNS(m, r)
}

// soa is the SOA record negative answers carry, so that resolvers cache them briefly.
func (s *Server) soa(zone string) dns.RR {
	domain := dns.Fqdn(s.cfg.ClusterDomain)
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: dns.Fqdn(zone), Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: answerTTL},
		Ns:  "ns.dns." + domain, Mbox: "hostmaster." + domain,
		Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: answerTTL,
	}
}

func withEDNS(m, r *dns.Msg) *dns.Msg {
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(max(opt.UDPSize(), dns.MinMsgSize), false)
	}
	return m
}

func (s *Server) forward(ctx context.Context, r *dns.Msg, tcp bool) *dns.Msg {
	resp, err := s.exchange(ctx, r, tcp)
	if err != nil {
		s.cfg.Logger.V(2).Info("forwarding failed", "name", r.Question[0].Name, "err", err.Error())
		return new(dns.Msg).SetRcode(r, dns.RcodeServerFailure)
	}
	return resp
}

// forwardRewritten asks the resolvers for rewritten and answers with the question's name.
func (s *Server) forwardRewritten(ctx context.Context, r *dns.Msg, rewritten string, tcp bool) *dns.Msg {
	original := r.Question[0].Name
	req := r.Copy()
	req.Question[0].Name = rewritten
	resp := s.forward(ctx, req, tcp)
	if len(resp.Question) > 0 {
		resp.Question[0].Name = original
	}
	for _, section := range [][]dns.RR{resp.Answer, resp.Ns, resp.Extra} {
		for _, rr := range section {
			h := rr.Header()
			if name, ok := renamed(h.Name, rewritten, original); ok {
				h.Name = name
			}
		}
	}
	return resp
}

// renamed maps a name at or under from to the same place under to.
func renamed(name, from, to string) (string, bool) {
	if strings.EqualFold(name, from) {
		return to, true
	}
	if len(name) > len(from) && strings.EqualFold(name[len(name)-len(from)-1:], "."+from) {
		return name[:len(name)-len(from)] + to, true
	}
	return "", false
}

func (s *Server) exchange(ctx context.Context, r *dns.Msg, tcp bool) (*dns.Msg, error) {
	var errs []error
	for _, target := range s.cfg.Forward {
		netw := "udp"
		if tcp {
			netw = "tcp"
		}
		c := &dns.Client{Net: netw, Timeout: s.cfg.Timeout}
		resp, _, err := c.ExchangeContext(ctx, r, target)
		if err == nil && resp.Truncated && !tcp {
			c.Net = "tcp"
			resp, _, err = c.ExchangeContext(ctx, r, target)
		}
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", target, err))
	}
	return nil, errors.Join(errs...)
}
