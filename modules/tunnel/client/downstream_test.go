package client_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
)

func TestNewDownstreamHandlerValidates(t *testing.T) {
	_, err := client.NewDownstreamHandler(&rest.Config{Host: "https://127.0.0.1:6443"}, nil, logr.Discard())
	require.Error(t, err)
	_, err = client.NewDownstreamHandler(&rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAFile: "/does/not/exist"}},
		func(string) bool { return true }, logr.Discard())
	require.Error(t, err)
}

func TestDownstreamHandlerRefusesWithoutReachingTheAPI(t *testing.T) {
	var reached atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Store(true) }))
	defer api.Close()
	h, err := client.NewDownstreamHandler(&rest.Config{Host: api.URL}, func(ns string) bool { return ns == "mine" }, logr.Discard())
	require.NoError(t, err)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/api/v1/namespaces/other/pods/p/log", http.StatusForbidden},
		{http.MethodDelete, "/api/v1/namespaces/mine/pods/p", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v1/namespaces/mine/pods/p/proxy", http.StatusNotFound},
		{http.MethodGet, "/healthz", http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), tc.method, tc.path, nil))
		assert.Equal(t, tc.want, rec.Code, tc.path)
	}
	assert.False(t, reached.Load())

	// A broken downstream gives 502.
	api.Close()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/api/v1/namespaces/mine/pods/p", nil))
	assert.Equal(t, http.StatusBadGateway, rec.Code)
}

func TestClientWithoutHandlerRefusesControlPlaneRequests(t *testing.T) {
	srv := tunneltest.NewServer(t, nil, tunneltest.EchoServer(t), nil)
	c, _ := startClient(t, client.Options{ServerURL: srv.URL})
	waitConnected(t, c)
	tunneltest.Eventually(t, 5*time.Second, "registered", func() bool { return srv.Registry().Connected(tunneltest.Target) })
	req := tunneltest.BearerRequest(context.Background(), t, http.MethodGet, srv.URL+tunneltest.Target.ProxyPath()+"/api/v1/namespaces/team/pods/web", tunneltest.UserToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, string(body))
}

func TestDownstreamHandlerServesOnlyObjectsWithTheSyncerLabels(t *testing.T) {
	objects := map[string]string{
		"/api/v1/namespaces/mine/pods/ours":   `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"ours","namespace":"mine","labels":{"owner":"me"}}}`,
		"/api/v1/namespaces/mine/pods/theirs": `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"theirs","namespace":"mine","labels":{"owner":"you"}}}`,
		// A pod of a synced Deployment: Pod → ReplicaSet → Deployment (which carries the labels).
		"/api/v1/namespaces/mine/pods/web-1": `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web-1","namespace":"mine",` +
			`"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-rs","uid":"rs-uid","controller":true}]}}`,
		"/apis/apps/v1/namespaces/mine/replicasets/web-rs": `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web-rs","namespace":"mine","uid":"rs-uid",` +
			`"ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"dep-uid","controller":true}]}}`,
		"/apis/apps/v1/namespaces/mine/deployments/web": `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"web","namespace":"mine","uid":"dep-uid","labels":{"owner":"me"}}}`,
		// A pod whose owner reference names a ReplicaSet that has another UID now.
		"/api/v1/namespaces/mine/pods/stale-1": `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"stale-1","namespace":"mine",` +
			`"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-rs","uid":"old-uid","controller":true}]}}`,
	}
	var logsRead atomic.Int32
	var listSelector atomic.Value
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body, ok := objects[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, body)
			return
		}
		if r.URL.Path == "/api/v1/namespaces/mine/pods" {
			listSelector.Store(r.URL.Query().Get("labelSelector"))
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","items":[]}`)
			return
		}
		if r.URL.Path == "/api/v1/namespaces/mine/pods/ours/log" || r.URL.Path == "/api/v1/namespaces/mine/pods/web-1/log" {
			logsRead.Add(1)
			_, _ = io.WriteString(w, "hello\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
	}))
	defer api.Close()
	h, err := client.NewDownstreamHandler(&rest.Config{Host: api.URL}, func(ns string) bool { return ns == "mine" }, logr.Discard(),
		client.RequireLabels(map[string]string{"owner": "me"}))
	require.NoError(t, err)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/api/v1/namespaces/mine/pods/ours/log", http.StatusOK},
		{"/api/v1/namespaces/mine/pods/theirs/log", http.StatusForbidden},
		{"/api/v1/namespaces/mine/pods/gone/log", http.StatusNotFound},
		{"/api/v1/namespaces/mine/pods/web-1/log", http.StatusOK},
		{"/api/v1/namespaces/mine/pods/stale-1/log", http.StatusForbidden},
		{"/api/v1/namespaces/mine/pods?labelSelector=app%3Dweb", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, tc.path, nil))
		assert.Equal(t, tc.want, rec.Code, "%s: %s", tc.path, rec.Body.String())
	}
	assert.Equal(t, int32(2), logsRead.Load(), "only the logs of the syncer's pods (synced, or created by what it synced) are read")
	assert.Equal(t, "app=web,owner=me", listSelector.Load(), "a list sees only the syncer's objects")
}
