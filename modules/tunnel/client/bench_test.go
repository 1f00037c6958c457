package client_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
)

const bulkSize = 256 << 20

// bulkServer serves 'u' (read everything, reply with the count) and 'd'
// (send bulkSize bytes) on loopback.
func bulkServer(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				cmd := make([]byte, 1)
				if _, err := io.ReadFull(c, cmd); err != nil {
					return
				}
				switch cmd[0] {
				case 'u':
					n, _ := io.Copy(io.Discard, c)
					_ = binary.Write(c, binary.BigEndian, n)
				case 'd':
					_, _ = io.Copy(c, io.LimitReader(zeroReader{}, bulkSize))
				case 'e':
					_, _ = io.Copy(c, c)
				}
			})
		}
	})
	b.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func upload(b *testing.B, c net.Conn) {
	buf := make([]byte, 256<<10)
	if _, err := c.Write([]byte{'u'}); err != nil {
		b.Fatal(err)
	}
	for sent := 0; sent < bulkSize; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	var n int64
	if err := binary.Read(c, binary.BigEndian, &n); err != nil || n != bulkSize {
		b.Fatalf("upload acknowledged %d bytes: %v", n, err)
	}
}

func download(b *testing.B, c net.Conn) {
	if _, err := c.Write([]byte{'d'}); err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != bulkSize {
		b.Fatalf("downloaded %d bytes: %v", n, err)
	}
}

func benchClient(b *testing.B, upstream string, withTLS bool) *client.Client {
	b.Helper()
	var pki *tunneltest.PKI
	opts := client.Options{Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken)}
	if withTLS {
		pki = tunneltest.NewPKI(b)
		opts.TLSConfig = pki.ClientTLS()
	}
	srv := tunneltest.NewServer(b, pki, upstream, nil)
	opts.ServerURL = srv.URL
	c, err := client.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return c
}

// BenchmarkBulkThroughput moves 256 MiB each way through the tunnel
// (WebSocket + yamux, over TLS as deployed and, to show the TLS share,
// without) and over direct loopback TCP, and reports MB/s of both and the
// tunnel/direct ratio.
func BenchmarkBulkThroughput(b *testing.B) {
	b.Run("tls", func(b *testing.B) { benchBulk(b, true) })
	b.Run("insecure", func(b *testing.B) { benchBulk(b, false) })
}

func benchBulk(b *testing.B, withTLS bool) {
	upstream := bulkServer(b)
	c := benchClient(b, upstream, withTLS)
	ctx := context.Background()
	dialTunnel := func() net.Conn {
		conn, err := c.DialContext(ctx, "tcp", "upstream:443")
		if err != nil {
			b.Fatal(err)
		}
		return conn
	}
	dialDirect := func() net.Conn {
		conn, err := net.Dial("tcp", upstream)
		if err != nil {
			b.Fatal(err)
		}
		return conn
	}
	// Wall time gives the throughput; the process's CPU time (everything,
	// client, server and both ends, runs in this process) gives the cost per
	// byte, which a busy shared machine disturbs much less.
	type cost struct{ wall, cpu time.Duration }
	measure := func(dial func() net.Conn, op func(*testing.B, net.Conn)) cost {
		conn := dial()
		defer func() { _ = conn.Close() }()
		start, cpu := time.Now(), cpuTime(b)
		op(b, conn)
		return cost{time.Since(start), cpuTime(b) - cpu}
	}
	var tunUp, tunDown, dirUp, dirDown cost
	add := func(sum *cost, c cost) { sum.wall += c.wall; sum.cpu += c.cpu }
	b.ResetTimer()
	for range b.N {
		add(&tunUp, measure(dialTunnel, upload))
		add(&tunDown, measure(dialTunnel, download))
		add(&dirUp, measure(dialDirect, upload))
		add(&dirDown, measure(dialDirect, download))
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * bulkSize / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(tunUp.wall), "tunnel-up-MB/s")
	b.ReportMetric(mbps(tunDown.wall), "tunnel-down-MB/s")
	b.ReportMetric(mbps(dirUp.wall), "direct-up-MB/s")
	b.ReportMetric(mbps(dirDown.wall), "direct-down-MB/s")
	b.ReportMetric(mbps(tunUp.wall)/mbps(dirUp.wall), "ratio-up")
	b.ReportMetric(mbps(tunDown.wall)/mbps(dirDown.wall), "ratio-down")
	// CPU seconds per GB moved, and direct/tunnel: the throughput ratio a
	// CPU-bound idle machine would show.
	b.ReportMetric(tunUp.cpu.Seconds()/(float64(b.N)*bulkSize/1e9), "tunnel-up-cpu-s/GB")
	b.ReportMetric(tunDown.cpu.Seconds()/(float64(b.N)*bulkSize/1e9), "tunnel-down-cpu-s/GB")
	b.ReportMetric(dirUp.cpu.Seconds()/tunUp.cpu.Seconds(), "cpu-ratio-up")
	b.ReportMetric(dirDown.cpu.Seconds()/tunDown.cpu.Seconds(), "cpu-ratio-down")
	// The best wall-clock ratio this machine allows: the tunnel on every core
	// (GOMAXPROCS) at its measured CPU cost per byte, against the direct
	// transfer on the cores it used. Under load the direct share shrinks and
	// this bound is loose; on an idle machine it is the ceiling of ratio-*.
	ceiling := func(tun, dir cost) float64 {
		dirCores := dir.cpu.Seconds() / dir.wall.Seconds()
		return dir.cpu.Seconds() / tun.cpu.Seconds() * float64(runtime.GOMAXPROCS(0)) / dirCores
	}
	b.ReportMetric(dirUp.cpu.Seconds()/dirUp.wall.Seconds(), "direct-up-cores")
	b.ReportMetric(dirDown.cpu.Seconds()/dirDown.wall.Seconds(), "direct-down-cores")
	b.ReportMetric(ceiling(tunUp, dirUp), "ceiling-up")
	b.ReportMetric(ceiling(tunDown, dirDown), "ceiling-down")
}

// BenchmarkTLSProxyThroughput is a diagnostic, not a goal: the same 256 MiB
// each way through the simplest TLS-terminating TCP proxy (crypto/tls on the
// client, tls.Listen and tunnel.Pipe on the proxy; no WebSocket, no yamux)
// against direct loopback. It has the tunnel's two loopback hops and one TLS
// layer and nothing else, so its ratio shows what those alone leave of the
// direct figure on this machine.
func BenchmarkTLSProxyThroughput(b *testing.B) {
	upstream := bulkServer(b)
	pki := tunneltest.NewPKI(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLS())
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					_ = c.Close()
					return
				}
				tunnel.Pipe(c, u)
			})
		}
	})
	b.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	dial := func(proxied bool) net.Conn {
		if !proxied {
			c, err := net.Dial("tcp", upstream)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), pki.ClientTLS())
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	type cost struct{ wall, cpu time.Duration }
	var proxUp, proxDown, dirUp, dirDown cost
	timed := func(sum *cost, proxied bool, op func(*testing.B, net.Conn)) {
		c := dial(proxied)
		defer func() { _ = c.Close() }()
		start, cpu := time.Now(), cpuTime(b)
		op(b, c)
		sum.wall += time.Since(start)
		sum.cpu += cpuTime(b) - cpu
	}
	b.ResetTimer()
	for range b.N {
		timed(&proxUp, true, upload)
		timed(&proxDown, true, download)
		timed(&dirUp, false, upload)
		timed(&dirDown, false, download)
	}
	mbps := func(c cost) float64 { return float64(b.N) * bulkSize / 1e6 / c.wall.Seconds() }
	b.ReportMetric(mbps(proxUp), "proxy-up-MB/s")
	b.ReportMetric(mbps(proxDown), "proxy-down-MB/s")
	b.ReportMetric(mbps(proxUp)/mbps(dirUp), "proxy-ratio-up")
	b.ReportMetric(mbps(proxDown)/mbps(dirDown), "proxy-ratio-down")
	b.ReportMetric(proxUp.cpu.Seconds()/(float64(b.N)*bulkSize/1e9), "proxy-up-cpu-s/GB")
	b.ReportMetric(proxDown.cpu.Seconds()/(float64(b.N)*bulkSize/1e9), "proxy-down-cpu-s/GB")
	b.ReportMetric(dirUp.cpu.Seconds()/proxUp.cpu.Seconds(), "proxy-cpu-ratio-up")
	b.ReportMetric(dirDown.cpu.Seconds()/proxDown.cpu.Seconds(), "proxy-cpu-ratio-down")
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSmallRequestLatency measures 64-byte request/response round trips
// on an established connection through the tunnel and directly, and reports
// p50/p99 of both and the added latency.
func BenchmarkSmallRequestLatency(b *testing.B) {
	upstream := bulkServer(b)
	c := benchClient(b, upstream, true)
	tun, err := c.DialContext(context.Background(), "tcp", "upstream:443")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tun.Close() }()
	dir, err := net.Dial("tcp", upstream)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = dir.Close() }()
	for _, conn := range []net.Conn{tun, dir} {
		if _, err := conn.Write([]byte{'e'}); err != nil {
			b.Fatal(err)
		}
	}
	req := make([]byte, 64)
	resp := make([]byte, 64)
	rtt := func(conn net.Conn) time.Duration {
		start := time.Now()
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, resp); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var tunRTT, dirRTT []time.Duration
	b.ResetTimer()
	for range b.N {
		tunRTT = append(tunRTT, rtt(tun))
		dirRTT = append(dirRTT, rtt(dir))
	}
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds())
	}
	b.ReportMetric(pct(tunRTT, 0.50), "tunnel-p50-µs")
	b.ReportMetric(pct(tunRTT, 0.99), "tunnel-p99-µs")
	b.ReportMetric(pct(dirRTT, 0.50), "direct-p50-µs")
	b.ReportMetric(pct(dirRTT, 0.99), "direct-p99-µs")
	b.ReportMetric(pct(tunRTT, 0.50)-pct(dirRTT, 0.50), "added-p50-µs")
	b.ReportMetric(pct(tunRTT, 0.99)-pct(dirRTT, 0.99), "added-p99-µs")
}
