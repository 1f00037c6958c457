package statuspage

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
	"github.com/tmc-syncer/syncer/modules/tunnel/statuspage/browsertest"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

type fakeTargets []*workloadv1alpha1.SyncTarget

func (f fakeTargets) SyncTargets() []*workloadv1alpha1.SyncTarget { return f }
func (f fakeTargets) TargetOf(st *workloadv1alpha1.SyncTarget) tunnel.Target {
	return tunnel.Target{Cluster: st.Annotations["kcp.io/cluster"], Name: st.Name}
}

type fakeSessions []server.SessionInfo

func (f fakeSessions) List() []server.SessionInfo { return f }

type fakeCounter map[tunnel.Target]map[string]int

func (f fakeCounter) SyncedObjects(_ context.Context, t tunnel.Target) map[string]int { return f[t] }

func st(name string, hb time.Duration, conds ...workloadv1alpha1.Condition) *workloadv1alpha1.SyncTarget {
	s := &workloadv1alpha1.SyncTarget{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"kcp.io/cluster": "root:org"}}}
	t := metav1.NewTime(now.Add(-hb))
	s.Status.LastSyncerHeartbeatTime = &t
	s.Status.Conditions = conds
	return s
}

// page builds a status page with two targets: east is healthy and
// connected, west stopped heartbeating and lost its tunnel; plus a session
// without a SyncTarget object.
func page(t *testing.T) *Handler {
	t.Helper()
	clk := clocktesting.NewFakeClock(now)
	errs := NewErrorLog(3, clk)
	west := tunnel.Target{Cluster: "root:org", Name: "west"}
	errs.ConnectFailed(west, tunnel.ReasonDial)
	errs.Disconnected(west, tunnel.ReasonPingTimeout)
	errs.Disconnected(west, tunnel.ReasonShutdown)  // normal: not an error
	errs.Disconnected(west, tunnel.ReasonGoingAway) // the syncer stopping: not an error
	errs.Record(west, `apply deployments.apps team-a/<web>: conflict`)
	return New(Options{
		Targets: fakeTargets{
			st("east", 4*time.Second,
				workloadv1alpha1.Condition{Type: workloadv1alpha1.ReadyCondition, Status: corev1.ConditionTrue, Reason: "Ready"},
				workloadv1alpha1.Condition{Type: workloadv1alpha1.HeartbeatHealthy, Status: corev1.ConditionTrue}),
			st("west", 95*time.Second,
				workloadv1alpha1.Condition{Type: workloadv1alpha1.ReadyCondition, Status: corev1.ConditionFalse, Reason: "ErrorHeartbeat",
					Message: "HeartbeatHealthy: no heartbeat since 2026-11-27T11:58:25Z"},
				workloadv1alpha1.Condition{Type: workloadv1alpha1.HeartbeatHealthy, Status: corev1.ConditionFalse, Reason: "ErrorHeartbeat",
					Message: "no heartbeat since 2026-11-27T11:58:25Z", LastTransitionTime: metav1.NewTime(now.Add(-50 * time.Second))}),
		},
		Sessions: fakeSessions{
			{Target: tunnel.Target{Cluster: "root:org", Name: "east"}, ConnectedAt: now.Add(-2 * time.Hour), PingRTT: 1200 * time.Microsecond,
				RemoteAddr: "127.0.0.1:50123", Streams: 4},
			{Target: tunnel.Target{Cluster: "root:other", Name: "orphan"}, ConnectedAt: now.Add(-time.Minute), RemoteAddr: "127.0.0.1:50999"},
		},
		Counter: fakeCounter{{Cluster: "root:org", Name: "east"}: {"deployments.apps": 12, "configmaps": 30, "services": 5}},
		Errors:  errs,
		Clock:   clk,
	})
}

func TestStatusJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	page(t).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status.json", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var p Page
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	require.Len(t, p.Targets, 3)
	east, west, orphan := p.Targets[0], p.Targets[1], p.Targets[2]
	assert.Equal(t, "east", east.Name)
	assert.True(t, east.Connected)
	assert.Equal(t, now.Add(-2*time.Hour), *east.ConnectedSince)
	assert.InDelta(t, 0.0012, *east.PingRTTSeconds, 1e-9)
	assert.InDelta(t, 4, *east.HeartbeatAgeSeconds, 0)
	assert.False(t, east.HeartbeatStale)
	assert.Equal(t, "True", east.Ready)
	assert.Equal(t, map[string]int{"deployments.apps": 12, "configmaps": 30, "services": 5}, east.SyncedObjects)
	assert.Empty(t, east.Errors)

	assert.Equal(t, "west", west.Name)
	assert.False(t, west.Connected)
	assert.True(t, west.HeartbeatStale)
	assert.Equal(t, "False", west.Ready)
	msgs := make([]string, 0, len(west.Errors))
	for _, e := range west.Errors {
		msgs = append(msgs, e.Message)
	}
	assert.ElementsMatch(t, []string{
		"HeartbeatHealthy: no heartbeat since 2026-11-27T11:58:25Z",
		"tunnel connection attempt failed: dial", "tunnel disconnected: ping_timeout",
		"apply deployments.apps team-a/<web>: conflict",
	}, msgs)

	assert.Equal(t, "orphan", orphan.Name)
	assert.False(t, orphan.Known)
	assert.True(t, orphan.Connected)
	assert.Equal(t, "Unknown", orphan.Ready)
}

func TestStatusHTMLIsSelfContainedAndEscaped(t *testing.T) {
	rec := httptest.NewRecorder()
	page(t).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	assert.Contains(t, rec.Header().Get("Content-Security-Policy"), "default-src 'none'")
	assert.NotContains(t, body, "<script")
	assert.NotContains(t, body, "http://")
	assert.NotContains(t, body, "https://")
	assert.Contains(t, body, "team-a/&lt;web&gt;: conflict", "messages are escaped")

	for path, code := range map[string]int{"/status/x": http.StatusNotFound, "/nope": http.StatusNotFound} {
		rec := httptest.NewRecorder()
		page(t).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		assert.Equal(t, code, rec.Code, path)
	}
	rec = httptest.NewRecorder()
	page(t).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/status", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}

func TestEmptyStatusPage(t *testing.T) {
	rec := httptest.NewRecorder()
	New(Options{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	assert.Contains(t, rec.Body.String(), "No SyncTargets.")
}

func TestHumanSeconds(t *testing.T) {
	for in, want := range map[float64]string{0: "0s", 4.4: "4s", 59.6: "1m 0s", 200: "3m 20s", 7500: "2h 5m"} {
		assert.Equal(t, want, humanSeconds(in), "%v", in)
	}
}

// TestStatusPageRendersInHeadlessChromium loads /status in a real browser
// and checks the DOM it built: one row per target with the right cells.
func TestStatusPageRendersInHeadlessChromium(t *testing.T) {
	bin := browsertest.Chromium(t)
	srv := httptest.NewServer(page(t)) // 127.0.0.1
	defer srv.Close()

	dom := browsertest.Browse(t, bin, srv.URL+"/status", "--dump-dom")
	doc, err := html.Parse(strings.NewReader(dom))
	require.NoError(t, err)
	rows := browsertest.FindAll(doc, func(n *html.Node) bool { return n.Data == "tr" && browsertest.Attr(n, "class") == "target" })
	require.Len(t, rows, 3, "one row per target in the rendered DOM")
	byTarget := map[string]*html.Node{}
	for _, r := range rows {
		byTarget[browsertest.Attr(r, "data-target")] = r
	}
	east, west := byTarget["root:org/east"], byTarget["root:org/west"]
	require.NotNil(t, east)
	require.NotNil(t, west)
	require.NotNil(t, byTarget["root:other/orphan"])
	cell := func(row *html.Node, class string) string {
		cells := browsertest.FindAll(row, func(n *html.Node) bool { return n.Data == "td" && browsertest.Attr(n, "class") == class })
		require.Len(t, cells, 1, "cell %s", class)
		return strings.Join(strings.Fields(browsertest.Text(cells[0])), " ")
	}
	assert.Equal(t, "True", browsertest.Attr(east, "data-ready"))
	assert.Equal(t, "Connected since 2026-11-27T10:00:00Z 127.0.0.1:50123 · 4 stream(s)", cell(east, "tunnel"))
	assert.Equal(t, "1.2 ms", cell(east, "rtt"))
	assert.Equal(t, "4s ago 2026-11-27T11:59:56Z", cell(east, "heartbeat"))
	assert.Equal(t, "configmaps: 30 deployments.apps: 12 services: 5", cell(east, "objects"))
	assert.Equal(t, "none", cell(east, "errors"))
	assert.Equal(t, "False", browsertest.Attr(west, "data-ready"))
	assert.Equal(t, "Disconnected", cell(west, "tunnel"))
	assert.Equal(t, "—", cell(west, "rtt"))
	assert.Equal(t, "1m 35s ago stale 2026-11-27T11:58:25Z", cell(west, "heartbeat"))
	assert.Contains(t, cell(west, "errors"), "apply deployments.apps team-a/<web>: conflict")
	assert.Contains(t, cell(west, "errors"), "tunnel disconnected: ping_timeout")
	assert.Contains(t, cell(west, "errors"), "HeartbeatHealthy: no heartbeat since 2026-11-27T11:58:25Z")

	shot := filepath.Join(t.TempDir(), "status.png")
	if dir := os.Getenv("STATUSPAGE_SCREENSHOT_DIR"); dir != "" {
		shot = filepath.Join(dir, "status.png")
	}
	browsertest.Browse(t, bin, srv.URL+"/status", "--screenshot="+shot, "--window-size=1400,560")
	png, err := os.ReadFile(shot)
	require.NoError(t, err, "screenshot written")
	require.Greater(t, len(png), 10000, "screenshot is not blank")
	assert.Equal(t, "\x89PNG", string(png[:4]))
}
