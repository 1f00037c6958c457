package server_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// TestWorkspaceProxyAuthorisesAndMapsInTheWorkspace: under kcp a user of a workspace bound
// to the SyncTarget names the workspace in the path; the token is reviewed in that
// workspace, the SubjectAccessReview asks about the pod there, and the namespace is mapped
// for that workspace. Without the segment nothing changes; a workspace the caller has no
// rights in is 403, one whose namespace is not placed 404, an invalid name 400 (before any
// review), and the whole form 404 when the server has no workspace mapper.
func TestWorkspaceProxyAuthorisesAndMapsInTheWorkspace(t *testing.T) {
	var (
		mu   sync.Mutex
		hits []string
	)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits = append(hits, r.URL.Path)
		_, _ = w.Write([]byte("log line\n"))
	})
	p := newPair(t, "127.0.0.1:1", h, func(o *server.Options) { o.WorkspaceNamespaces = tunneltest.MapWorkspaceNamespace })
	ws := "/" + tunnel.WorkspaceSegment + "/" + tunneltest.Workspace
	const podLog = "/api/v1/namespaces/team-a/pods/web/log"
	for _, tc := range []struct {
		name, path, token string
		want              int
		reviewedIn        string // cluster of the token review, "" for none
		wantHit           string
	}{
		{"workspace user reads logs in the workspace", ws + podLog, tunneltest.WorkspaceUserToken, 200, tunneltest.Workspace, "/api/v1/namespaces/kcp-ws-team-a/pods/web/log"},
		{"without the segment: the target's cluster, as before", podLog, tunneltest.UserToken, 200, tunneltest.Target.Cluster, "/api/v1/namespaces/kcp-team-a/pods/web/log"},
		{"workspace user without the segment is asked in the target's cluster", podLog, tunneltest.WorkspaceUserToken, 403, tunneltest.Target.Cluster, ""},
		{"target-cluster user naming the workspace has no rights there", ws + podLog, tunneltest.UserToken, 403, tunneltest.Workspace, ""},
		{"no pods/log rights in the workspace", ws + podLog, tunneltest.OtherToken, 403, tunneltest.Workspace, ""},
		{"namespace of the workspace the user may not read", ws + "/api/v1/namespaces/other/pods/web/log", tunneltest.WorkspaceUserToken, 403, tunneltest.Workspace, ""},
		{"namespace of the workspace not placed", ws + "/api/v1/namespaces/team-unplaced/pods/web/log", tunneltest.WorkspaceUserToken, 404, tunneltest.Workspace, ""},
		{"another workspace whose namespace is not placed", "/clusters/root:org:elsewhere" + podLog, tunneltest.WorkspaceUserToken, 403, "root:org:elsewhere", ""},
		{"invalid workspace", "/clusters/Root" + podLog, tunneltest.WorkspaceUserToken, 400, "", ""},
		{"wildcard workspace", "/clusters/*" + podLog, tunneltest.WorkspaceUserToken, 400, "", ""},
		{"workspace without an API path", "/clusters/root:org:team", tunneltest.WorkspaceUserToken, 404, "", ""},
		{"workspace then an unclean path", ws + "/api/v1/namespaces/../secrets", tunneltest.WorkspaceUserToken, 404, "", ""},
		{"no token", ws + podLog, "", 401, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			before := len(hits)
			mu.Unlock()
			reviews, _ := p.srv.Auth.LastReview()
			code, body := p.do(t, http.MethodGet, tc.path, tc.token, nil)
			assert.Equal(t, tc.want, code, body)
			after, cluster := p.srv.Auth.LastReview()
			if tc.reviewedIn == "" {
				assert.Equal(t, reviews, after, "no token review")
			} else if assert.Equal(t, reviews+1, after, "one token review") {
				assert.Equal(t, tc.reviewedIn, cluster, "the token is reviewed in the cluster the request names")
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.wantHit == "" {
				assert.Len(t, hits, before, "a refused request never reaches the physical cluster")
				return
			}
			require.Len(t, hits, before+1)
			assert.Equal(t, tc.wantHit, hits[before])
		})
	}
	var sar server.Attributes
	for _, a := range p.srv.Auth.AskedSoFar() {
		if a.User.Name == "carol" && a.Cluster == tunneltest.Workspace {
			sar = a
			break
		}
	}
	assert.Equal(t, server.Attributes{User: server.UserInfo{Name: "carol"}, Cluster: tunneltest.Workspace, Verb: "get",
		Resource: "pods", Subresource: "log", Namespace: "team-a", Name: "web"}, sar, "the SubjectAccessReview asks about the pod in the workspace")
}

// TestWorkspaceProxyIsOffWithoutAWorkspaceMapper: a server for a plain hub (no
// WorkspaceNamespaces) refuses paths naming a workspace before any review.
func TestWorkspaceProxyIsOffWithoutAWorkspaceMapper(t *testing.T) {
	p := newPair(t, "127.0.0.1:1", http.NotFoundHandler(), nil)
	reviews, _ := p.srv.Auth.LastReview() // the syncer's handshake
	code, body := p.do(t, http.MethodGet, "/clusters/"+tunneltest.Workspace+"/api/v1/namespaces/team-a/pods/web/log", tunneltest.WorkspaceUserToken, nil)
	assert.Equal(t, http.StatusNotFound, code, body)
	assert.Contains(t, body, "not enabled")
	after, _ := p.srv.Auth.LastReview()
	assert.Equal(t, reviews, after, "no token review")
}
