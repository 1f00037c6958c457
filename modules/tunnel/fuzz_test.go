package tunnel_test

import (
	"context"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// FuzzParsePath: whatever path a client sends, ParsePath never panics, and a path it accepts
// names a valid target (a kcp cluster path and a Kubernetes name: valid UTF-8, bounded, no
// wildcard) whose endpoint path is exactly the prefix of the input.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/tunnel/v1/clusters/root:org/synctargets/c1",
		"/tunnel/v1/clusters/root:org/synctargets/c1/proxy/api/v1/namespaces/x/pods/p/log",
		"/tunnel/v1/clusters/../synctargets/c1",
		"/tunnel/v1/clusters/a%2Fb/synctargets/c1",
		"/tunnel/v1/clusters//synctargets/",
		"/other",
		"/tunnel/v1/clusters/root/synctargets/\xff\xfe",
		"/tunnel/v1/clusters/root/synctargets/%FF",
		"/tunnel/v1/clusters/*/synctargets/*",
		"/tunnel/v1/clusters/root:/synctargets/c1",
		"/tunnel/v1/clusters/root/synctargets/" + strings.Repeat("a", 30<<10),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		target, rest, err := tunnel.ParsePath(p)
		if err != nil {
			return
		}
		require.NoError(t, target.Validate())
		require.Equal(t, p, target.Path()+rest, "endpoint path and remainder rebuild the input")
		require.NotContains(t, target.Cluster, "/")
		require.NotContains(t, target.Name, "/")
		require.True(t, utf8.ValidString(target.String()), "names are valid UTF-8 (Prometheus label values)")
		require.LessOrEqual(t, len(target.Name), 253)
		require.LessOrEqual(t, len(target.Cluster), tunnel.MaxClusterLength)
		require.NotContains(t, target.String(), "*")
	})
}

// FuzzParseAPIPath: an accepted API path is clean, namespaced, rebuilds to itself, carries no
// subresource but the pod ones, and only read-only methods map to a verb for plain resources.
func FuzzParseAPIPath(f *testing.F) {
	for _, s := range [][2]string{
		{"/api/v1/namespaces/team-a/pods/web/log", "GET"},
		{"/api/v1/namespaces/team-a/pods/web/exec", "POST"},
		{"/apis/apps/v1/namespaces/team-a/deployments/web", "GET"},
		{"/apis/apps/v1/namespaces/team-a/deployments/web/scale", "PUT"},
		{"/api/v1/namespaces/team-a/configmaps", "DELETE"},
		{"/api/v1/namespaces/../secrets", "GET"},
		{"/api/v1/nodes/n1/proxy", "GET"},
		{"/api/v1/namespaces/team-a/status", "GET"},
		{"/api/v1/namespaces/team-a/finalize/x", "GET"},
	} {
		f.Add(s[0], s[1], "watch=true")
	}
	for _, q := range []string{"watch=yes", "watch=True", "watch=", "watch", "watch=FALSE", "watch=0&watch=1", "watch=%ff"} {
		f.Add("/api/v1/namespaces/team-a/configmaps", "GET", q)
	}
	f.Fuzz(func(t *testing.T, p, method, rawQuery string) {
		r, err := tunnel.ParseAPIPath(p)
		if err != nil {
			return
		}
		require.Equal(t, path.Clean(p), p, "only clean paths")
		require.Equal(t, p, r.Path(), "the request rebuilds to the input")
		require.NotEmpty(t, r.Namespace)
		require.NotEqual(t, "..", r.Namespace)
		if r.Subresource != "" {
			require.Equal(t, "pods", r.Resource)
			require.Empty(t, r.Group)
			require.Contains(t, []string{"log", "exec", "attach", "portforward"}, r.Subresource)
		}
		q, _ := url.ParseQuery(rawQuery)
		require.Equal(t, kubeAPIServerWatch(t, q), tunnel.IsWatch(q), "watch decided as kube-apiserver decides it")
		require.NotContains(t, []string{"status", "finalize"}, r.Resource, "namespace subresources are not resources")
		verb, err := r.Verb(method, q)
		if err != nil {
			return
		}
		if r.Subresource == "" {
			require.Contains(t, []string{http.MethodGet, http.MethodHead}, method, "plain resources are read-only")
			require.Contains(t, []string{"get", "list", "watch"}, verb)
		}
	})
}

// FuzzSplitWorkspace: whatever follows <target>/proxy, SplitWorkspace never panics; an
// accepted workspace is a valid cluster path (valid UTF-8, bounded, no '/', no wildcard, no
// dot segment) and workspace and API path rebuild the input; a path without the workspace
// part is passed on untouched.
func FuzzSplitWorkspace(f *testing.F) {
	for _, s := range []string{
		"/clusters/root:org:team/api/v1/namespaces/default/pods/web/log",
		"/clusters/2abc3def/api/v1/namespaces/default/pods/web/log",
		"/api/v1/namespaces/default/pods/web/log",
		"/clusters/../api/v1/namespaces/default/pods/web/log",
		"/clusters/*/api/v1/namespaces/default/pods",
		"/clusters//api/v1",
		"/clusters/root:/api/v1",
		"/clusters/ROOT/api/v1",
		"/clusters/root%2Fx/api/v1",
		"/clusters/root",
		"/clusters/\xff/api",
		"/clusters/" + strings.Repeat("a:", 600) + "a/api/v1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		ws, apiPath, err := tunnel.SplitWorkspace(p)
		if err != nil {
			require.True(t, strings.HasPrefix(p, "/clusters/"), "only a workspace part can fail")
			return
		}
		if ws == "" {
			require.Equal(t, p, apiPath, "no workspace: the path is passed on as it is")
			require.False(t, strings.HasPrefix(p, "/clusters/"))
			return
		}
		require.Equal(t, p, "/clusters/"+ws+apiPath, "workspace and API path rebuild the input")
		require.NoError(t, tunnel.Target{Cluster: ws, Name: "x"}.Validate(), "the workspace is a valid cluster path")
		require.True(t, utf8.ValidString(ws))
		require.LessOrEqual(t, len(ws), tunnel.MaxClusterLength)
		require.NotContains(t, ws, "/")
		require.NotContains(t, ws, "*")
		require.NotContains(t, ws, "..")
		require.True(t, strings.HasPrefix(apiPath, "/"))
	})
}

// yamuxFrame builds a 12-byte yamux header (version 0).
func yamuxFrame(typ byte, flags uint16, stream, length uint32) []byte {
	b := make([]byte, 12)
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], stream)
	binary.BigEndian.PutUint32(b[8:], length)
	return b
}

// FuzzSessionPeerFrames: a peer that sends arbitrary bytes over the WebSocket (broken yamux
// headers, unknown types, huge lengths, stray data) never panics the session, and the session
// ends once the peer goes away.
func FuzzSessionPeerFrames(f *testing.F) {
	const (
		typeData, typeWindow, typePing, typeGoAway = 0, 1, 2, 3
		flagSYN, flagFIN, flagRST                  = 1, 4, 8
	)
	f.Add(append(yamuxFrame(typeWindow, flagSYN, 1, 0), yamuxFrame(typeData, 0, 1, 5)...), []byte("hello"))
	f.Add(yamuxFrame(typeData, flagSYN, 2, 1<<31), []byte{})
	f.Add(yamuxFrame(typePing, flagSYN, 0, 42), yamuxFrame(typeGoAway, 0, 0, 1))
	f.Add(yamuxFrame(typeWindow, flagFIN|flagRST, 7, 0), []byte{0xff, 0xff})
	f.Add([]byte{1, 0, 0, 0}, []byte("not yamux at all"))

	// ended receives once per connection, when its session has ended (or never began).
	ended := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ended <- struct{}{} }()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		sess, err := tunnel.NewSession(r.Context(), ws, false, target, tunnel.Keepalive{Interval: time.Second, MaxMissed: 2}, nil, logr.Discard())
		if err != nil {
			return
		}
		go func() {
			for {
				c, err := sess.Accept(tunnel.StreamUpstream)
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		<-sess.Done()
	}))
	f.Cleanup(srv.Close)

	f.Fuzz(func(t *testing.T, first, second []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, strings.Replace(srv.URL, "http", "ws", 1), nil)
		require.NoError(t, err)
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
		for _, msg := range [][]byte{first, second} {
			if err := ws.Write(ctx, websocket.MessageBinary, msg); err != nil {
				break
			}
		}
		_ = ws.CloseNow()
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			t.Fatal("the session did not end after the peer went away")
		}
	})
}
