package tunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var target = tunnel.Target{Cluster: "root:org", Name: "c1"}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		path      string
		want      tunnel.Target
		remainder string
		wantErr   bool
	}{
		{path: "/tunnel/v1/clusters/root:org/synctargets/c1", want: target},
		{path: "/tunnel/v1/clusters/root:org/synctargets/c1/proxy/api/v1/namespaces/x/pods", want: target, remainder: "/proxy/api/v1/namespaces/x/pods"},
		{path: "/tunnel/v1/clusters/root/synctargets", wantErr: true},
		{path: "/tunnel/v1/clusters/root/targets/c1", wantErr: true},
		{path: "/tunnel/v1/clusters/../synctargets/c1", wantErr: true},
		{path: "/tunnel/v1/clusters//synctargets/c1", wantErr: true},
		{path: "/other", wantErr: true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, rem, err := tunnel.ParsePath(tc.path)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.remainder, rem)
		})
	}
	assert.Equal(t, "/tunnel/v1/clusters/root:org/synctargets/c1/proxy", target.ProxyPath())
	assert.Equal(t, "root:org/c1", target.String())
}

func TestSplitWorkspace(t *testing.T) {
	for _, tc := range []struct {
		path, workspace, apiPath string
		invalid, wantErr         bool
	}{
		{path: "/api/v1/namespaces/x/pods/web/log", apiPath: "/api/v1/namespaces/x/pods/web/log"},
		{path: "/clusters/root:org:team/api/v1/namespaces/x/pods/web/log", workspace: "root:org:team", apiPath: "/api/v1/namespaces/x/pods/web/log"},
		{path: "/clusters/2abc3def/apis/apps/v1/namespaces/x/deployments", workspace: "2abc3def", apiPath: "/apis/apps/v1/namespaces/x/deployments"},
		{path: "/clusters/../api/v1/namespaces/x/pods", invalid: true},
		{path: "/clusters/*/api/v1/namespaces/x/pods", invalid: true},
		{path: "/clusters//api/v1/namespaces/x/pods", invalid: true},
		{path: "/clusters/root:/api/v1", invalid: true},
		{path: "/clusters/Root/api/v1", invalid: true},
		{path: "/clusters/root%2Fx/api/v1", invalid: true},
		{path: "/clusters/" + strings.Repeat("a:", 600) + "a/api/v1", invalid: true},
		{path: "/clusters/root", wantErr: true},
	} {
		t.Run(tc.path[:min(len(tc.path), 64)], func(t *testing.T) {
			ws, apiPath, err := tunnel.SplitWorkspace(tc.path)
			if tc.invalid || tc.wantErr {
				require.Error(t, err)
				assert.Equal(t, tc.invalid, errors.Is(err, tunnel.ErrInvalidTarget), "invalid names wrap ErrInvalidTarget: %v", err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.workspace, ws)
			assert.Equal(t, tc.apiPath, apiPath)
		})
	}
	assert.Equal(t, "/tunnel/v1/clusters/root:org/synctargets/c1/proxy/clusters/root:team", target.WorkspaceProxyPath("root:team"))
}

func TestParseAPIPathAndVerb(t *testing.T) {
	for _, tc := range []struct {
		path, method, query string
		wantVerb            string
		wantParseErr        bool
		wantVerbErr         bool
	}{
		{path: "/api/v1/namespaces/a/pods/p", method: "GET", wantVerb: "get"},
		{path: "/api/v1/namespaces/a/pods", method: "GET", wantVerb: "list"},
		{path: "/api/v1/namespaces/a/pods", method: "GET", query: "watch=true", wantVerb: "watch"},
		{path: "/apis/apps/v1/namespaces/a/deployments/d", method: "GET", wantVerb: "get"},
		{path: "/api/v1/namespaces/a/pods/p/log", method: "GET", wantVerb: "get"},
		{path: "/api/v1/namespaces/a/pods/p/log", method: "POST", wantVerbErr: true},
		{path: "/api/v1/namespaces/a/pods/p/exec", method: "POST", wantVerb: "create"},
		{path: "/api/v1/namespaces/a/pods/p/exec", method: "GET", wantVerb: "create"},
		{path: "/api/v1/namespaces/a/pods/p/portforward", method: "PUT", wantVerbErr: true},
		{path: "/api/v1/namespaces/a/pods/p", method: "DELETE", wantVerbErr: true},
		{path: "/apis/apps/v1/namespaces/a/deployments/d/scale", wantParseErr: true},
		{path: "/api/v1/namespaces/a/pods/p/proxy", wantParseErr: true},
		{path: "/api/v1/nodes/n", wantParseErr: true},
		{path: "/api/v1/namespaces/a/pods/../x", wantParseErr: true},
		{path: "/api/v1/namespaces//pods", wantParseErr: true},
		{path: "/metrics", wantParseErr: true},
		{path: "", wantParseErr: true},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r, err := tunnel.ParseAPIPath(tc.path)
			if tc.wantParseErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.path, r.Path(), "round trip")
			q, _ := url.ParseQuery(tc.query)
			verb, err := r.Verb(tc.method, q)
			if tc.wantVerbErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantVerb, verb)
		})
	}
}

func TestStripCredentials(t *testing.T) {
	h := http.Header{}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Impersonate-User", "Impersonate-Extra-Scopes", "X-Remote-User", "Accept"} {
		h.Set(k, "v")
	}
	tunnel.StripCredentials(h)
	assert.Equal(t, http.Header{"Accept": {"v"}}, h)
}

func TestStateAndStatsSnapshot(t *testing.T) {
	for s, want := range map[tunnel.State]string{tunnel.StateDisconnected: "Disconnected", tunnel.StateConnecting: "Connecting",
		tunnel.StateConnected: "Connected", tunnel.StateBackoff: "Backoff", tunnel.State(42): "Unknown"} {
		assert.Equal(t, want, s.String())
	}
	var st tunnel.Stats
	var o tunnel.Observer = &st
	o.StateChanged(target, tunnel.StateDisconnected, tunnel.StateConnecting)
	o.Connected(target, time.Second)
	o.ConnectFailed(target, tunnel.ReasonDial)
	o.Disconnected(target, tunnel.ReasonPingTimeout)
	o.PingRTT(target, time.Millisecond)
	o.Bytes(target, tunnel.Sent, 10)
	o.Bytes(target, tunnel.Received, 20)
	o.StreamOpened(target, tunnel.StreamDownstream)
	o.StreamOpened(target, tunnel.StreamDownstream)
	o.StreamClosed(target, tunnel.StreamDownstream)
	snap := st.Snapshot()
	assert.Equal(t, tunnel.StateConnecting, snap.State)
	assert.EqualValues(t, 1, snap.Connects)
	assert.EqualValues(t, 1, snap.ConnectFailures[tunnel.ReasonDial])
	assert.EqualValues(t, 1, snap.Disconnects[tunnel.ReasonPingTimeout])
	assert.Equal(t, time.Millisecond, snap.LastPingRTT)
	assert.Equal(t, time.Second, snap.LastReconnect)
	assert.EqualValues(t, 10, snap.BytesSent)
	assert.EqualValues(t, 20, snap.BytesReceived)
	assert.EqualValues(t, 1, snap.OpenStreams[tunnel.StreamDownstream])
	assert.EqualValues(t, 2, snap.TotalStreams[tunnel.StreamDownstream])

	var n tunnel.Observer = tunnel.NopObserver{}
	n.StateChanged(target, 0, 1)
	n.Connected(target, 0)
	n.ConnectFailed(target, "")
	n.Disconnected(target, "")
	n.PingRTT(target, 0)
	n.Bytes(target, tunnel.Sent, 1)
	n.StreamOpened(target, tunnel.StreamUpstream)
	n.StreamClosed(target, tunnel.StreamUpstream)
}

// sessionPair connects a client and a server Session over a loopback WebSocket.
func sessionPair(t *testing.T, ka tunnel.Keepalive, srvOpts ...tunnel.SessionOption) (cli, srv *tunnel.Session, cliStats, srvStats *tunnel.Stats) {
	t.Helper()
	cliStats, srvStats = &tunnel.Stats{}, &tunnel.Stats{}
	srvCh := make(chan *tunnel.Session, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s, err := tunnel.NewSession(context.Background(), ws, false, target, ka, srvStats, testr.NewWithOptions(t, testr.Options{Verbosity: 1}).WithName("srv"), srvOpts...)
		if err != nil {
			return
		}
		srvCh <- s
		<-s.Done()
	}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, hs.URL, nil)
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	cli, err = tunnel.NewSession(context.Background(), ws, true, target, ka, cliStats, testr.NewWithOptions(t, testr.Options{Verbosity: 1}).WithName("cli"))
	require.NoError(t, err)
	srv = <-srvCh
	t.Cleanup(func() {
		cli.Close(tunnel.ReasonShutdown)
		srv.Close(tunnel.ReasonShutdown)
	})
	return cli, srv, cliStats, srvStats
}

func TestSessionStreamsBothWaysAndMeasuresPings(t *testing.T) {
	cli, srv, cliStats, srvStats := sessionPair(t, tunnel.Keepalive{Interval: 50 * time.Millisecond})
	assert.Equal(t, target, cli.Target())
	ctx := context.Background()

	// Server-opened streams served over a net.Listener on the client.
	ln := cli.Listener(tunnel.StreamDownstream)
	hsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "pong") }), ReadHeaderTimeout: time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = hsrv.Serve(ln) }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return srv.Open(ctx, tunnel.StreamDownstream)
	}}
	resp, err := (&http.Client{Transport: tr}).Get("http://syncer/ping")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, "pong", string(body))
	tr.CloseIdleConnections()
	require.NoError(t, hsrv.Close())
	<-served
	assert.NotNil(t, ln.Addr())

	// Client-opened stream piped to an echo on the server side.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := srv.Accept(tunnel.StreamUpstream)
		if err == nil {
			accepted <- c
		}
	}()
	c, err := cli.Open(ctx, tunnel.StreamUpstream)
	require.NoError(t, err)
	sc := <-accepted
	a, b := net.Pipe()
	go tunnel.Pipe(sc, a)
	go func() { _, _ = io.Copy(b, b) }()
	_, err = io.WriteString(c, "hello")
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf))
	require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
	_, err = io.ReadAll(c) // the echo side closes after our half-close
	require.NoError(t, err)
	require.NoError(t, c.Close())
	_ = b.Close()

	tunneltestEventually(t, func() bool { return cli.PingRTT() > 0 && srv.PingRTT() > 0 })
	assert.Positive(t, cliStats.Snapshot().BytesSent)
	assert.Positive(t, srvStats.Snapshot().BytesReceived)
	tunneltestEventually(t, func() bool { return cliStats.Snapshot().OpenStreams[tunnel.StreamUpstream] == 0 })

	cli.Close(tunnel.ReasonShutdown)
	assert.Equal(t, tunnel.ReasonShutdown, cli.Reason())
	<-srv.Done()
	assert.Equal(t, tunnel.ReasonGoingAway, srv.Reason(), "the client's shutdown is announced (1001)")
	_, err = cli.Open(ctx, tunnel.StreamUpstream)
	require.Error(t, err)
	_, err = ln.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	require.NoError(t, ln.Close())
}

func TestSessionStreamHandlerAndAfterClose(t *testing.T) {
	var echoes sync.WaitGroup
	echo := func(c net.Conn) {
		echoes.Go(func() {
			defer func() { _ = c.Close() }()
			_, _ = io.Copy(c, c)
		})
	}
	cli, srv, _, srvStats := sessionPair(t, tunnel.Keepalive{Interval: 50 * time.Millisecond}, tunnel.WithStreamHandler(tunnel.StreamUpstream, echo))
	var order []string
	var mu sync.Mutex
	srv.AfterClose(func() {
		mu.Lock()
		defer mu.Unlock()
		select {
		case <-srv.Done():
			order = append(order, "after done")
		default:
			order = append(order, "before done")
		}
	})

	for range 3 {
		c, err := cli.Open(context.Background(), tunnel.StreamUpstream)
		require.NoError(t, err)
		_, err = io.WriteString(c, "hello")
		require.NoError(t, err)
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		assert.Equal(t, "hello", string(buf))
		require.NoError(t, c.Close())
	}
	assert.EqualValues(t, 3, srvStats.Snapshot().TotalStreams[tunnel.StreamUpstream], "handled streams are counted as their kind")
	tunneltestEventually(t, func() bool { return cli.PingRTT() > 0 && srv.PingRTT() > 0 })

	cli.Close(tunnel.ReasonShutdown)
	<-srv.Done()
	echoes.Wait()
	tunneltestEventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 1
	})
	assert.Equal(t, []string{"after done"}, order, "AfterClose runs once, after Done")
	assert.Equal(t, tunnel.ReasonGoingAway, srv.Reason())

	// Registered after the end: runs at once.
	ran := false
	srv.AfterClose(func() { ran = true })
	assert.True(t, ran)
}

// TestSessionReasonTellsAPeerGoingAwayFromOtherEnds: the close status the peer
// sends decides the reason: 1001 (a server shutting down or restarting) is
// going_away, the client's cue to come back at once; any other end is closed.
func TestSessionReasonTellsAPeerGoingAwayFromOtherEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(*websocket.Conn)
		want tunnel.Reason
	}{
		{"going away (server shutdown)", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusGoingAway, "shutdown") }, tunnel.ReasonGoingAway},
		{"normal closure, replaced by a newer session", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusNormalClosure, "replaced") }, tunnel.ReasonReplaced},
		{"normal closure, revoked", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusNormalClosure, "revoked") }, tunnel.ReasonRevoked},
		{"normal closure, any other text is not a reason", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusNormalClosure, "shutdown\nevil") }, tunnel.ReasonClosed},
		{"normal closure without text", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusNormalClosure, "") }, tunnel.ReasonClosed},
		{"policy violation naming a reason", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusPolicyViolation, "revoked") }, tunnel.ReasonClosed},
		{"policy violation", func(ws *websocket.Conn) { _ = ws.Close(websocket.StatusPolicyViolation, "no") }, tunnel.ReasonClosed},
		{"broken connection", func(ws *websocket.Conn) { _ = ws.CloseNow() }, tunnel.ReasonClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, peer := rawPeer(t)
			tc.end(peer)
			select {
			case <-cli.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("session did not end")
			}
			assert.Equal(t, tc.want, cli.Reason())
			assert.False(t, cli.Healthy(), "no ping was answered")
		})
	}
}

func TestSessionIsHealthyOnceThePeerAnswersAPing(t *testing.T) {
	cli, peer := rawPeer(t, tunnel.Keepalive{Interval: 20 * time.Millisecond})
	assert.False(t, cli.Healthy())
	peer.CloseRead(context.Background()) // reads in the background: answers pings
	tunneltestEventually(t, cli.Healthy)
	_ = peer.Close(websocket.StatusNormalClosure, "")
	<-cli.Done()
	assert.True(t, cli.Healthy(), "stays true after the end")
}

// rawPeer returns a client session whose peer is a bare WebSocket that does
// not read (so does not answer pings) until the test makes it.
func rawPeer(t *testing.T, ka ...tunnel.Keepalive) (*tunnel.Session, *websocket.Conn) {
	t.Helper()
	peers := make(chan *websocket.Conn, 1)
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		peers <- ws
		<-release
		_ = ws.CloseNow()
	}))
	ws, resp, err := websocket.Dial(context.Background(), hs.URL, nil)
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	var k tunnel.Keepalive
	if len(ka) > 0 {
		k = ka[0]
	}
	cli, err := tunnel.NewSession(context.Background(), ws, true, target, k, nil, logr.Discard())
	require.NoError(t, err)
	t.Cleanup(func() {
		cli.Close(tunnel.ReasonShutdown)
		close(release)
		hs.Close()
	})
	return cli, <-peers
}

func TestSessionOpenHonoursContext(t *testing.T) {
	cli, _, _, _ := sessionPair(t, tunnel.Keepalive{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := cli.Open(ctx, tunnel.StreamUpstream)
	if err != nil {
		require.ErrorIs(t, err, context.Canceled)
	}
	assert.GreaterOrEqual(t, cli.NumStreams(), 0)
}

func TestSessionClosesWhenContextEnds(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s, err := tunnel.NewSession(r.Context(), ws, false, target, tunnel.Keepalive{}, nil, logr.Discard())
		if err != nil {
			return
		}
		<-s.Done()
	}))
	defer hs.Close()
	ws, resp, err := websocket.Dial(context.Background(), hs.URL, nil)
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := tunnel.NewSession(ctx, ws, true, target, tunnel.Keepalive{}, nil, logr.Discard())
	require.NoError(t, err)
	cancel()
	<-s.Done()
	assert.Equal(t, tunnel.ReasonShutdown, s.Reason())
}

func tunneltestEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTargetValidateAcceptsOnlyKCPClusterPathsAndKubernetesNames(t *testing.T) {
	for _, tc := range []struct {
		target tunnel.Target
		ok     bool
	}{
		{tunnel.Target{Cluster: "root", Name: "c1"}, true},
		{tunnel.Target{Cluster: "root:org:ws", Name: "cluster-1.east"}, true},
		{tunnel.Target{Cluster: "2ab9c", Name: strings.Repeat("a", 253)}, true},
		{tunnel.Target{Cluster: "root", Name: strings.Repeat("a", 254)}, false},
		{tunnel.Target{Cluster: strings.Repeat("a:", 511) + "a", Name: "c"}, true},
		{tunnel.Target{Cluster: strings.Repeat("a:", 512) + "a", Name: "c"}, false},
		{tunnel.Target{Cluster: strings.Repeat("a", 64), Name: "c"}, false},
		{tunnel.Target{Cluster: "", Name: "c"}, false},
		{tunnel.Target{Cluster: "root", Name: ""}, false},
		{tunnel.Target{Cluster: "*", Name: "c"}, false},
		{tunnel.Target{Cluster: "root", Name: "*"}, false},
		{tunnel.Target{Cluster: "root:", Name: "c"}, false},
		{tunnel.Target{Cluster: "-root", Name: "c"}, false},
		{tunnel.Target{Cluster: "Root", Name: "c"}, false},
		{tunnel.Target{Cluster: "root", Name: "C1"}, false},
		{tunnel.Target{Cluster: "root", Name: "\xff"}, false},
		{tunnel.Target{Cluster: "root", Name: "%FF"}, false},
		{tunnel.Target{Cluster: "root", Name: ".."}, false},
		{tunnel.Target{Cluster: "root", Name: "a/b"}, false},
	} {
		err := tc.target.Validate()
		if tc.ok {
			assert.NoError(t, err, "%.40q", tc.target.String())
		} else {
			assert.ErrorIs(t, err, tunnel.ErrInvalidTarget, "%.40q", tc.target.String())
		}
	}
}

// kubeAPIServerWatch decides watch with apimachinery's own conversion of the watch query
// parameter (what kube-apiserver's request info uses), as the oracle for tunnel.IsWatch.
func kubeAPIServerWatch(t testing.TB, q url.Values) bool {
	t.Helper()
	v, ok := q["watch"]
	if !ok || len(v) == 0 {
		return false
	}
	var watch bool
	require.NoError(t, runtime.Convert_Slice_string_To_bool(&v, &watch, nil))
	return watch
}

func TestVerbDecidesWatchExactlyAsKubeAPIServer(t *testing.T) {
	for _, tc := range []struct {
		path, method, query string
		want                string
	}{
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=true", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=1", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=yes", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=True", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=TRUE", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=on", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=2", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=true&watch=false", "watch"},
		{"/api/v1/namespaces/a/configmaps", "HEAD", "watch=yes", "watch"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=false", "list"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=False", "list"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=FALSE", "list"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=0", "list"},
		{"/api/v1/namespaces/a/configmaps", "GET", "watch=false&watch=true", "list"},
		{"/api/v1/namespaces/a/configmaps", "GET", "", "list"},
		{"/api/v1/namespaces/a/configmaps", "GET", "Watch=true", "list"},
		// A named GET is "get" whatever the query (kube-apiserver serves it as a get).
		{"/api/v1/namespaces/a/configmaps/c", "GET", "watch=true", "get"},
		{"/api/v1/namespaces/a/configmaps/c", "GET", "watch=yes", "get"},
	} {
		t.Run(tc.method+" "+tc.path+"?"+tc.query, func(t *testing.T) {
			r, err := tunnel.ParseAPIPath(tc.path)
			require.NoError(t, err)
			q, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			verb, err := r.Verb(tc.method, q)
			require.NoError(t, err)
			assert.Equal(t, tc.want, verb)
			assert.Equal(t, kubeAPIServerWatch(t, q), tunnel.IsWatch(q), "IsWatch agrees with apimachinery")
		})
	}
}

func TestNamespaceSubresourcesAreNeverResourceNames(t *testing.T) {
	for _, p := range []string{
		"/api/v1/namespaces/a/status",
		"/api/v1/namespaces/a/finalize",
		"/api/v1/namespaces/a/status/x",
		"/api/v1/namespaces/a/finalize/x",
		"/apis/apps/v1/namespaces/a/status",
		"/apis/apps/v1/namespaces/a/finalize/x",
	} {
		t.Run(p, func(t *testing.T) {
			_, err := tunnel.ParseAPIPath(p)
			require.Error(t, err, "kube-apiserver reads this as the namespace's subresource")
		})
	}
	// A resource that merely starts like one is still a resource.
	r, err := tunnel.ParseAPIPath("/apis/example.io/v1/namespaces/a/statuses/s")
	require.NoError(t, err)
	assert.Equal(t, "statuses", r.Resource)
}
