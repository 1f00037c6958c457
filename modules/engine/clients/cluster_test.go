package clients

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

func TestForAllClustersRoutesWritesToTheContextsCluster(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"apiVersion":"v1","kind":"ConfigMapList","metadata":{},"items":[]}`))
	}))
	defer srv.Close()

	cfg := ForAllClusters(&rest.Config{Host: srv.URL}, srv.URL+"/services/syncer/root:loc/st/uid")
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	cms := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"})

	ctx := context.Background()
	_, _ = cms.List(ctx, metav1.ListOptions{})
	_, _ = cms.Namespace("default").Get(WithCluster(ctx, "root:team-a"), "cm", metav1.GetOptions{})
	_, _ = cms.Namespace("default").Get(WithCluster(ctx, "2x7q1m0bd0fa2fz6"), "cm", metav1.GetOptions{})
	_, err = cms.Namespace("default").Get(WithCluster(ctx, "../../root"), "cm", metav1.GetOptions{})
	require.Error(t, err, "a cluster name that is not one must never reach the path")

	assert.Equal(t, []string{
		"GET /services/syncer/root:loc/st/uid/clusters/*/api/v1/configmaps",
		"GET /services/syncer/root:loc/st/uid/clusters/root:team-a/api/v1/namespaces/default/configmaps/cm",
		"GET /services/syncer/root:loc/st/uid/clusters/2x7q1m0bd0fa2fz6/api/v1/namespaces/default/configmaps/cm",
	}, paths)
}

func TestValidCluster(t *testing.T) {
	for name, want := range map[string]bool{
		"root": true, "root:team-a": true, "2x7q1m0bd0fa2fz6": true,
		"": false, "*": false, "Root": false, "root:": false, ":root": false, "a/b": false,
		"root:..": false, "-a": false, "a-": false, "a%2Fb": false,
	} {
		assert.Equal(t, want, ValidCluster(name), name)
	}
}

func FuzzValidClusterNeverAllowsPathCharacters(f *testing.F) {
	for _, s := range []string{"root", "root:a", "*", "../x", "a%2f", "a?b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidCluster(s) {
			for _, bad := range []string{"/", "?", "#", "%", "*", ".", " "} {
				assert.NotContains(t, s, bad)
			}
		}
	})
}

func TestForCluster(t *testing.T) {
	cfg, err := ForCluster(&rest.Config{Host: "https://kcp:6443"}, "https://kcp:6443/", "root:loc")
	require.NoError(t, err)
	assert.Equal(t, "https://kcp:6443/clusters/root:loc", cfg.Host)
	_, err = ForCluster(&rest.Config{}, "https://kcp", "x/y")
	require.Error(t, err)
}
