package framework

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// WriteReplicaPKI writes a replica CA (ca.crt) and one certificate of it (replica.crt,
// replica.key) valid for dnsName as TLS server and client into dir: what tunnel server
// replicas present to each other.
func WriteReplicaPKI(dir, dnsName string) (caFile, certFile, keyFile string, err error) {
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "replica.crt"), filepath.Join(dir, "replica.key")
	ca, err := newCert(nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "tmc-syncer-replica-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return "", "", "", err
	}
	if _, err := writePair(ca, caFile, filepath.Join(dir, "ca.key")); err != nil {
		return "", "", "", err
	}
	replica, err := newCert(ca, &x509.Certificate{
		Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", "", "", err
	}
	if _, err := writePair(replica, certFile, keyFile); err != nil {
		return "", "", "", err
	}
	return caFile, certFile, keyFile, nil
}

// RoundRobin is a TCP front on loopback spreading connections over several backends in
// turn, as a Service does; a backend that refuses the connection is skipped (its
// endpoint is gone), so a dead replica costs a client nothing but a failed dial.
type RoundRobin struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

// StartRoundRobin listens on a free loopback port in front of backends.
func StartRoundRobin(backends ...string) (*RoundRobin, error) {
	if len(backends) == 0 {
		return nil, errors.New("round robin: no backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rr := &RoundRobin{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	rr.wg.Go(rr.accept)
	return rr, nil
}

// Addr is the front's address.
func (rr *RoundRobin) Addr() string { return rr.ln.Addr().String() }

// Close stops the front and closes every connection through it.
func (rr *RoundRobin) Close() error {
	err := rr.ln.Close()
	rr.mu.Lock()
	for c := range rr.conns {
		_ = c.Close()
	}
	rr.mu.Unlock()
	rr.wg.Wait()
	return err
}

func (rr *RoundRobin) track(c net.Conn, add bool) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if add {
		rr.conns[c] = struct{}{}
	} else {
		delete(rr.conns, c)
	}
}

func (rr *RoundRobin) accept() {
	for {
		c, err := rr.ln.Accept()
		if err != nil {
			return
		}
		rr.wg.Go(func() { rr.serve(c) })
	}
}

func (rr *RoundRobin) serve(c net.Conn) {
	defer c.Close()
	var up net.Conn
	for range rr.backends {
		b := rr.backends[(rr.next.Add(1)-1)%uint64(len(rr.backends))]
		var err error
		if up, err = net.DialTimeout("tcp", b, time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	rr.track(c, true)
	rr.track(up, true)
	defer rr.track(c, false)
	defer rr.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done // one side ended: end both (a dead replica's sockets must not stay half open)
}
