package app

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	nsname "github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// fakeKCP serves one SyncTarget (logical cluster "loc-id" under the path root:loc) and two
// namespaces of workspace "ws-id": "placed" carries the target's state label, "other" not.
// It counts the requests.
func fakeKCP(t *testing.T) (*httptest.Server, func() int) {
	t.Helper()
	key := identity.SyncTargetKey("loc-id", "st")
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		var obj map[string]any
		switch r.URL.Path {
		case "/clusters/root:loc/apis/workload.kcp.io/v1alpha1/synctargets/st":
			obj = map[string]any{"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
				"metadata": map[string]any{"name": "st", "uid": "st-uid", "annotations": map[string]any{"kcp.io/cluster": "loc-id"}}}
		case "/clusters/root:ws/api/v1/namespaces/placed":
			obj = map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "placed",
				"annotations": map[string]any{"kcp.io/cluster": "ws-id"}, "labels": map[string]any{identity.StateLabel(key): "Sync"}}}
		case "/clusters/root:ws/api/v1/namespaces/other":
			obj = map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "other",
				"annotations": map[string]any{"kcp.io/cluster": "ws-id"}}}
		default:
			w.WriteHeader(http.StatusNotFound)
			obj = map[string]any{"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
		}
		_ = json.NewEncoder(w).Encode(obj)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestKCPEventSinkMapsAsTheSyncerAndReadsTheControlPlaneOnce(t *testing.T) {
	srv, requests := fakeKCP(t)
	cfg := &rest.Config{Host: srv.URL}
	clusters, err := server.NewKCPClients(cfg, 0)
	require.NoError(t, err)
	sink, err := newKCPEventSink(cfg, clusters)
	require.NoError(t, err)
	ctx := context.Background()
	target := tunnel.Target{Cluster: "root:loc", Name: "st"}

	want, err := nsname.DownstreamName(nsname.Locator{
		SyncTarget: nsname.SyncTarget{Cluster: "loc-id", Name: "st", UID: "st-uid"}, Cluster: "ws-id", Namespace: "placed"})
	require.NoError(t, err)
	for range 3 {
		got, err := sink.WorkspaceNamespace(ctx, target, "root:ws", "placed")
		require.NoError(t, err)
		assert.Equal(t, want, got, "the SyncTarget's and the namespace's own logical clusters make the locator, not the paths")
	}
	assert.Equal(t, 2, requests(), "one read of the SyncTarget and one of the namespace for three requests")

	_, err = sink.WorkspaceNamespace(ctx, target, "root:ws", "other")
	require.ErrorContains(t, err, "not placed")
	placed, err := sink.Placed(ctx, target, "root:ws", "placed")
	require.NoError(t, err)
	assert.True(t, placed)
	placed, err = sink.Placed(ctx, target, "root:ws", "other")
	require.NoError(t, err)
	assert.False(t, placed)
	assert.Equal(t, 5, requests(), "the SyncTarget is read once for all of them")

	_, err = sink.WorkspaceNamespace(ctx, tunnel.Target{Cluster: "root:loc", Name: "gone"}, "root:ws", "placed")
	require.ErrorContains(t, err, "read SyncTarget")
}
