package integration

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/tunnel/metrics"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// acceptLog is a listener that records when each connection was accepted: one per
// connection attempt of the syncer, as each attempt dials afresh.
type acceptLog struct {
	net.Listener
	mu    sync.Mutex
	times []time.Time
}

func (l *acceptLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.times = append(l.times, time.Now())
		l.mu.Unlock()
	}
	return c, err
}

func (l *acceptLog) accepted() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

// startRefusingTunnelServer runs a tunnel server (TokenReview and SAR against the
// KCP cluster) on a loopback listener that logs accepts; with certFile it serves
// HTTPS with that certificate, otherwise plain HTTP.
func startRefusingTunnelServer(t *testing.T, env *framework.Environment, certFile, keyFile string) (string, *acceptLog) {
	t.Helper()
	upstream, err := url.Parse(env.KCP.Config.Host)
	require.NoError(t, err)
	clients := server.SingleCluster(env.KCP.Kube(t))
	srv, err := server.New(server.Options{
		UpstreamAddress: upstream.Host,
		Authenticator:   server.NewTokenReviewAuthenticator(clients),
		Authorizer:      server.NewSubjectAccessReviewAuthorizer(clients),
		CertFile:        certFile, KeyFile: keyFile,
		Insecure: certFile == "",
	})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	al := &acceptLog{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, al) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	scheme := "https://"
	if certFile == "" {
		scheme = "http://"
	}
	return scheme + ln.Addr().String(), al
}

// badTokenKubeconfig copies kubeconfig with its token replaced by one no
// TokenReview accepts.
func badTokenKubeconfig(t *testing.T, kubeconfig string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	require.NoError(t, err)
	for _, ai := range cfg.AuthInfos {
		ai.Token = "not-a-valid-token"
	}
	path := filepath.Join(t.TempDir(), "bad-token.kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

// failedAttempt is one "tunnel connection failed" line of the syncer's log.
type failedAttempt struct {
	attempt        int
	reason         string
	retryIn, bound time.Duration
}

var failedAttemptLine = regexp.MustCompile(`"tunnel connection failed".*reason="([a-z_]+)" attempt=(\d+) retryIn="([^"]+)" backoffBound="([^"]+)"`)

func failedAttempts(t *testing.T, log string) []failedAttempt {
	t.Helper()
	var out []failedAttempt
	for _, m := range failedAttemptLine.FindAllStringSubmatch(log, -1) {
		n, err := strconv.Atoi(m[2])
		require.NoError(t, err)
		retry, err := time.ParseDuration(m[3])
		require.NoError(t, err)
		bound, err := time.ParseDuration(m[4])
		require.NoError(t, err)
		out = append(out, failedAttempt{attempt: n, reason: m[1], retryIn: retry, bound: bound})
	}
	return out
}

// TestRefusedSyncerKeepsRetryingWithBackoff runs the syncer binary against a
// tunnel server that refuses it, for a token no TokenReview accepts and for a
// server certificate the syncer does not trust: the syncer logs a clear error with
// the reason, counts the failures in its metrics, keeps running and tries again
// and again, each wait drawn from a growing backoff bound and really waited.
func TestRefusedSyncerKeepsRetryingWithBackoff(t *testing.T) {
	env := framework.Shared(t)
	for _, tc := range []struct {
		name       string
		reason     string
		errorText  string
		kubeconfig func(valid string) string
		serverCert func(dir string) (string, string)
	}{
		{
			name: "bad token", reason: "unauthorized", errorText: "tunnel handshake refused: 401 Unauthorized",
			kubeconfig: func(valid string) string { return badTokenKubeconfig(t, valid) },
			serverCert: func(string) (string, string) { return "", "" },
		},
		{
			name: "untrusted server certificate", reason: "dial", errorText: "x509: certificate signed by unknown authority",
			kubeconfig: func(valid string) string { return valid },
			// The physical cluster's CA, which the syncer (trusting the KCP CA) does not trust.
			serverCert: func(dir string) (string, string) {
				cert, key, err := env.Physical.IssueServingCert(dir, "untrusted-tunnel-server")
				require.NoError(t, err)
				return cert, key
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stName := "refused-" + map[string]string{"unauthorized": "token", "dial": "cert"}[tc.reason]
			st := createSyncTarget(t, env, stName)
			cert, key := tc.serverCert(t.TempDir())
			serverURL, accepts := startRefusingTunnelServer(t, env, cert, key)
			metricsAddr := freeAddr(t)
			args := []string{
				"--from-kubeconfig=" + tc.kubeconfig(syncerIdentity(t, env, stName)), "--to-kubeconfig=" + env.Physical.Kubeconfig,
				"--sync-target-name=" + stName, "--sync-target-uid=" + string(st.GetUID()),
				"--health-bind-address=", "--metrics-bind-address=" + metricsAddr,
				"--tunnel-url=" + serverURL, "--tunnel-ca-file=" + env.KCP.CAFile(),
				// The upstream token itself goes to the server (a garbage one in "bad token").
				"--tunnel-token-audience=",
			}
			if strings.HasPrefix(serverURL, "http://") {
				args = append(args, "--tunnel-insecure")
			}
			p := startSyncerBinary(t, args...)

			require.Eventually(t, func() bool { return len(accepts.accepted()) >= 3 && len(failedAttempts(t, p.Output.String())) >= 3 },
				30*time.Second, 50*time.Millisecond, "the syncer tries at least 3 times; output:\n%s", p.Output)
			if done, err := p.Exited(); done {
				t.Fatalf("the refused syncer exited: %v; output:\n%s", err, p.Output)
			}
			log := p.Output.String()
			assert.Contains(t, log, tc.errorText, "the log says why the tunnel is refused")
			require.Eventually(t, func() bool {
				return framework.MetricSum(scrapeMetrics(metricsAddr), metrics.TunnelConnectFailed, `reason="`+tc.reason+`"`) >= 2
			}, 10*time.Second, 100*time.Millisecond, "the failures are counted by reason")

			attempts := failedAttempts(t, log)
			times := accepts.accepted()
			for i, a := range attempts[:3] {
				assert.Equal(t, i+1, a.attempt)
				assert.Equal(t, tc.reason, a.reason)
				assert.Less(t, a.retryIn, a.bound, "the wait is drawn below the bound")
				if i > 0 {
					assert.Greater(t, a.bound, attempts[i-1].bound, "the backoff bound grows")
				}
			}
			// Each retry really waits what the log announced before dialing again.
			for i := 0; i+1 < len(times) && i < len(attempts) && attempts[i].reason == tc.reason; i++ {
				assert.GreaterOrEqual(t, times[i+1].Sub(times[i]), attempts[i].retryIn-10*time.Millisecond,
					"gap between attempts %d and %d", i+1, i+2)
			}
			t.Logf("%d attempts reached the server at %v; the syncer logged %d failures", len(times), relative(times), len(attempts))
		})
	}
}

func relative(times []time.Time) []string {
	var out []string
	for _, tm := range times {
		out = append(out, tm.Sub(times[0]).Round(time.Millisecond).String())
	}
	return out
}
