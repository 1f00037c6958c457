package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// FaultMode is how a FaultProxy treats its traffic.
type FaultMode int

const (
	// Pass forwards bytes both ways.
	Pass FaultMode = iota
	// Drop resets every open connection and every new one (RST, no FIN).
	Drop
	// Stall stops forwarding but keeps every socket open, as a network black hole does:
	// no FIN, no RST, the peers see silence. Back to Pass, the held bytes flow again.
	Stall
	// Slow forwards with the latency and bandwidth given to SetSlow.
	Slow
)

// String names the mode ("pass", "drop", "stall", "slow").
func (m FaultMode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Stall:
		return "stall"
	case Slow:
		return "slow"
	}
	return fmt.Sprintf("FaultMode(%d)", int(m))
}

// FaultProxy is a TCP proxy on loopback in front of a target address whose behaviour
// (FaultMode) changes at run time: it cuts, stalls or slows the connections through it
// without touching either end.
type FaultProxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	mode    FaultMode
	changed chan struct{} // closed and replaced on every mode change
	latency time.Duration
	rate    int // bytes per second in Slow; 0 = no limit
	conns   map[*proxiedConn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

type proxiedConn struct {
	mu             sync.Mutex
	client, server net.Conn
	done           bool
}

// reset closes both sockets with SO_LINGER 0, so the peers get an RST.
func (c *proxiedConn) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	for _, conn := range []net.Conn{c.client, c.server} {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		if conn != nil {
			_ = conn.Close()
		}
	}
}

// setServer records the connection to the target; false (and server closed) when the
// client side was reset meanwhile.
func (c *proxiedConn) setServer(server net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		_ = server.Close()
		return false
	}
	c.server = server
	return true
}

// StartFaultProxy listens on a free loopback port and forwards to target, in Pass mode.
func StartFaultProxy(target string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy for %s: listen: %w", target, err)
	}
	p := &FaultProxy{
		target:  target,
		ln:      ln,
		changed: make(chan struct{}),
		latency: 100 * time.Millisecond,
		rate:    16 << 10,
		conns:   map[*proxiedConn]struct{}{},
	}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Mode returns the current mode.
func (p *FaultProxy) Mode() FaultMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// SetSlow sets the delay added to every forwarded chunk and the bandwidth (bytes per
// second, 0 = unlimited) of Slow mode.
func (p *FaultProxy) SetSlow(latency time.Duration, bytesPerSecond int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency, p.rate = latency, bytesPerSecond
}

// SetMode switches the mode; Drop resets every open connection at once.
func (p *FaultProxy) SetMode(m FaultMode) {
	p.mu.Lock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	var reset []*proxiedConn
	if m == Drop {
		for c := range p.conns {
			reset = append(reset, c)
		}
	}
	p.mu.Unlock()
	for _, c := range reset {
		c.reset()
	}
}

// Close stops listening and resets every connection.
func (p *FaultProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	var conns []*proxiedConn
	for c := range p.conns {
		conns = append(conns, c)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.reset()
	}
	p.wg.Wait()
	return err
}

func (p *FaultProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		c := &proxiedConn{client: client}
		p.mu.Lock()
		if p.closed || p.mode == Drop {
			p.mu.Unlock()
			c.reset()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve dials the target (after any stall ends) and copies both ways until one side ends.
func (p *FaultProxy) serve(c *proxiedConn) {
	defer func() {
		c.reset()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	closed := make(chan struct{})
	if !p.gate(closed, 0) {
		return
	}
	server, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(context.Background(), "tcp", p.target)
	if err != nil {
		return
	}
	if !c.setServer(server) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, c.client, closed); done <- struct{}{} }()
	go func() { p.pipe(c.client, server, closed); done <- struct{}{} }()
	<-done
	close(closed)
	c.reset()
	<-done
}

// pipe copies src to dst chunk by chunk, passing each chunk through the gate.
func (p *FaultProxy) pipe(dst, src net.Conn, closed <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.forward(dst, buf[:n], closed) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forward writes b to dst, holding it while stalled and pacing it while slow.
func (p *FaultProxy) forward(dst net.Conn, b []byte, closed <-chan struct{}) bool {
	for len(b) > 0 {
		chunk := b
		p.mu.Lock()
		rate := p.rate
		p.mu.Unlock()
		if rate > 0 && len(chunk) > max(rate/10, 1) {
			chunk = chunk[:max(rate/10, 1)]
		}
		if !p.gate(closed, len(chunk)) {
			return false
		}
		if _, err := dst.Write(chunk); err != nil {
			return false
		}
		b = b[len(chunk):]
	}
	return true
}

// gate returns once n bytes may pass: at once in Pass, after the delay in Slow, when
// the mode changes in Stall; false when the connection must end (Drop, Close).
func (p *FaultProxy) gate(closed <-chan struct{}, n int) bool {
	for {
		p.mu.Lock()
		mode, changed, latency, rate, shut := p.mode, p.changed, p.latency, p.rate, p.closed
		p.mu.Unlock()
		switch {
		case shut || mode == Drop:
			return false
		case mode == Pass:
			return true
		case mode == Slow:
			delay := latency
			if rate > 0 {
				delay += time.Duration(n) * time.Second / time.Duration(rate)
			}
			select {
			case <-time.After(delay):
				return true
			case <-closed:
				return false
			}
		}
		select {
		case <-changed:
		case <-closed:
			return false
		}
	}
}

var _ io.Closer = (*FaultProxy)(nil)
