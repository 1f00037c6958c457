package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// p8Replicas is the number of tunnel-server processes P8 spreads its sessions over.
const p8Replicas = 3

// serverProcess is a `syncer tunnel-server` process of P8, its output in a log file.
type serverProcess struct {
	*syncerProcess
	addr, internal string
}

func startBinary(bin, logDir, name string, env []string, args ...string) (*syncerProcess, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &syncerProcess{log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...) //nolint:gosec // the harness runs the binary it was given
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = p.cmd.Wait(); _ = f.Close(); close(p.done) }()
	return p, nil
}

// serverMemory is what P8 reads of one tunnel server: heap and stack in use (KiB) and
// its own count of sessions.
type serverMemory struct {
	KiB      float64
	Sessions int
}

func (s *serverProcess) memory(ctx context.Context) (serverMemory, error) {
	body, err := framework.HTTPGet(ctx, "http://"+s.internal+"/metrics")
	if err != nil {
		return serverMemory{}, err
	}
	return serverMemory{
		KiB:      (framework.MetricSum(body, "go_memstats_heap_inuse_bytes") + framework.MetricSum(body, "go_memstats_stack_inuse_bytes")) / 1024,
		Sessions: int(framework.MetricSum(body, "tmc_syncer_tunnel_sessions")),
	}, nil
}

// p8 connects many simulated syncer sessions (tunnel clients in the harness process,
// pinging every 5 s) through a round-robin front to three `syncer tunnel-server`
// processes running as replicas (session Leases, real TokenReviews and
// SubjectAccessReviews), and reads each server's own heap and stack per session from
// its /metrics.
func (r *runner) p8(ctx context.Context) error {
	n := r.cfg.Sessions
	dir, err := os.MkdirTemp(r.cfg.WorkDir, "p8-")
	if err != nil {
		return err
	}
	if _, err := framework.ServiceAccountKubeconfig(ctx, r.env.KCP, "bench-identities", "bench-sessions", "cluster-admin", dir); err != nil {
		return err
	}
	// The servers take only tokens bound to the tunnel's audience (as a syncer shows them).
	expiry := int64(3600)
	bound, err := r.upKube.CoreV1().ServiceAccounts("bench-identities").CreateToken(ctx, "bench-sessions", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{client.DefaultTunnelAudience}, ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("P8: tunnel token: %w", err)
	}
	token := bound.Status.Token
	cert, key, err := r.env.KCP.IssueServingCert(dir, "tunnel-server")
	if err != nil {
		return err
	}
	peerCA, peerCert, peerKey, err := framework.WriteReplicaPKI(dir, server.DefaultPeerServerName)
	if err != nil {
		return err
	}
	leaseNS := "bench-tunnel-leases"
	if _, err := r.upKube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: leaseNS}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	servers := make([]*serverProcess, p8Replicas)
	defer func() {
		for _, s := range servers {
			if s != nil {
				s.stop()
			}
		}
	}()
	for i := range servers {
		var addrs [3]string
		for j := range addrs {
			if addrs[j], err = framework.FreeAddr(); err != nil {
				return err
			}
		}
		// GOGC=25: the heap in use follows live memory closely, so that the per-session
		// figure is not mostly garbage awaiting collection.
		p, err := startBinary(r.cfg.SyncerBin, r.cfg.WorkDir, fmt.Sprintf("p8-tunnel-server-%d", i), []string{"GOGC=25"},
			"tunnel-server", "--bind-address="+addrs[0], "--internal-bind-address="+addrs[1],
			"--kubeconfig="+r.env.KCP.Kubeconfig, "--tls-cert-file="+cert, "--tls-private-key-file="+key,
			"--advertise-address="+addrs[2], "--peer-bind-address="+addrs[2], "--peer-tls-cert-file="+peerCert,
			"--peer-tls-private-key-file="+peerKey, "--peer-ca-file="+peerCA, "--lease-namespace="+leaseNS)
		if err != nil {
			return err
		}
		servers[i] = &serverProcess{syncerProcess: p, addr: addrs[0], internal: addrs[1]}
	}
	for _, s := range servers {
		if err := waitFor(ctx, 2*time.Minute, s.syncerProcess, "P8: tunnel server ready", func() bool {
			body, err := framework.HTTPGet(ctx, "http://"+s.internal+"/readyz")
			return err == nil && strings.HasPrefix(body, "ok")
		}); err != nil {
			return err
		}
	}
	backends := make([]string, len(servers))
	for i, s := range servers {
		backends[i] = s.addr
	}
	front, err := framework.StartRoundRobin(backends...)
	if err != nil {
		return err
	}
	defer func() { _ = front.Close() }()
	pem, err := os.ReadFile(r.env.KCP.CAFile())
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	time.Sleep(2 * time.Second) // let the servers' start-up garbage settle before the baseline
	before := make([]serverMemory, len(servers))
	for i, s := range servers {
		if before[i], err = s.memory(ctx); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	for i := range n {
		c, err := client.New(client.Options{
			ServerURL: "https://" + front.Addr(), Target: tunnel.Target{Cluster: "root", Name: fmt.Sprintf("sim-%04d", i)},
			Token: client.StaticToken(token), TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			Keepalive: tunnel.Keepalive{Interval: 5 * time.Second},
		})
		if err != nil {
			return err
		}
		wg.Go(func() { _ = c.Run(cctx) })
	}
	counts := func() ([]serverMemory, int) {
		out := make([]serverMemory, len(servers))
		total := 0
		for i, s := range servers {
			out[i], _ = s.memory(ctx)
			total += out[i].Sessions
		}
		return out, total
	}
	if err := waitFor(ctx, 5*time.Minute, nil, "P8: all sessions connected", func() bool { _, total := counts(); return total >= n }); err != nil {
		return err
	}
	up := time.Since(start)
	hold := r.cfg.SessionHold
	cpu := func() float64 {
		sum := 0.0
		for _, s := range servers {
			st, _ := readProc(s.cmd.Process.Pid)
			sum += st.CPUSecs
		}
		return sum
	}
	cpuB := cpu()
	time.Sleep(hold)
	cpuPct := (cpu() - cpuB) / hold.Seconds() * 100
	after, held := counts()
	var spread []string
	grown := 0.0
	for i := range servers {
		grown += after[i].KiB - before[i].KiB
		spread = append(spread, fmt.Sprint(after[i].Sessions))
	}
	perSession := grown / float64(max(held, 1))
	load := loadAvg()
	r.add(Row{
		ID: "P8", What: fmt.Sprintf("%d simulated sessions pinging every 5 s through a round-robin front to %d tunnel-server processes (replicas with session Leases)", n, p8Replicas),
		Measured: fmt.Sprintf("%d of %d held after %s, spread %s; connected in %s; %.0f KiB heap+stack per session on the servers; %.1f%% CPU (all servers) while idle; load average %s",
			held, n, hold, strings.Join(spread, "/"), up.Round(time.Millisecond), perSession, cpuPct, load),
		Reference: "—", Ratio: "—", Goal: "holds all on 2 cores, ≤ 100 KiB per session (server side)", Met: met(held == n && perSession <= 100),
		Notes: "each server in its own process (GOGC=25), clients in the harness process: the figure is the growth of the servers' go_memstats heap+stack in use, summed, per session, read from their /metrics",
	}, map[string]any{"sessions": n, "held": held, "spread": spread, "kib_per_session": perSession, "connect_seconds": up.Seconds(), "cpu_percent": cpuPct, "load": load})
	return nil
}
