package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// tunnelServer is the tunnel server in-process on a fixed loopback address, so it
// can be stopped and started again at the same place.
type tunnelServer struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
	srv    *server.Server
}

func startTunnelServer(ctx context.Context, opts server.Options, addr string) (*tunnelServer, error) {
	srv, err := server.New(opts)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	ts := &tunnelServer{addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1), srv: srv}
	go func() { ts.done <- srv.Serve(sctx, ln) }()
	return ts, nil
}

func (ts *tunnelServer) stop() {
	if ts == nil || ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.srv.Close()
	ts.cancel = nil
	if err := <-ts.done; err != nil {
		return // Serve's error after Close is the shutdown itself
	}
}

func (r *runner) kcpServerOptions() (server.Options, error) {
	upstream, err := url.Parse(r.env.KCP.Config.Host)
	if err != nil {
		return server.Options{}, err
	}
	clients := server.SingleCluster(r.upKube)
	return server.Options{
		UpstreamAddress: upstream.Host,
		Authenticator:   server.NewTokenReviewAuthenticator(clients),
		// The syncer shows a token bound to the tunnel's audience (its default).
		SyncerAuthenticator: server.NewTokenReviewAuthenticator(clients, client.DefaultTunnelAudience),
		Authorizer:          server.NewSubjectAccessReviewAuthorizer(clients),
		Insecure:            true,
	}, nil
}

// tunnelled is P9 (P1 and P2 with every upstream request through the tunnel) and
// P7 (reconnect after the tunnel server restarts).
func (r *runner) tunnelled(ctx context.Context) error {
	t, err := r.newTarget(ctx, "bench-tunnel")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(r.cfg.WorkDir, "identity-")
	if err != nil {
		return err
	}
	kubeconfig, err := framework.ServiceAccountKubeconfig(ctx, r.env.KCP, "bench-identities", "bench-tunnel", "cluster-admin", dir)
	if err != nil {
		return err
	}
	opts, err := r.kcpServerOptions()
	if err != nil {
		return err
	}
	ts, err := startTunnelServer(ctx, opts, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer func() { ts.stop() }()
	n := r.cfg.P9Objects
	r.logf("   creating %d ConfigMaps upstream", n)
	objs, err := r.createUpstream(ctx, t, "p9", n)
	if err != nil {
		return err
	}
	cnt := &counter{seen: map[types.UID]bool{}}
	if err := watchAll(ctx, r.downDyn, configMapsGVR, "", t.id.DownstreamSelector().String(), cnt.observe); err != nil {
		return err
	}
	start := time.Now()
	p, err := startSyncer(r.cfg.SyncerBin, r.cfg.WorkDir, "syncer-tunnel", r.syncerArgs(t, kubeconfig, "--tunnel-url=http://"+ts.addr, "--tunnel-insecure")...)
	if err != nil {
		return err
	}
	defer p.stop()
	go r.profile(ctx, p, "p9-initial-sync-tunnel")
	if err := waitFor(ctx, 30*time.Minute, p, "P9: all ConfigMaps downstream", func() bool { return int(cnt.n.Load()) >= n }); err != nil {
		return err
	}
	syncTime := time.Since(start)
	objects := min(r.cfg.P2Objects, objs.perNS, n)
	lat, missing, err := r.syncedLatency(ctx, t, objs, objects, r.cfg.P2Rate, r.cfg.P9Duration)
	if err != nil {
		return err
	}
	scaled := r.p1Time
	if r.cfg.P1Objects != n && r.cfg.P1Objects > 0 {
		scaled = time.Duration(float64(r.p1Time) * float64(n) / float64(r.cfg.P1Objects))
	}
	r1, r2 := ratio(syncTime.Seconds(), scaled.Seconds()), ratio(lat.P50, r.p2Result.P50)
	r.add(Row{
		ID: "P9", What: fmt.Sprintf("P1 (%d objects) and P2 (%s) with all upstream traffic through the tunnel", n, r.cfg.P9Duration),
		Notes:     p9Note(r.cfg.P1Objects, n),
		Measured:  fmt.Sprintf("P1 %s; P2 p50 %.1f ms, p99 %.1f ms", syncTime.Round(time.Millisecond), lat.P50, lat.P99),
		Reference: fmt.Sprintf("without tunnel: P1 %s; P2 p50 %.1f ms, p99 %.1f ms", scaled.Round(time.Millisecond), r.p2Result.P50, r.p2Result.P99),
		Ratio:     fmt.Sprintf("P1 %.2f×, P2 p50 %.2f× (p99 %.2f×); %d never seen", r1, r2, ratio(lat.P99, r.p2Result.P99), missing),
		Goal:      "≤ 1.2×", Met: met(r1 <= 1.2 && r2 <= 1.2 && missing == 0),
	}, map[string]any{"p1_seconds": syncTime.Seconds(), "p2": lat, "missing": missing})

	// P7: the server goes away and comes back on the same address.
	target := tunnel.Target{Cluster: "root", Name: t.id.Name}
	var reconnects, restarts []time.Duration
	addr := ts.addr
	for range r.cfg.Reconnects {
		ts.stop()
		time.Sleep(time.Second)
		began := time.Now()
		ts, err = startTunnelServer(ctx, opts, addr)
		if err != nil {
			return err
		}
		back := time.Now()
		restarts = append(restarts, back.Sub(began))
		if err := waitFor(ctx, time.Minute, p, "P7: reconnected", func() bool { return ts.srv.Registry().Connected(target) }); err != nil {
			return err
		}
		reconnects = append(reconnects, time.Since(back))
	}
	got, ref := percentiles(reconnects), percentiles(restarts)
	r.add(Row{
		ID: "P7", What: fmt.Sprintf("reconnect after the tunnel server restarts (1 s down), %d times", r.cfg.Reconnects),
		Measured: fmt.Sprintf("median %.0f ms, max %.0f ms after the server is back", got.P50, got.Max), Reference: fmt.Sprintf("server restart %.1f ms", ref.P50),
		Ratio: "—", Goal: "≤ 2 s", Met: met(got.Max <= 2000 && got.N > 0),
	}, map[string]any{"reconnect": got, "restart": ref})
	return nil
}

func p9Note(p1, p9 int) string {
	if p1 == p9 {
		return ""
	}
	return fmt.Sprintf("reduced from P1's %d objects to %d to keep the full run within ~20 minutes; the reference is P1's time scaled by %d/%d (it includes the fixed start-up, so the ratio is slightly favourable to the tunnel)", p1, p9, p9, p1)
}

// p6 runs the tunnel module's own throughput and latency benchmarks (tunnel vs
// direct loopback, both in the same benchmark) and reads their metrics.
func (r *runner) p6(ctx context.Context) error {
	m := map[string]float64{}
	for _, args := range [][]string{
		{"-bench", "BulkThroughput/tls", "-benchtime", strconv.Itoa(r.cfg.TunnelBenchN) + "x"},
		{"-bench", "SmallRequestLatency", "-benchtime", "2000x"},
	} {
		cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-run", "^$"}, append(args, "./client")...)...)
		cmd.Dir = filepath.Join(r.cfg.Root, "modules", "tunnel")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("tunnel benchmark %v: %w\n%s", args, err, out)
		}
		parseBenchMetrics(out, m)
	}
	tu, td := m["tunnel-up-MB/s"], m["tunnel-down-MB/s"]
	du, dd := m["direct-up-MB/s"], m["direct-down-MB/s"]
	ru, rd := ratio(tu, du), ratio(td, dd)
	r.add(Row{
		ID: "P6", What: "tunnel throughput: 256 MiB stream each way (TLS), tunnel vs direct loopback",
		Measured: fmt.Sprintf("up %.0f MB/s, down %.0f MB/s", tu, td), Reference: fmt.Sprintf("direct up %.0f MB/s, down %.0f MB/s", du, dd),
		Ratio: fmt.Sprintf("up %.2f×, down %.2f×", ru, rd), Goal: "≥ 0.7× each way", Met: met(ru >= 0.7 && rd >= 0.7 && tu > 0),
		Notes: fmt.Sprintf("the tunnel module's benchmark, run by the harness: `cd modules/tunnel && GOWORK=off go test -run '^$' -bench BulkThroughput/tls -benchtime %dx ./client` (and `-bench SmallRequestLatency -benchtime 2000x`)", r.cfg.TunnelBenchN),
	}, m)
	added := m["added-p50-µs"]
	r.add(Row{
		ID: "P6", What: "tunnel: added latency of a small (64 B) request on an open stream",
		Measured: fmt.Sprintf("p50 %.0f µs, p99 %.0f µs", m["tunnel-p50-µs"], m["tunnel-p99-µs"]), Reference: fmt.Sprintf("direct p50 %.0f µs, p99 %.0f µs", m["direct-p50-µs"], m["direct-p99-µs"]),
		Ratio: fmt.Sprintf("added p50 %.0f µs", added), Goal: "≤ 1 ms added p50", Met: met(added <= 1000 && m["tunnel-p50-µs"] > 0),
	}, nil)
	return nil
}

// parseBenchMetrics collects "value unit" pairs of `go test -bench` lines whose
// unit is a throughput, a latency in µs or a ratio.
func parseBenchMetrics(out []byte, m map[string]float64) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for i := 1; i+1 < len(f); i++ {
			unit := f[i+1]
			if !strings.HasSuffix(unit, "MB/s") && !strings.HasSuffix(unit, "-µs") && !strings.HasPrefix(unit, "ratio-") {
				continue
			}
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[unit] = v
			}
		}
	}
}
