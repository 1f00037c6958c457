package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"

	enginemetrics "github.com/tmc-syncer/syncer/modules/engine/metrics"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/status"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var target = tunnel.Target{Cluster: "root:org", Name: "cluster-1"}

type fakeSessions []server.SessionInfo

func (f fakeSessions) List() []server.SessionInfo { return f }

// everything registers every collector of the syncer and the tunnel server
// on one registry and observes each metric at least once.
func everything(t *testing.T, reg *prometheus.Registry, clk *clocktesting.FakeClock) {
	t.Helper()
	tm, err := NewTunnel(reg)
	require.NoError(t, err)
	hb, err := NewHeartbeat(reg, clk)
	require.NoError(t, err)
	srv, err := NewServer(reg, fakeSessions{{Target: target}})
	require.NoError(t, err)
	em, err := enginemetrics.New(reg)
	require.NoError(t, err)
	require.NoError(t, enginemetrics.RegisterStatus(reg, func() status.Snapshot {
		return status.Snapshot{Resources: []status.Resource{{GVR: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
			State: "Accepted", UpstreamSynced: true, DownstreamSynced: true, UpstreamObjects: 3, DownstreamObjects: 3}}}
	}))

	tm.StateChanged(target, tunnel.StateConnecting, tunnel.StateConnected)
	tm.Connected(target, 1500*time.Millisecond)
	tm.ConnectFailed(target, tunnel.ReasonDial)
	tm.Disconnected(target, tunnel.ReasonPingTimeout)
	tm.PingRTT(target, 3*time.Millisecond)
	tm.Bytes(target, tunnel.Sent, 100)
	tm.Bytes(target, tunnel.Received, 200)
	tm.StreamOpened(target, tunnel.StreamUpstream)
	tm.ProxiedRequest(target, 200)
	hb.HeartbeatSucceeded(clk.Now())
	hb.HeartbeatFailed(errors.New("boom"))
	srv.TargetHeartbeat(target, clk.Now())
	em.NewDepthMetric("spec").Inc()
	em.NewRetriesMetric("spec").Inc()
	em.NewLatencyMetric("spec").Observe(0.01)
	em.ObserveReconcile("spec", queue.Key{}, queue.ResultSuccess, time.Millisecond)
}

func TestRegisteringTwiceReusesCollectors(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	first, err := NewTunnel(reg)
	require.NoError(t, err)
	second, err := NewTunnel(reg) // a restarted component
	require.NoError(t, err)
	first.Connected(target, 0)
	second.Connected(target, 0)
	assert.InDelta(t, 2, testutil.ToFloat64(second.connects.WithLabelValues(target.String())), 0, "both count into one collector")

	h1, err := NewHeartbeat(reg, clk)
	require.NoError(t, err)
	h2, err := NewHeartbeat(reg, clk)
	require.NoError(t, err)
	h1.HeartbeatFailed(errors.New("x"))
	h2.HeartbeatFailed(errors.New("y"))
	assert.InDelta(t, 2, testutil.ToFloat64(h2.failures), 0)

	_, err = NewServer(reg, fakeSessions{})
	require.NoError(t, err)
	_, err = NewServer(reg, fakeSessions{{Target: target}, {Target: tunnel.Target{Cluster: "c", Name: "n"}}})
	require.NoError(t, err, "a restarted server replaces the sessions collector")
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tmc_syncer_tunnel_sessions Live tunnel sessions on the tunnel server.
# TYPE tmc_syncer_tunnel_sessions gauge
tmc_syncer_tunnel_sessions 2
`), TunnelSessions))

	everything(t, reg, clk) // and once more with every collector
}

func TestHeartbeatAgeIsComputedAtScrapeTime(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	hb, err := NewHeartbeat(reg, clk)
	require.NoError(t, err)
	n, err := testutil.GatherAndCount(reg, HeartbeatAge)
	require.NoError(t, err)
	assert.Zero(t, n, "no age before the first heartbeat")
	hb.HeartbeatSucceeded(clk.Now())
	clk.Step(12 * time.Second)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tmc_syncer_heartbeat_age_seconds Seconds since the last successful SyncTarget heartbeat.
# TYPE tmc_syncer_heartbeat_age_seconds gauge
tmc_syncer_heartbeat_age_seconds 12
`), HeartbeatAge))
}

func TestTunnelStateIsOneHot(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	tm, err := NewTunnel(reg)
	require.NoError(t, err)
	tm.StateChanged(target, tunnel.StateConnected, tunnel.StateBackoff)
	for _, s := range states {
		want := 0.0
		if s == tunnel.StateBackoff {
			want = 1
		}
		assert.InDelta(t, want, testutil.ToFloat64(tm.state.WithLabelValues(target.String(), s.String())), 0, "state %s", s)
	}
}

var metricName = regexp.MustCompile(`tmc_syncer_[a-z0-9_]+`)

// TestDashboardMetricsExistInScrape proves the Grafana dashboards use only
// metric names this code exports: each must be in a scrape of a registry with
// every collector registered and observed once.
func TestDashboardMetricsExistInScrape(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	everything(t, reg, clocktesting.NewFakeClock(time.Now()))
	families, err := reg.Gather()
	require.NoError(t, err)
	scraped := map[string]*dto.MetricFamily{}
	for _, f := range families {
		scraped[f.GetName()] = f
	}
	files, err := filepath.Glob("../../../deploy/dashboards/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files, "no dashboards under deploy/dashboards")
	for _, file := range files {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		var dash map[string]any
		require.NoError(t, json.Unmarshal(data, &dash), "%s is not JSON", file)
		var exprs []string
		collectExprs(dash, &exprs)
		require.NotEmpty(t, exprs, "%s has no queries", file)
		used := map[string]bool{}
		for _, e := range exprs {
			for _, name := range metricName.FindAllString(e, -1) {
				used[name] = true
			}
		}
		names := make([]string, 0, len(used))
		for n := range used {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			family, suffix := name, ""
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, s); ok && scraped[name] == nil {
					family, suffix = base, s
				}
			}
			f := scraped[family]
			if !assert.NotNil(t, f, "%s: metric %s is not exported", filepath.Base(file), name) {
				continue
			}
			assert.NotEmpty(t, f.GetMetric(), "%s: metric %s has no samples", filepath.Base(file), name)
			if suffix != "" {
				assert.Equal(t, dto.MetricType_HISTOGRAM, f.GetType(), "%s: %s used as a histogram", filepath.Base(file), name)
			}
		}
	}
}

func collectExprs(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			collectExprs(e, out)
		}
	case []any:
		for _, e := range x {
			collectExprs(e, out)
		}
	}
}

// TestMetricsOverARealTunnel wires the collectors into a loopback tunnel
// server and client and reads /metrics from the server's extra Handler.
func TestMetricsOverARealTunnel(t *testing.T) {
	serverReg, clientReg := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	serverTunnel, err := NewTunnel(serverReg)
	require.NoError(t, err)
	clientTunnel, err := NewTunnel(clientReg)
	require.NoError(t, err)
	registry := server.NewRegistry()
	_, err = NewServer(serverReg, registry)
	require.NoError(t, err)

	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(serverReg))
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), func(o *server.Options) {
		o.Observer = serverTunnel
		o.Registry = registry
		o.Handler = mux
	})
	downstream := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "pod log line\n") })
	c, err := client.New(client.Options{ServerURL: srv.URL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken),
		Observer: clientTunnel, Handler: downstream, Keepalive: tunnel.Keepalive{Interval: 50 * time.Millisecond}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tunneltest.Eventually(t, 10*time.Second, "client connects", func() bool { return c.State() == tunnel.StateConnected })

	conn, err := c.DialContext(ctx, "tcp", "ignored:0")
	require.NoError(t, err)
	_, err = conn.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	require.NoError(t, conn.Close())

	req := tunneltest.BearerRequest(ctx, t, http.MethodGet,
		srv.URL+tunneltest.Target.ProxyPath()+"/api/v1/namespaces/team-a/pods/web/log", tunneltest.UserToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	req = tunneltest.BearerRequest(ctx, t, http.MethodGet,
		srv.URL+tunneltest.Target.ProxyPath()+"/api/v1/namespaces/kube-system/pods/web/log", tunneltest.UserToken)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	tg := tunneltest.Target.String()
	tunneltest.Eventually(t, 10*time.Second, "pings measured on both sides", func() bool {
		n1, _ := testutil.GatherAndCount(clientReg, TunnelPingRTT)
		n2, _ := testutil.GatherAndCount(serverReg, TunnelPingRTT)
		return n1 > 0 && n2 > 0
	})
	assert.InDelta(t, 1, testutil.ToFloat64(clientTunnel.state.WithLabelValues(tg, "Connected")), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(clientTunnel.connects.WithLabelValues(tg)), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(clientTunnel.streams.WithLabelValues(tg, "upstream")), 0)
	assert.Positive(t, testutil.ToFloat64(clientTunnel.bytes.WithLabelValues(tg, "sent")))
	assert.InDelta(t, 1, testutil.ToFloat64(serverTunnel.proxied.WithLabelValues(tg, "200")), 0)
	n, err := testutil.GatherAndCount(serverReg, TunnelProxiedRequest)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the request the Authorizer denied is not counted: only authorised requests are")

	resp, err = http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Contains(t, string(body), "tmc_syncer_tunnel_sessions 1")
	assert.Contains(t, string(body), `tmc_syncer_tunnel_proxied_requests_total{code="200",target="root:org:ws/cluster-1"} 1`)
}
