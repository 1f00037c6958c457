package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/health"
	"github.com/tmc-syncer/syncer/modules/tunnel/heartbeat"
	"github.com/tmc-syncer/syncer/modules/tunnel/monitor"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

const (
	healthCluster = "root:e2e"
	// healthLabel marks the SyncTargets of these tests so that their
	// monitors leave other tests' SyncTargets alone.
	healthLabel = "e2e.tmc-syncer.io/health"
)

// healthCreateSyncTarget creates a labelled SyncTarget in the control plane and
// deletes it when the test ends.
func healthCreateSyncTarget(t *testing.T, dyn dynamic.Interface, prefix string) *unstructured.Unstructured {
	t.Helper()
	name := prefix + "-" + rand.String(5)
	sts := dyn.Resource(workloadv1alpha1.SyncTargetsResource)
	st, err := sts.Create(context.Background(), &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
		"metadata": map[string]any{"name": name, "labels": map[string]any{healthLabel: t.Name()[:min(len(t.Name()), 63)]}},
	}}, metav1.CreateOptions{})
	require.NoError(t, err, "create SyncTarget %s", name)
	t.Cleanup(func() { _ = sts.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return st
}

func healthReadSyncTarget(t *testing.T, dyn dynamic.Interface, name string) *workloadv1alpha1.SyncTarget {
	t.Helper()
	u, err := dyn.Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	st := &workloadv1alpha1.SyncTarget{}
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, st))
	return st
}

func healthConditionStatus(st *workloadv1alpha1.SyncTarget, typ workloadv1alpha1.ConditionType) corev1.ConditionStatus {
	if c := st.Status.Conditions.Get(typ); c != nil {
		return c.Status
	}
	return ""
}

// healthBackground runs fn until the returned stop func is called; stop waits for fn.
func healthBackground(t *testing.T, fn func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			assert.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop
}

func healthStartHeartbeater(t *testing.T, dyn dynamic.Interface, st *unstructured.Unstructured, period time.Duration) (stop func()) {
	t.Helper()
	h, err := heartbeat.New(heartbeat.Options{
		Client: dyn.Resource(workloadv1alpha1.SyncTargetsResource), Name: st.GetName(), UID: st.GetUID(),
		Period: period, Backoff: heartbeat.Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
		Logger: testr.New(t),
	})
	require.NoError(t, err)
	return healthBackground(t, h.Run)
}

func healthStartMonitor(t *testing.T, dyn dynamic.Interface, threshold, period time.Duration, sessions monitor.Sessions) *monitor.Monitor {
	t.Helper()
	m, err := monitor.New(monitor.Options{
		Client: dyn, Cluster: healthCluster, Threshold: threshold, Period: period, Sessions: sessions,
		LabelSelector: healthLabel + "=" + t.Name()[:min(len(t.Name()), 63)], Logger: testr.New(t),
	})
	require.NoError(t, err)
	healthBackground(t, m.Run)
	return m
}

func TestHeartbeatAdvancesAndMonitorMarksStaleTargets(t *testing.T) {
	env := framework.Shared(t)
	dyn := env.KCP.Dynamic(t)
	const (
		period    = time.Second
		threshold = 3 * time.Second
	)
	st := healthCreateSyncTarget(t, dyn, "heartbeat")
	name := st.GetName()
	healthStartMonitor(t, dyn, threshold, period, nil)
	stopBeats := healthStartHeartbeater(t, dyn, st, period)

	var first time.Time
	require.Eventually(t, func() bool {
		hb := healthReadSyncTarget(t, dyn, name).Status.LastSyncerHeartbeatTime
		if hb == nil {
			return false
		}
		if first.IsZero() {
			first = hb.Time
		}
		return hb.After(first)
	}, 15*time.Second, 100*time.Millisecond, "status.lastSyncerHeartbeatTime of %s does not advance", name)
	require.Eventually(t, func() bool {
		s := healthReadSyncTarget(t, dyn, name)
		return healthConditionStatus(s, workloadv1alpha1.SyncerReady) == corev1.ConditionTrue &&
			healthConditionStatus(s, workloadv1alpha1.HeartbeatHealthy) == corev1.ConditionTrue &&
			healthConditionStatus(s, workloadv1alpha1.ReadyCondition) == corev1.ConditionTrue
	}, 15*time.Second, 100*time.Millisecond, "SyncerReady, HeartbeatHealthy and Ready of %s never became True", name)

	// The syncer stops: HeartbeatHealthy=False within threshold + one period.
	stopBeats()
	last := healthReadSyncTarget(t, dyn, name).Status.LastSyncerHeartbeatTime.Time
	var unhealthy *workloadv1alpha1.Condition
	require.Eventually(t, func() bool {
		unhealthy = healthReadSyncTarget(t, dyn, name).Status.Conditions.Get(workloadv1alpha1.HeartbeatHealthy)
		return unhealthy != nil && unhealthy.Status == corev1.ConditionFalse
	}, threshold+period+10*time.Second, 100*time.Millisecond, "HeartbeatHealthy of %s not False after the heartbeater stopped", name)
	assert.Equal(t, workloadv1alpha1.ErrorHeartbeatReason, unhealthy.Reason)
	assert.Equal(t, "no heartbeat since "+last.UTC().Format(time.RFC3339), unhealthy.Message)
	// The timestamps have second precision: allow one second each side.
	took := unhealthy.LastTransitionTime.Sub(last)
	assert.LessOrEqual(t, took, threshold+period+2*time.Second, "marked unhealthy %s after the last heartbeat", took)
	assert.GreaterOrEqual(t, took, threshold-time.Second, "marked unhealthy too early: %s after the last heartbeat", took)
	s := healthReadSyncTarget(t, dyn, name)
	assert.Equal(t, corev1.ConditionFalse, healthConditionStatus(s, workloadv1alpha1.ReadyCondition))

	// The syncer comes back: True again.
	healthStartHeartbeater(t, dyn, st, period)
	require.Eventually(t, func() bool {
		s := healthReadSyncTarget(t, dyn, name)
		return healthConditionStatus(s, workloadv1alpha1.HeartbeatHealthy) == corev1.ConditionTrue &&
			healthConditionStatus(s, workloadv1alpha1.ReadyCondition) == corev1.ConditionTrue
	}, 15*time.Second, 100*time.Millisecond, "HeartbeatHealthy/Ready of %s not True after the heartbeater restarted", name)
}

// healthAllowAll authenticates every token as the syncer and allows everything.
type healthAllowAll struct{}

func (healthAllowAll) AuthenticateToken(context.Context, string, string) (server.UserInfo, bool, error) {
	return server.UserInfo{Name: "system:serviceaccount:default:syncer"}, true, nil
}

func (healthAllowAll) Authorize(context.Context, server.Attributes) (bool, string, error) {
	return true, "", nil
}

// healthTunnelServer is an insecure loopback tunnel server that can be stopped and
// started again on the same address.
type healthTunnelServer struct {
	t    *testing.T
	opts server.Options
	addr string
	stop func()
}

func newHealthTunnelServer(t *testing.T, opts server.Options) *healthTunnelServer {
	t.Helper()
	opts.Insecure = true
	opts.Authenticator, opts.Authorizer = healthAllowAll{}, healthAllowAll{}
	if opts.Registry == nil {
		opts.Registry = server.NewRegistry()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &healthTunnelServer{t: t, opts: opts, addr: ln.Addr().String()}
	s.serve(ln)
	return s
}

func (s *healthTunnelServer) serve(ln net.Listener) {
	srv, err := server.New(s.opts)
	require.NoError(s.t, err)
	s.stop = healthBackground(s.t, func(ctx context.Context) error { return srv.Serve(ctx, ln) })
}

func (s *healthTunnelServer) URL() string { return "http://" + s.addr }

// Restart listens on the same address again.
func (s *healthTunnelServer) Restart() {
	var ln net.Listener
	require.Eventually(s.t, func() bool {
		var err error
		ln, err = net.Listen("tcp", s.addr)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "address %s not free again", s.addr)
	s.serve(ln)
}

func healthUpstreamAddress(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	u, err := url.Parse(cfg.Host)
	require.NoError(t, err)
	return u.Host
}

func healthStartTunnelClient(t *testing.T, serverURL string, target tunnel.Target, obs tunnel.Observer) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{
		ServerURL: serverURL, Target: target, Token: client.StaticToken("syncer"), Observer: obs, Logger: testr.New(t),
		// Short backoff and breaker: the test takes the server down briefly.
		Backoff: client.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		Breaker: client.Breaker{OpenTimeout: 500 * time.Millisecond},
	})
	require.NoError(t, err)
	healthBackground(t, c.Run)
	return c
}

func healthGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestHealthReadyzFollowsTheTunnel(t *testing.T) {
	env := framework.Shared(t)
	dyn := env.KCP.Dynamic(t)
	st := healthCreateSyncTarget(t, dyn, "tunnel-health")
	target := tunnel.Target{Cluster: healthCluster, Name: st.GetName()}

	registry := server.NewRegistry()
	m, err := monitor.New(monitor.Options{
		Client: dyn, Cluster: healthCluster, Threshold: 5 * time.Second, Period: time.Second, Sessions: registry,
		LabelSelector: healthLabel + "=" + t.Name(), Logger: testr.New(t),
	})
	require.NoError(t, err)
	srv := newHealthTunnelServer(t, server.Options{UpstreamAddress: healthUpstreamAddress(t, env.KCP.Config), Registry: registry,
		Observer: m.TunnelObserver(), Logger: testr.New(t)})
	healthBackground(t, m.Run)
	c := healthStartTunnelClient(t, srv.URL(), target, nil)

	// The syncer's upstream client goes through the tunnel.
	upCfg := c.UpstreamConfig(rest.CopyConfig(env.KCP.Config))
	upstream, err := kubernetes.NewForConfig(upCfg)
	require.NoError(t, err)
	h := health.NewHandler()
	h.AddReadyz(health.TunnelConnected(c), health.Reachable("upstream", health.RESTPinger(upstream.Discovery().RESTClient(), "/readyz")))
	hs := httptest.NewServer(h)
	defer hs.Close()

	require.Eventually(t, func() bool {
		code, body := healthGet(t, hs.URL+"/readyz?verbose")
		return code == http.StatusOK && strings.Contains(body, "[+]tunnel ok") && strings.Contains(body, "[+]upstream ok")
	}, 20*time.Second, 100*time.Millisecond, "/readyz does not pass with the tunnel up")
	require.Eventually(t, func() bool {
		return healthConditionStatus(healthReadSyncTarget(t, dyn, target.Name), workloadv1alpha1.TunnelConnected) == corev1.ConditionTrue
	}, 15*time.Second, 100*time.Millisecond, "TunnelConnected of %s not True", target.Name)

	srv.stop()
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = healthGet(t, hs.URL+"/readyz?verbose&exclude=upstream")
		return code == http.StatusInternalServerError
	}, 20*time.Second, 100*time.Millisecond, "/readyz still passes with the tunnel server down")
	assert.Regexp(t, `\[-\]tunnel failed: tunnel not connected \(state (Connecting|Backoff|Disconnected)\)`, body)
	assert.Contains(t, body, "readyz check failed")
	code, plain := healthGet(t, hs.URL+"/readyz")
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Contains(t, plain, "[-]tunnel failed", "the reason is listed even without ?verbose")
	require.Eventually(t, func() bool {
		c := healthReadSyncTarget(t, dyn, target.Name).Status.Conditions.Get(workloadv1alpha1.TunnelConnected)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == monitor.ReasonTunnelDisconnected
	}, 15*time.Second, 100*time.Millisecond, "TunnelConnected of %s not False with the tunnel server down", target.Name)

	srv.Restart()
	require.Eventually(t, func() bool {
		code, body := healthGet(t, hs.URL+"/readyz?verbose")
		return code == http.StatusOK && strings.Contains(body, "[+]tunnel ok") && strings.Contains(body, "[+]upstream ok")
	}, 20*time.Second, 100*time.Millisecond, "/readyz does not pass again after the tunnel server returned")
	require.Eventually(t, func() bool {
		return healthConditionStatus(healthReadSyncTarget(t, dyn, target.Name), workloadv1alpha1.TunnelConnected) == corev1.ConditionTrue
	}, 15*time.Second, 100*time.Millisecond, "TunnelConnected of %s not True again", target.Name)
}
