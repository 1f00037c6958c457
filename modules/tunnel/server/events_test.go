package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// fakeSink places namespaces "team*" of cluster "ws-a" on tunneltest.Target, and counts
// the placement questions.
type fakeSink struct {
	mu      sync.Mutex
	clients map[string]*fake.Clientset
	asked   int
}

func (f *fakeSink) Placed(_ context.Context, t tunnel.Target, cluster, namespace string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	return t == tunneltest.Target && cluster == "ws-a" && strings.HasPrefix(namespace, "team"), nil
}

func (f *fakeSink) Client(cluster string) (kubernetes.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clients == nil {
		f.clients = map[string]*fake.Clientset{}
	}
	c, ok := f.clients[cluster]
	if !ok {
		c = fake.NewClientset()
		f.clients[cluster] = c
	}
	return c, nil
}

func relayPath(cluster, ns, name string) string {
	p := tunneltest.Target.EventsPath() + "/clusters/" + cluster + "/api/v1/namespaces/" + ns + "/events"
	if name != "" {
		p += "/" + name
	}
	return p
}

func relayRequest(method, path, token, contentType, body string) *http.Request {
	r := httptest.NewRequestWithContext(context.Background(), method, "http://tunnel.test/", strings.NewReader(body))
	r.URL = &url.URL{Path: path}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

func syncerEvent(ns, name string, mutate func(*corev1.Event)) string {
	ev := corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Annotations: map[string]string{"syncer.tmc.dev/downstream-event": "uid-1", "other.io/x": "y"}},
		InvolvedObject: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "web"},
		Reason:         "ScalingReplicaSet", Message: "scaled up", Type: corev1.EventTypeNormal, Count: 1,
		Source:              corev1.EventSource{Component: "tmc-syncer/cluster-1"},
		ReportingController: "tmc-syncer/cluster-1", ReportingInstance: "tmc-syncer-cluster-1",
	}
	if mutate != nil {
		mutate(&ev)
	}
	b, _ := json.Marshal(ev)
	return string(b)
}

func TestEventRelayWritesOnlyTheSyncersOwnEventsInPlacedNamespaces(t *testing.T) {
	sink := &fakeSink{}
	h := newHostileServer(t, func(o *server.Options) { o.Events = sink })
	created := h.serve(relayRequest(http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/json", syncerEvent("team-a", "web.1", nil)))
	require.Equal(t, http.StatusCreated, created.Code, created.Body.String())

	kube, _ := sink.Client("ws-a")
	ev, err := kube.CoreV1().Events("team-a").Get(context.Background(), "web.1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "tmc-syncer/cluster-1", ev.ReportingController)
	assert.Equal(t, map[string]string{"syncer.tmc.dev/downstream-event": "uid-1"}, ev.Annotations, "only the relay's annotations pass")

	// A foreign Event in the same namespace can be neither read nor patched.
	_, err = kube.CoreV1().Events("team-a").Create(context.Background(), &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "foreign", Namespace: "team-a"}, ReportingController: "kubelet"}, metav1.CreateOptions{})
	require.NoError(t, err)

	tests := []struct {
		name        string
		method      string
		path        string
		token       string
		contentType string
		body        string
		want        int
		wantText    string
	}{
		{"repeat patch", http.MethodPatch, relayPath("ws-a", "team-a", "web.1"), tunneltest.SyncerToken, "application/merge-patch+json", `{"count":2,"message":"again"}`, http.StatusOK, `"count":2`},
		{"read own", http.MethodGet, relayPath("ws-a", "team-a", "web.1"), tunneltest.SyncerToken, "", "", http.StatusOK, `"name":"web.1"`},
		{"read foreign", http.MethodGet, relayPath("ws-a", "team-a", "foreign"), tunneltest.SyncerToken, "", "", http.StatusNotFound, "not found"},
		{"patch foreign", http.MethodPatch, relayPath("ws-a", "team-a", "foreign"), tunneltest.SyncerToken, "application/merge-patch+json", `{"count":2}`, http.StatusNotFound, "not found"},
		{"patch other field", http.MethodPatch, relayPath("ws-a", "team-a", "web.1"), tunneltest.SyncerToken, "application/merge-patch+json", `{"involvedObject":{"name":"x"}}`, http.StatusBadRequest, "count, lastTimestamp and message only"},
		{"json patch", http.MethodPatch, relayPath("ws-a", "team-a", "web.1"), tunneltest.SyncerToken, "application/json-patch+json", `[]`, http.StatusBadRequest, "merge patches"},
		{"namespace not placed", http.MethodPost, relayPath("ws-a", "kube-system", ""), tunneltest.SyncerToken, "application/json", syncerEvent("kube-system", "x.1", nil), http.StatusForbidden, "not placed"},
		{"workspace not placed", http.MethodPost, relayPath("ws-b", "team-a", ""), tunneltest.SyncerToken, "application/json", syncerEvent("team-a", "x.1", nil), http.StatusForbidden, "not placed"},
		{"object in another namespace", http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/json",
			syncerEvent("team-a", "x.1", func(e *corev1.Event) { e.InvolvedObject.Namespace = "team-b" }), http.StatusBadRequest, "not in team-a"},
		{"bad type", http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/json",
			syncerEvent("team-a", "x.1", func(e *corev1.Event) { e.Type = "Critical" }), http.StatusBadRequest, "neither Normal nor Warning"},
		{"protobuf", http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/vnd.kubernetes.protobuf", "k8s\x00", http.StatusUnsupportedMediaType, "reads application/json"},
		{"garbage body", http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/json", "{", http.StatusBadRequest, "decode Event"},
		{"no token", http.MethodPost, relayPath("ws-a", "team-a", ""), "", "application/json", syncerEvent("team-a", "x.1", nil), http.StatusUnauthorized, "bearer"},
		{"user without the tunnel right", http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.UserToken, "application/json", syncerEvent("team-a", "x.1", nil), http.StatusForbidden, "may not update"},
		{"delete", http.MethodDelete, relayPath("ws-a", "team-a", "web.1"), tunneltest.SyncerToken, "", "", http.StatusMethodNotAllowed, "create, get and merge-patch"},
		{"list", http.MethodGet, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "", "", http.StatusMethodNotAllowed, "create, get and merge-patch"},
		{"wildcard cluster", http.MethodPost, relayPath("*", "team-a", ""), tunneltest.SyncerToken, "application/json", syncerEvent("team-a", "x.1", nil), http.StatusNotFound, "not a logical cluster"},
		{"other resource", http.MethodPost, tunneltest.Target.EventsPath() + "/clusters/ws-a/api/v1/namespaces/team-a/secrets", tunneltest.SyncerToken, "application/json", "{}", http.StatusNotFound, "is not /clusters"},
		{"dot segments", http.MethodPost, tunneltest.Target.EventsPath() + "/clusters/ws-a/api/v1/namespaces/team-a/../kube-system/events", tunneltest.SyncerToken, "application/json", "{}", http.StatusNotFound, "not clean"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.serve(relayRequest(tc.method, tc.path, tc.token, tc.contentType, tc.body))
			assert.Equal(t, tc.want, rec.Code, rec.Body.String())
			assert.Contains(t, rec.Body.String(), tc.wantText)
		})
	}
	foreign, err := kube.CoreV1().Events("team-a").Get(context.Background(), "foreign", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Zero(t, foreign.Count, "the foreign Event is untouched")
	_, err = kube.CoreV1().Events("team-a").Get(context.Background(), "x.1", metav1.GetOptions{})
	assert.Error(t, err, "no refused Event was written")
}

func TestEventRelayIsOffUnlessConfiguredAndRateLimitedPerTarget(t *testing.T) {
	off := newHostileServer(t, nil)
	rec := off.serve(relayRequest(http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/json", syncerEvent("team-a", "x.1", nil)))
	assert.Equal(t, http.StatusNotFound, rec.Code, rec.Body.String())

	sink := &fakeSink{}
	// A bucket that does not refill within the test: exactly the burst passes.
	h := newHostileServer(t, func(o *server.Options) { o.Events, o.EventQPS, o.EventBurst = sink, 0.001, 5 })
	codes := map[int]int{}
	for i := range 25 {
		rec := h.serve(relayRequest(http.MethodPost, relayPath("ws-a", "team-a", ""), tunneltest.SyncerToken, "application/json", syncerEvent("team-a", fmt.Sprintf("e.%d", i), nil)))
		codes[rec.Code]++
	}
	assert.Equal(t, map[int]int{http.StatusCreated: 5, http.StatusTooManyRequests: 20}, codes, "a syncer cannot flood workspaces with Events")
	assert.Equal(t, 1, sink.asked, "the placement answer is cached")
}
