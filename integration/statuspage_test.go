package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/health"
	"github.com/tmc-syncer/syncer/modules/tunnel/metrics"
	"github.com/tmc-syncer/syncer/modules/tunnel/monitor"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
	"github.com/tmc-syncer/syncer/modules/tunnel/statuspage"
	"github.com/tmc-syncer/syncer/modules/tunnel/statuspage/browsertest"
)

// TestStatusPageListsSyncTargetsInHeadlessChromium runs the control-plane
// side as the tunnel server process would (monitor, tunnel server with
// status page, health and metrics on its extra handler) and a syncer
// (heartbeater, tunnel client) against real clusters, then loads /status in a
// real browser.
func TestStatusPageListsSyncTargetsInHeadlessChromium(t *testing.T) {
	bin := browsertest.Chromium(t)
	env := framework.Shared(t)
	dyn := env.KCP.Dynamic(t)
	connected := healthCreateSyncTarget(t, dyn, "status-up")
	silent := healthCreateSyncTarget(t, dyn, "status-down") // no syncer at all

	reg := prometheus.NewRegistry()
	tunnelMetrics, err := metrics.NewTunnel(reg)
	require.NoError(t, err)
	registry := server.NewRegistry()
	serverMetrics, err := metrics.NewServer(reg, registry)
	require.NoError(t, err)
	m, err := monitor.New(monitor.Options{
		Client: dyn, Cluster: healthCluster, Threshold: 3 * time.Second, Period: time.Second, Sessions: registry,
		Observer: serverMetrics, LabelSelector: healthLabel + "=" + t.Name()[:min(len(t.Name()), 63)], Logger: testr.New(t),
	})
	require.NoError(t, err)
	errs := statuspage.NewErrorLog(5, nil)
	// Synced object counts: configmaps accepted for the connected target, three objects
	// assigned to it with state Sync, one pending (not counted).
	_, err = dyn.Resource(workloadv1alpha1.SyncTargetsResource).Patch(context.Background(), connected.GetName(), types.MergePatchType,
		[]byte(`{"status":{"syncedResources":[{"resource":"configmaps","versions":["v1"],"state":"Accepted"}]}}`), metav1.PatchOptions{}, "status")
	require.NoError(t, err)
	ns := env.KCP.CreateNamespace(t, "status-counts")
	stateLabel := identity.StateLabel(identity.SyncTargetKey(healthCluster, connected.GetName()))
	for i, state := range []string{"Sync", "Sync", "Sync", ""} {
		_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("cm-%d", i), Labels: map[string]string{stateLabel: state}}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	counter := statuspage.NewUpstreamCounter(metadata.NewForConfigOrDie(env.KCP.Config), m, statuspage.CounterOptions{TTL: 100 * time.Millisecond})
	page := statuspage.New(statuspage.Options{Targets: m, Sessions: registry, Errors: errs, Counter: counter, Threshold: 3 * time.Second})
	hc := health.NewHandler()
	hc.AddReadyz(health.Synced("informers", m.HasSynced))
	mux := http.NewServeMux()
	mux.Handle("/status", page)
	mux.Handle("/status.json", page)
	mux.Handle("/metrics", metrics.Handler(reg))
	mux.Handle("/readyz", hc)
	mux.Handle("/livez", hc)
	srv := newHealthTunnelServer(t, server.Options{UpstreamAddress: healthUpstreamAddress(t, env.KCP.Config), Registry: registry,
		Observer: tunnel.Observers(tunnelMetrics, m.TunnelObserver(), errs), Handler: mux, Logger: testr.New(t)})
	healthBackground(t, m.Run)

	healthStartTunnelClient(t, srv.URL(), tunnel.Target{Cluster: healthCluster, Name: connected.GetName()}, nil)
	healthStartHeartbeater(t, dyn, connected, time.Second)

	upKey, downKey := healthCluster+"/"+connected.GetName(), healthCluster+"/"+silent.GetName()
	require.Eventually(t, func() bool {
		code, body := healthGet(t, srv.URL()+"/status.json")
		if code != http.StatusOK {
			return false
		}
		var p statuspage.Page
		if json.Unmarshal([]byte(body), &p) != nil {
			return false
		}
		rows := map[string]statuspage.Row{}
		for _, r := range p.Targets {
			rows[r.Cluster+"/"+r.Name] = r
		}
		up, down := rows[upKey], rows[downKey]
		return up.Connected && up.Ready == "True" && up.HeartbeatAgeSeconds != nil && up.PingRTTSeconds != nil &&
			up.SyncedObjects["configmaps"] == 3 && down.Name != "" && !down.Connected && down.Ready == "False"
	}, 30*time.Second, 200*time.Millisecond, "/status.json never showed %s connected and Ready and %s not Ready", upKey, downKey)

	dom := browsertest.Browse(t, bin, srv.URL()+"/status", "--dump-dom")
	doc, err := html.Parse(strings.NewReader(dom))
	require.NoError(t, err)
	rows := map[string]*html.Node{}
	for _, r := range browsertest.FindAll(doc, func(n *html.Node) bool { return n.Data == "tr" && browsertest.Attr(n, "class") == "target" }) {
		rows[browsertest.Attr(r, "data-target")] = r
	}
	require.Len(t, rows, 2, "the browser shows one row per SyncTarget of this test")
	up, down := rows[upKey], rows[downKey]
	require.NotNil(t, up, "row of %s", upKey)
	require.NotNil(t, down, "row of %s", downKey)
	cell := func(row *html.Node, class string) string {
		cells := browsertest.FindAll(row, func(n *html.Node) bool { return n.Data == "td" && browsertest.Attr(n, "class") == class })
		require.Len(t, cells, 1)
		return strings.Join(strings.Fields(browsertest.Text(cells[0])), " ")
	}
	assert.Equal(t, "True", browsertest.Attr(up, "data-ready"))
	assert.True(t, strings.HasPrefix(cell(up, "tunnel"), "Connected since "), cell(up, "tunnel"))
	assert.Regexp(t, `^[0-9.]+ ms$`, cell(up, "rtt"))
	assert.Regexp(t, `^[0-9]s ago 20`, cell(up, "heartbeat"))
	assert.Equal(t, "False", browsertest.Attr(down, "data-ready"))
	assert.Equal(t, "Disconnected", cell(down, "tunnel"))
	assert.Contains(t, cell(down, "heartbeat"), "never")
	assert.Contains(t, cell(down, "errors"), "HeartbeatHealthy: no heartbeat yet")
	assert.Equal(t, "configmaps: 3", cell(up, "objects"))
	assert.Equal(t, "—", cell(down, "objects"), "no resources accepted, nothing counted")

	shot := filepath.Join(t.TempDir(), "status.png")
	if dir := os.Getenv("STATUSPAGE_SCREENSHOT_DIR"); dir != "" {
		shot = filepath.Join(dir, "status-integration.png")
	}
	browsertest.Browse(t, bin, srv.URL()+"/status", "--screenshot="+shot, "--window-size=1400,400")
	png, err := os.ReadFile(shot)
	require.NoError(t, err)
	assert.Greater(t, len(png), 10000, "screenshot is not blank")

	code, body := healthGet(t, srv.URL()+"/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "tmc_syncer_tunnel_sessions 1")
	assert.Contains(t, body, `tmc_syncer_synctarget_last_heartbeat_timestamp_seconds{target="`+upKey+`"}`)
	assert.Contains(t, body, `tmc_syncer_tunnel_connects_total{target="`+upKey+`"} 1`)
	code, body = healthGet(t, srv.URL()+"/readyz?verbose")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "[+]informers ok")
}
