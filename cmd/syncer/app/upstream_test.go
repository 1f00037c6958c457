package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
)

const syncTargetJSON = `{"apiVersion":"workload.kcp.io/v1alpha1","kind":"SyncTarget",
 "metadata":{"name":"st","uid":"u1","annotations":{"kcp.io/cluster":"2x7q1m0bd0fa2fz6"}}%s}`

// fakeControlPlane answers the SyncTarget GET at path, 404s like kube-apiserver
// elsewhere (a body that is no Status), and 404s like kcp for a missing SyncTarget.
// With forbidPaths it answers /clusters/… as kube-apiserver does to an identity
// without that non-resource path: 403 "cannot get path".
func fakeControlPlane(t *testing.T, path, status string, forbidPaths ...bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case len(forbidPaths) > 0 && forbidPaths[0] && strings.HasPrefix(r.URL.Path, "/clusters/"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,
			  "message":"forbidden: User \"system:serviceaccount:s:syncer\" cannot get path \"` + r.URL.Path + `\"","details":{}}`))
		case r.URL.Path == path:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(strings.Replace(syncTargetJSON, "%s", status, 1)))
		case strings.HasSuffix(r.URL.Path, "/synctargets/missing"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,
			  "message":"synctargets.workload.kcp.io \"missing\" not found","details":{"name":"missing","kind":"synctargets"}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestResolveUpstreamFindsTheFlavour(t *testing.T) {
	const stPath = "/apis/workload.kcp.io/v1alpha1/synctargets/st"
	vw := `,"status":{"virtualWorkspaces":[{"syncerURL":"https://kcp:6443/services/syncer/root:loc/st/u1","upsyncerURL":"https://kcp:6443/services/upsyncer/root:loc/st/u1"}]}`
	tests := []struct {
		name          string
		path, status  string
		forbidPaths   bool
		fromCluster   string
		wantKCP       bool
		wantSTSuffix  string
		wantWorkloads string
	}{
		{name: "plain kube-apiserver", path: stPath, fromCluster: "root", wantSTSuffix: ""},
		{name: "plain kube-apiserver, custom --from-cluster", path: stPath, fromCluster: "root:e2e", wantSTSuffix: ""},
		{name: "plain kube-apiserver, identity without /clusters/ paths", path: stPath, forbidPaths: true, fromCluster: "root", wantSTSuffix: ""},
		{
			name: "kcp, bare host", path: "/clusters/root:loc" + stPath, status: vw, fromCluster: "root:loc", wantKCP: true,
			wantSTSuffix: "/clusters/root:loc", wantWorkloads: "https://kcp:6443/services/syncer/root:loc/st/u1/clusters/*",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeControlPlane(t, tt.path, tt.status, tt.forbidPaths)
			up, err := resolveUpstream(context.Background(), &rest.Config{Host: srv.URL}, tt.fromCluster, "st", "u1")
			require.NoError(t, err)
			assert.Equal(t, tt.wantKCP, up.KCP)
			assert.Equal(t, srv.URL+tt.wantSTSuffix, up.SyncTarget.Host)
			assert.Equal(t, "2x7q1m0bd0fa2fz6", up.Cluster, "the syncTargetKey's cluster comes from the SyncTarget's kcp.io/cluster")
			if tt.wantKCP {
				assert.Equal(t, tt.wantWorkloads, up.Workloads.Host)
				require.NotNil(t, up.Upsyncer)
			} else {
				assert.Equal(t, up.SyncTarget.Host, up.Workloads.Host)
			}
		})
	}
}

func TestResolveUpstreamRefusesWhatIsNotTheSyncTarget(t *testing.T) {
	srv := fakeControlPlane(t, "/clusters/root:loc/apis/workload.kcp.io/v1alpha1/synctargets/st", "")
	_, err := resolveUpstream(context.Background(), &rest.Config{Host: srv.URL}, "root:loc", "missing", "")
	require.Error(t, err)
	assert.Equal(t, ExitSyncTarget, codeOf(err))
	assert.Contains(t, err.Error(), `SyncTarget "missing" not found`)

	_, err = resolveUpstream(context.Background(), &rest.Config{Host: srv.URL}, "root:loc", "st", "other-uid")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--sync-target-uid is other-uid")
}
