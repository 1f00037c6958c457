package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

const leaseNS = "tunnel-system"

// leaseAPI is a fake control plane whose Lease updates and deletes check the
// resourceVersion, as kube-apiserver does (the fake tracker does not).
func leaseAPI() *fake.Clientset {
	kube := fake.NewClientset()
	var rv atomic.Int64
	tracker := kube.Tracker()
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	kube.PrependReactor("*", "leases", func(action k8stesting.Action) (bool, runtime.Object, error) {
		switch action.GetVerb() {
		case "update":
			l := action.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
			cur, err := tracker.Get(gvr, l.Namespace, l.Name)
			if err != nil {
				return true, nil, err
			}
			if cur.(*coordinationv1.Lease).ResourceVersion != l.ResourceVersion {
				return true, nil, apierrors.NewConflict(gvr.GroupResource(), l.Name, errors.New("resourceVersion changed"))
			}
			l.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		case "create":
			l := action.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease)
			l.ResourceVersion = strconv.FormatInt(rv.Add(1), 10)
		case "delete":
			a := action.(k8stesting.DeleteAction)
			pre := a.GetDeleteOptions().Preconditions
			cur, err := tracker.Get(gvr, a.GetNamespace(), a.GetName())
			if err == nil && pre != nil && pre.ResourceVersion != nil && *pre.ResourceVersion != cur.(*coordinationv1.Lease).ResourceVersion {
				return true, nil, apierrors.NewConflict(gvr.GroupResource(), a.GetName(), errors.New("resourceVersion changed"))
			}
		}
		return false, nil, nil
	})
	return kube
}

// replica is one tunnel server replica: public port (the users' and syncers' TLS) and
// peer port (mutual TLS with the replica CA).
type replica struct {
	*tunneltest.Server
	replicas *server.Replicas
	peer     string
}

// startReplica starts a replica whose Leases live in kube; replicaPKI is the replica
// CA, users is the public PKI.
func startReplica(t *testing.T, kube kubernetes.Interface, users, replicaPKI *tunneltest.PKI, serial int64) *replica {
	t.Helper()
	peerLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	peer := server.NewPeerTLS(replicaPKI.ReplicaCert(t, serial, server.DefaultPeerServerName), replicaPKI.Pool, "")
	reps, err := server.NewReplicas(server.ReplicaOptions{
		Client: kube, Namespace: leaseNS, Self: peerLn.Addr().String(), LeaseDuration: 3 * time.Second, Peer: peer,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = reps.Run(ctx) }()
	srv := tunneltest.NewServer(t, users, tunneltest.EchoServer(t), func(o *server.Options) { o.Replicas = reps })
	peerDone := make(chan struct{})
	go func() { defer close(peerDone); _ = srv.Server().ServePeer(ctx, peerLn) }()
	t.Cleanup(func() { srv.Stop(); cancel(); <-done; <-peerDone })
	tunneltest.Eventually(t, 5*time.Second, "lease informer synced", reps.HasSynced)
	return &replica{Server: srv, replicas: reps, peer: peerLn.Addr().String()}
}

// dialReplica opens a raw tunnel WebSocket (no reconnects) to r over TLS.
func dialReplica(ctx context.Context, t *testing.T, users *tunneltest.PKI, r *replica, token string) (*websocket.Conn, int) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: users.ClientTLS()}}
	ws, resp, err := websocket.Dial(ctx, r.URL+tunneltest.Target.Path(), &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{tunnel.Subprotocol},
	})
	code := 0
	if resp != nil {
		code = resp.StatusCode
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
	}
	if err != nil {
		return nil, code
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws, code
}

func userGet(t *testing.T, pki *tunneltest.PKI, url, token string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := tunneltest.BearerRequest(ctx, t, http.MethodGet, url, token)
	for k, v := range header {
		req.Header[k] = v
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS()}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func logPath(ns string) string {
	return tunneltest.Target.ProxyPath() + "/api/v1/namespaces/" + ns + "/pods/web/log"
}

// TestUserRequestsOnAnyReplicaReachTheSessionHolder: a syncer holds its session on
// replica A; users asking replica B get the same answers as on A (B authorises them,
// then forwards over mutual TLS), and the syncer sees neither their credentials nor the
// forwarded identity.
func TestUserRequestsOnAnyReplicaReachTheSessionHolder(t *testing.T) {
	kube := leaseAPI()
	users, replicaCA := tunneltest.NewPKI(t), tunneltest.NewPKI(t)
	a, b := startReplica(t, kube, users, replicaCA, 10), startReplica(t, kube, users, replicaCA, 11)
	seen := make(chan http.Header, 16)
	c, err := client.New(client.Options{
		ServerURL: a.URL, Target: tunneltest.Target, Token: client.StaticToken(tunneltest.SyncerToken), TLSConfig: users.ClientTLS(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Clone()
			_, _ = io.WriteString(w, "logs of "+r.URL.Path)
		}),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	tunneltest.Eventually(t, 10*time.Second, "replica B sees A holding the session", func() bool {
		return b.replicas.Holder(tunneltest.Target) == a.peer
	})
	lease, err := kube.CoordinationV1().Leases(leaseNS).Get(context.Background(), server.LeaseName(tunneltest.Target), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, a.peer, ptr.Deref(lease.Spec.HolderIdentity, ""))
	assert.Equal(t, tunneltest.SyncerUser, lease.Annotations[server.LeaseUserAnnotation])

	for name, r := range map[string]*replica{"holder": a, "other replica": b} {
		code, body := userGet(t, users, r.URL+logPath("team-a"), tunneltest.UserToken, nil)
		assert.Equal(t, http.StatusOK, code, "%s: %s", name, body)
		assert.Equal(t, "logs of /api/v1/namespaces/kcp-team-a/pods/web/log", body, name)
		h := <-seen
		assert.Empty(t, h.Get("Authorization"), "%s: the user's token never reaches the syncer", name)
		assert.Empty(t, h.Get(server.ForwardedUserHeader), "%s: nor the forwarded identity", name)
	}
	// B authorises before it forwards: refused there, never reaching A's syncer.
	code, body := userGet(t, users, b.URL+logPath("team-a"), tunneltest.OtherToken, nil)
	assert.Equal(t, http.StatusForbidden, code, body)
	code, body = userGet(t, users, b.URL+logPath("team-a"), "", nil)
	assert.Equal(t, http.StatusUnauthorized, code, body)
	select {
	case h := <-seen:
		t.Fatalf("a refused request reached the syncer: %v", h)
	default:
	}
	// /status of either replica lists the session, naming the holder.
	for _, r := range []*replica{a, b} {
		list := r.replicas.Sessions(r.Registry()).List()
		require.Len(t, list, 1)
		assert.Equal(t, a.peer, list[0].Replica)
		assert.True(t, r.replicas.Sessions(r.Registry()).Connected(tunneltest.Target))
	}
}

// TestForgedForwardedRequestsAreRefused: only a replica (a client certificate of the
// replica CA for the replica name, on the peer port) may say whom it forwards for.
func TestForgedForwardedRequestsAreRefused(t *testing.T) {
	kube := leaseAPI()
	users, replicaCA, otherCA := tunneltest.NewPKI(t), tunneltest.NewPKI(t), tunneltest.NewPKI(t)
	a := startReplica(t, kube, users, replicaCA, 10)
	ws, code := dialReplica(context.Background(), t, users, a, tunneltest.SyncerToken)
	require.NotNil(t, ws, "tunnel refused: %d", code)
	tunneltest.Eventually(t, 5*time.Second, "session held", func() bool { return a.Registry().Connected(tunneltest.Target) })
	forged := http.Header{server.ForwardedUserHeader: {"eyJuYW1lIjoiYWxpY2UifQ"}} // {"name":"alice"}

	t.Run("on the public port, without a token", func(t *testing.T) {
		code, body := userGet(t, users, a.URL+logPath("team-a"), "", forged)
		assert.Equal(t, http.StatusUnauthorized, code, body)
	})
	t.Run("on the public port, with a token of a user without rights", func(t *testing.T) {
		code, body := userGet(t, users, a.URL+logPath("team-a"), tunneltest.OtherToken, forged)
		assert.Equal(t, http.StatusForbidden, code, body)
	})
	peerGet := func(t *testing.T, certs []tls.Certificate, header http.Header) (int, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := tunneltest.BearerRequest(ctx, t, http.MethodGet, "https://"+a.peer+logPath("team-a"), tunneltest.UserToken)
		for k, v := range header {
			req.Header[k] = v
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: replicaCA.Pool, ServerName: server.DefaultPeerServerName, Certificates: certs, MinVersion: tls.VersionTLS13,
		}}
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	t.Run("on the peer port, without a client certificate", func(t *testing.T) {
		code, err := peerGet(t, nil, forged)
		assert.True(t, err != nil || code == http.StatusForbidden, "code %d", code)
		assert.NotEqual(t, http.StatusOK, code)
	})
	t.Run("on the peer port, with a certificate of another CA", func(t *testing.T) {
		code, err := peerGet(t, []tls.Certificate{otherCA.ReplicaCert(t, 20, server.DefaultPeerServerName)}, forged)
		assert.True(t, err != nil || code == http.StatusForbidden, "code %d", code)
		assert.NotEqual(t, http.StatusOK, code)
	})
	t.Run("on the peer port, with a user's client certificate", func(t *testing.T) {
		code, err := peerGet(t, []tls.Certificate{users.Client}, forged)
		assert.True(t, err != nil || code == http.StatusForbidden, "code %d", code)
		assert.NotEqual(t, http.StatusOK, code)
	})
	t.Run("on the peer port, with a replica CA certificate for another name", func(t *testing.T) {
		code, err := peerGet(t, []tls.Certificate{replicaCA.ReplicaCert(t, 21, "not-a-replica")}, forged)
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code)
	})
	t.Run("on the peer port, from a replica, without a forwarded identity", func(t *testing.T) {
		code, err := peerGet(t, []tls.Certificate{replicaCA.ReplicaCert(t, 22, server.DefaultPeerServerName)}, nil)
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code)
	})
	t.Run("tunnels are not accepted on the peer port", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := tunneltest.BearerRequest(ctx, t, http.MethodGet, "https://"+a.peer+tunneltest.Target.Path(), tunneltest.SyncerToken)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: replicaCA.Pool, ServerName: server.DefaultPeerServerName,
			Certificates: []tls.Certificate{replicaCA.ReplicaCert(t, 23, server.DefaultPeerServerName)}, MinVersion: tls.VersionTLS13}}
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	})
}

// TestASyncerMovingToAnotherReplicaMovesTheLease: the syncer reconnects through the
// front to replica B while A still thinks it holds the session (A died, or its
// connection is half open): B takes the live Lease of the same identity, A closes its
// session at its next renewal; another identity is refused while B holds it; the Lease
// is deleted when the session ends.
func TestASyncerMovingToAnotherReplicaMovesTheLease(t *testing.T) {
	kube := leaseAPI()
	users, replicaCA := tunneltest.NewPKI(t), tunneltest.NewPKI(t)
	a, b := startReplica(t, kube, users, replicaCA, 10), startReplica(t, kube, users, replicaCA, 11)
	ctx := context.Background()
	holder := func() string {
		l, err := kube.CoordinationV1().Leases(leaseNS).Get(ctx, server.LeaseName(tunneltest.Target), metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return ptr.Deref(l.Spec.HolderIdentity, "")
	}
	onA, code := dialReplica(ctx, t, users, a, tunneltest.SyncerToken)
	require.NotNil(t, onA, "tunnel refused: %d", code)
	tunneltest.Eventually(t, 5*time.Second, "A holds the session", func() bool { return a.Registry().Connected(tunneltest.Target) })
	assert.Equal(t, a.peer, holder())
	sessOnA := a.Registry().Get(tunneltest.Target)

	onB, code := dialReplica(ctx, t, users, b, tunneltest.SyncerToken)
	require.NotNil(t, onB, "the same identity on another replica is accepted: %d", code)
	assert.Equal(t, b.peer, holder(), "the Lease names the new holder at once")
	select {
	case <-sessOnA.Done():
	case <-time.After(20 * time.Second): // renewals come every second; the bound is for a loaded machine
		t.Fatal("A did not close its stale session at its renewal")
	}
	assert.Equal(t, tunnel.ReasonReplaced, sessOnA.Reason())
	tunneltest.Eventually(t, 5*time.Second, "A forgets the session", func() bool { return !a.Registry().Connected(tunneltest.Target) })
	time.Sleep(1500 * time.Millisecond) // one more renewal round of A: it must not take the Lease back
	assert.Equal(t, b.peer, holder())

	intruder, code := dialReplica(ctx, t, users, a, tunneltest.IntruderToken)
	assert.Nil(t, intruder, "another identity may not take over a live session held on another replica")
	assert.Equal(t, http.StatusConflict, code)
	assert.Equal(t, b.peer, holder())

	_ = onB.CloseNow()
	tunneltest.Eventually(t, 10*time.Second, "the Lease is released when the session ends", func() bool {
		_, err := kube.CoordinationV1().Leases(leaseNS).Get(ctx, server.LeaseName(tunneltest.Target), metav1.GetOptions{})
		return err != nil && strings.Contains(err.Error(), "not found")
	})
}
