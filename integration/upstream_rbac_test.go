package integration

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// applyUpstreamRBAC runs `syncer upstream-rbac` and creates what it prints in the control
// plane; it returns the ClusterRole's name.
func applyUpstreamRBAC(t *testing.T, env *framework.Environment, args ...string) string {
	t.Helper()
	out, err := exec.Command(syncerBinary(t), append([]string{"upstream-rbac"}, args...)...).Output()
	require.NoError(t, err, "syncer upstream-rbac")
	dyn := env.KCP.Dynamic(t)
	clusterRole := ""
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		require.NoError(t, yaml.Unmarshal(doc, &u.Object))
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		require.NoError(t, err)
		if u.GetKind() == "ClusterRole" {
			clusterRole = u.GetName()
		}
		res := gv.WithResource(strings.ToLower(u.GetKind()) + "s")
		_, err = dyn.Resource(res).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
		require.NoError(t, err, "apply %s %s", u.GetKind(), u.GetName())
		t.Cleanup(func() {
			_ = dyn.Resource(res).Namespace(u.GetNamespace()).Delete(context.Background(), u.GetName(), metav1.DeleteOptions{})
		})
	}
	require.NotEmpty(t, clusterRole, "upstream-rbac prints a ClusterRole")
	return clusterRole
}

// TestSyncerACannotActAsSyncTargetB gives two syncers exactly the upstream RBAC `syncer
// upstream-rbac` prints for their SyncTargets (and nothing else) and checks with A's
// real credentials against the control plane and a tunnel server reviewing there: A
// requests a tunnel token for itself but not for B's ServiceAccount, opens its own
// tunnel but not B's (403), heartbeats its own SyncTarget but not B's (403).
func TestSyncerACannotActAsSyncTargetB(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	suffix := rand.String(5)
	nameA, nameB := "rbac-a-"+suffix, "rbac-b-"+suffix
	stA := createSyncTarget(t, env, nameA)
	createSyncTarget(t, env, nameB)
	ns := "syncers-" + suffix

	// Each syncer's ServiceAccount, bound to its own generated ClusterRole only.
	kubeconfigs := map[string]string{}
	for _, name := range []string{nameA, nameB} {
		path, err := framework.ServiceAccountKubeconfig(ctx, env.KCP, ns, name, "tmc-syncer:synctarget:"+name, t.TempDir())
		require.NoError(t, err)
		kubeconfigs[name] = path
		applyUpstreamRBAC(t, env, "--sync-target-name="+name, "--namespace="+ns, "--service-account="+name)
	}
	cfgA, err := clientcmd.BuildConfigFromFlags("", kubeconfigs[nameA])
	require.NoError(t, err)
	kubeA, err := kubernetes.NewForConfig(cfgA)
	require.NoError(t, err)
	dynA, err := dynamic.NewForConfig(cfgA)
	require.NoError(t, err)

	// Tunnel tokens: for itself only.
	expiry := int64(600)
	tokenReq := func(sa string) (*authnv1.TokenRequest, error) {
		return kubeA.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			Audiences: []string{client.DefaultTunnelAudience}, ExpirationSeconds: &expiry,
		}}, metav1.CreateOptions{})
	}
	var tokA *authnv1.TokenRequest
	require.Eventually(t, func() bool { // RBAC just created: the authorizer's cache catches up
		tokA, err = tokenReq(nameA)
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "A may request a tunnel token for its own ServiceAccount: %v", err)
	_, err = tokenReq(nameB)
	assert.True(t, apierrors.IsForbidden(err), "A may not request a token for B's ServiceAccount: %v", err)

	// Tunnels: A's own, not B's.
	upstream, err := url.Parse(env.KCP.Config.Host)
	require.NoError(t, err)
	clients := server.SingleCluster(env.KCP.Kube(t))
	srv, err := server.New(server.Options{
		UpstreamAddress:     upstream.Host,
		Authenticator:       server.NewTokenReviewAuthenticator(clients),
		SyncerAuthenticator: server.NewTokenReviewAuthenticator(clients, client.DefaultTunnelAudience),
		Authorizer:          server.NewSubjectAccessReviewAuthorizer(clients),
		Insecure:            true,
	})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		<-done
	})
	handshake := func(target string) int {
		hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
		defer hcancel()
		ws, resp, err := websocket.Dial(hctx, "ws://"+ln.Addr().String()+tunnel.Target{Cluster: "root", Name: target}.Path(), &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tokA.Status.Token}}, Subprotocols: []string{tunnel.Subprotocol},
		})
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err == nil {
			_ = ws.Close(websocket.StatusNormalClosure, "test done")
			return http.StatusSwitchingProtocols
		}
		require.NotNil(t, resp, "handshake with %s: %v", target, err)
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusSwitchingProtocols, handshake(nameA), "A opens its own tunnel")
	assert.Equal(t, http.StatusForbidden, handshake(nameB), "A cannot open B's tunnel")

	// Heartbeats: A's own SyncTarget, not B's.
	patch := []byte(`{"status":{"lastSyncerHeartbeatTime":"` + time.Now().UTC().Format(time.RFC3339) + `"}}`)
	sts := dynA.Resource(workloadv1alpha1.SyncTargetsResource)
	_, err = sts.Patch(ctx, nameA, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	require.NoError(t, err, "A heartbeats its own SyncTarget")
	_, err = sts.Patch(ctx, nameB, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	assert.True(t, apierrors.IsForbidden(err), "A cannot heartbeat B: %v", err)
	_, err = sts.Get(ctx, nameB, metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "A cannot even read B: %v", err)
	got, err := sts.Get(ctx, nameA, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, stA.GetUID(), got.GetUID())
}
