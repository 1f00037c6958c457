package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// Environment of the server process of the memory test (see serverMemoryPerSession).
const (
	memChildEnv   = "TUNNEL_MEMORY_SERVER" // "1": run as the server process
	memCertEnv    = "TUNNEL_MEMORY_CERT"
	memKeyEnv     = "TUNNEL_MEMORY_KEY"
	memSessionEnv = "TUNNEL_MEMORY_SESSIONS" // sessions of TestServerMemoryPerSession (default 200)
)

// serverMemoryBudget is what one idle session may cost the server (heap and stack in use
// after a collection). The P8 goal (docs/benchmarks.md) is 100 KiB with Leases, metrics
// and GOGC=25 on top; this bound catches a regression of the session itself.
const serverMemoryBudget = 64 << 10

// memStats is what the server process reports of itself.
type memStats struct {
	HeapInuse  uint64 `json:"heapInuse"`
	StackInuse uint64 `json:"stackInuse"`
	HeapAlloc  uint64 `json:"heapAlloc"`
	Goroutines int    `json:"goroutines"`
	Sessions   int    `json:"sessions"`
}

func (m memStats) inuse() uint64 { return m.HeapInuse + m.StackInuse }

// anySyncer authenticates tunneltest.SyncerToken and lets it hold any target's tunnel.
type anySyncer struct{}

func (anySyncer) AuthenticateToken(_ context.Context, _, token string) (server.UserInfo, bool, error) {
	if token != tunneltest.SyncerToken {
		return server.UserInfo{}, false, nil
	}
	return server.UserInfo{Name: tunneltest.SyncerUser, UID: "uid-syncer"}, true, nil
}

func (anySyncer) Authorize(_ context.Context, at server.Attributes) (bool, string, error) {
	return at.User.Name == tunneltest.SyncerUser && at.Subresource == "tunnel", "", nil
}

// TestServerMemoryChild is the server process of the memory test; it does nothing unless
// started by it. It serves tunnels with TLS on a loopback port, prints "ADDR <addr>" and
// serves /mem (memStats after a collection) and /debug/pprof/ on the same port, until
// its standard input closes.
func TestServerMemoryChild(t *testing.T) {
	if os.Getenv(memChildEnv) != "1" {
		t.Skip("the server process of TestServerMemoryPerSession")
	}
	if os.Getenv("TUNNEL_MEMORY_PROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, not a sample
	}
	reg := server.NewRegistry()
	mux := http.NewServeMux()
	mux.HandleFunc("/mem", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = json.NewEncoder(w).Encode(memStats{
			HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, HeapAlloc: ms.HeapAlloc,
			Goroutines: runtime.NumGoroutine(), Sessions: len(reg.List()),
		})
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv, err := server.New(server.Options{
		UpstreamAddress: "127.0.0.1:1", Authenticator: anySyncer{}, Authorizer: anySyncer{},
		NamespaceMapper: tunneltest.MapNamespace, Registry: reg, Logger: logr.Discard(),
		CertFile: os.Getenv(memCertEnv), KeyFile: os.Getenv(memKeyEnv), Handler: mux,
	})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	fmt.Printf("ADDR %s\n", ln.Addr())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent goes
	cancel()
	require.NoError(t, <-done)
}

// serverMemoryPerSession starts the tunnel server in a process of its own (this test
// binary running TestServerMemoryChild), connects n tunnel clients to it from this
// process, and returns the server's heap and stack in use per idle session (after a
// collection, before and after) and its goroutines per session. Server and clients are
// in different processes, so the figure is the server's alone.
func serverMemoryPerSession(tb testing.TB, n int) (bytesPerSession, goroutinesPerSession float64) {
	tb.Helper()
	pki := tunneltest.NewPKI(tb)
	_, certFile, keyFile := pki.WriteFiles(tb)
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerMemoryChild$") //nolint:gosec // this test binary
	cmd.Env = append(os.Environ(), memChildEnv+"=1", memCertEnv+"="+certFile, memKeyEnv+"="+keyFile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(tb, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(tb, err)
	require.NoError(tb, cmd.Start())
	tb.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	require.NotEmpty(tb, addr, "the server process did not start")
	go func() { // drain the rest (the test framework's PASS line)
		for sc.Scan() {
		}
	}()

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS()}}
	defer hc.CloseIdleConnections()
	read := func() memStats {
		resp, err := hc.Get("https://" + addr + "/mem")
		require.NoError(tb, err)
		defer func() { _ = resp.Body.Close() }()
		var m memStats
		require.NoError(tb, json.NewDecoder(resp.Body).Decode(&m))
		return m
	}
	before := read()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		c, err := client.New(client.Options{
			ServerURL: "https://" + addr, Target: tunnel.Target{Cluster: "root:org:ws", Name: fmt.Sprintf("cluster-%04d", i)},
			Token: client.StaticToken(tunneltest.SyncerToken), TLSConfig: pki.ClientTLS(),
		})
		require.NoError(tb, err)
		wg.Go(func() { _ = c.Run(ctx) })
	}
	var after memStats
	deadline := time.Now().Add(2 * time.Minute)
	for after = read(); after.Sessions < n; after = read() {
		require.True(tb, time.Now().Before(deadline), "only %d of %d sessions connected", after.Sessions, n)
		time.Sleep(100 * time.Millisecond)
	}
	// Idle for a while: the sessions ping, the handshake garbage is collected and the
	// stacks that grew during the handshakes shrink.
	time.Sleep(6 * time.Second)
	after = read()
	if path := os.Getenv("TUNNEL_MEMORY_PROFILE"); path != "" {
		saveProfile(tb, hc, "https://"+addr+"/debug/pprof/heap", path)
		saveProfile(tb, hc, "https://"+addr+"/debug/pprof/goroutine?debug=1", path+".goroutines")
	}
	tb.Logf("server: before %+v, after %+v", before, after)
	return float64(after.inuse()) - float64(before.inuse()), float64(after.Goroutines - before.Goroutines)
}

func saveProfile(tb testing.TB, hc *http.Client, url, path string) {
	tb.Helper()
	resp, err := hc.Get(url)
	require.NoError(tb, err)
	defer func() { _ = resp.Body.Close() }()
	f, err := os.Create(path)
	require.NoError(tb, err)
	defer func() { _ = f.Close() }()
	_, err = f.ReadFrom(resp.Body)
	require.NoError(tb, err)
}

// TestServerMemoryPerSession holds 200 idle tunnel sessions (TLS, keepalive) on a server
// in its own process and checks what each costs the server: heap and stack in use, and
// goroutines. TUNNEL_MEMORY_PROFILE=<file> saves the server's heap profile (and
// <file>.goroutines).
func TestServerMemoryPerSession(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 200 sessions for several seconds")
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv(memSessionEnv)); err == nil && v > 0 {
		n = v
	}
	total, goroutines := serverMemoryPerSession(t, n)
	perSession := total / float64(n)
	t.Logf("server side: %.1f KiB heap+stack per idle session, %.1f goroutines per session (%d sessions)", perSession/1024, goroutines/float64(n), n)
	require.LessOrEqual(t, goroutines/float64(n), 4.0, "server goroutines per idle session")
	if raceEnabled {
		t.Skip("the race detector changes memory use: figure reported only")
	}
	require.LessOrEqual(t, perSession, float64(serverMemoryBudget), "server memory per idle session")
}

// BenchmarkServerMemoryPerSession reports the server's heap+stack bytes and goroutines
// per idle session (see TestServerMemoryPerSession); b.N is ignored.
func BenchmarkServerMemoryPerSession(b *testing.B) {
	const n = 200
	for range b.N {
		total, goroutines := serverMemoryPerSession(b, n)
		b.ReportMetric(total/n, "server-B/session")
		b.ReportMetric(goroutines/n, "goroutines/session")
	}
}
