package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// podLogLines are what the stub kubelet serves for every container it knows.
func podLogLines(n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("log line %02d", i)
	}
	return lines
}

// upstreamUserToken creates ServiceAccount name in namespace saNS upstream, lets it
// get pods/log in each of logNamespaces (none: no rights at all) and returns a
// token of it: a control plane user.
func upstreamUserToken(t *testing.T, env *framework.Environment, saNS, name string, logNamespaces ...string) string {
	t.Helper()
	ctx := context.Background()
	kube := env.KCP.Kube(t)
	_, err := kube.CoreV1().ServiceAccounts(saNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, ns := range logNamespaces {
		_, err := kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: saNS}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	tok, err := kube.CoreV1().ServiceAccounts(saNS).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tok.Status.Token
}

// tunnelServerProcess is `syncer tunnel-server` serving HTTPS with a certificate of
// the KCP cluster's CA.
type tunnelServerProcess struct {
	*framework.SyncerProcess
	url    string
	caFile string
	// internal is the plain-HTTP base URL of /status.json and /metrics.
	internal string
}

func startTunnelServerBinary(t *testing.T, env *framework.Environment) *tunnelServerProcess {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := env.KCP.IssueServingCert(dir, "tunnel-server")
	require.NoError(t, err)
	addr, internal := freeAddr(t), freeAddr(t)
	p := startSyncerBinary(t, "tunnel-server", "--bind-address="+addr, "--internal-bind-address="+internal, "--kubeconfig="+env.KCP.Kubeconfig,
		"--tls-cert-file="+cert, "--tls-private-key-file="+key)
	ts := &tunnelServerProcess{SyncerProcess: p, url: "https://" + addr, caFile: env.KCP.CAFile(), internal: "http://" + internal}
	hc := ts.httpClient(t)
	require.Eventually(t, func() bool {
		resp, err := hc.Get(ts.url + "/readyz") //nolint:noctx // readiness poll
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "tunnel-server becomes ready; output:\n%s", p.Output)
	return ts
}

// httpClient trusts the tunnel server's CA and nothing else.
func (ts *tunnelServerProcess) httpClient(t *testing.T) *http.Client {
	t.Helper()
	return framework.HTTPClientTrusting(t, ts.caFile)
}

// TestPodLogsThroughTheTunnel reads the logs of a synced Pod the way a control
// plane user does: from the tunnel server's HTTPS endpoint, with the user's own
// upstream token. The tunnel server authorises the user with a SubjectAccessReview
// upstream, maps the namespace and sends the request through the syncer's tunnel;
// the syncer asks the physical cluster's kube-apiserver, which really proxies
// pods/log to the Pod's Node: a stub kubelet on loopback.
func TestPodLogsThroughTheTunnel(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	const stName = "podlogs"
	const lines = 8
	const interval = 150 * time.Millisecond
	st := createSyncTarget(t, env, stName)
	target := identity.NewTarget("root", stName, st.GetUID())
	node := "stub-node-" + strings.ToLower(string(st.GetUID())[:8])
	kubelet := env.Physical.StartStubKubelet(t, node, func(_, _, container string) ([]string, bool) {
		return podLogLines(lines), container == "app"
	}, interval)

	ts := startTunnelServerBinary(t, env)
	p := startSyncerBinary(t,
		"--from-kubeconfig="+syncerIdentity(t, env, stName), "--to-kubeconfig="+env.Physical.Kubeconfig,
		"--sync-target-name="+stName, "--sync-target-uid="+string(st.GetUID()),
		"--resources=pods", "--health-bind-address=", "--metrics-bind-address=",
		"--tunnel-url="+ts.url, "--tunnel-ca-file="+ts.caFile)

	ns := env.KCP.CreateNamespace(t, "podlogs")
	other := env.KCP.CreateNamespace(t, "podlogs-unsynced")
	users := env.KCP.CreateNamespace(t, "podlogs-users")
	reader := upstreamUserToken(t, env, users, "log-reader", ns, other)
	stranger := upstreamUserToken(t, env, users, "stranger")
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: stName, UID: string(st.GetUID())},
		Cluster:    "root", Namespace: ns,
	})
	require.NoError(t, err)

	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{
				NodeName:                     node,
				AutomountServiceAccountToken: ptr.To(false),
				Containers:                   []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
			},
		}
	}
	_, err = env.KCP.Kube(t).CoreV1().Pods(ns).Create(ctx, pod("web", map[string]string{target.StateLabel(): "Sync"}), metav1.CreateOptions{})
	require.NoError(t, err)
	// An upstream Pod that is not for this SyncTarget: its namespace is never synced.
	_, err = env.KCP.Kube(t).CoreV1().Pods(other).Create(ctx, pod("web", nil), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := env.Physical.Kube(t).CoreV1().Pods(downNS).Get(ctx, "web", metav1.GetOptions{})
		return err == nil
	}, 60*time.Second, 100*time.Millisecond, "the Pod is synced to the physical cluster; output:\n%s", p.Output)
	require.Eventually(t, func() bool {
		return ts.srvConnected(t, "root", stName)
	}, 60*time.Second, 100*time.Millisecond, "the syncer's tunnel is up; syncer output:\n%s\ntunnel-server output:\n%s", p.Output, ts.Output)
	// A Pod in the synced namespace that the syncer did not create.
	_, err = env.Physical.Kube(t).CoreV1().Pods(downNS).Create(ctx, pod("intruder", nil), metav1.CreateOptions{})
	require.NoError(t, err)

	hc := ts.httpClient(t)
	logURL := func(upNS, pod, query string) string {
		return ts.url + tunnel.Target{Cluster: "root", Name: stName}.ProxyPath() +
			"/api/v1/namespaces/" + upNS + "/pods/" + pod + "/log" + query
	}
	open := func(ctx context.Context, url, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		return resp
	}
	get := func(url, token string) (int, string) {
		t.Helper()
		resp := open(ctx, url, token)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}

	t.Run("a user allowed to get pods/log reads the logs", func(t *testing.T) {
		var code int
		var body string
		// The syncer learns that the namespace is managed from its informers, a moment after the Pod lands.
		require.Eventually(t, func() bool {
			code, body = get(logURL(ns, "web", "?container=app"), reader)
			return code == http.StatusOK
		}, 30*time.Second, 200*time.Millisecond, "logs through the tunnel")
		assert.Equal(t, strings.Join(podLogLines(lines), "\n")+"\n", body)
	})

	t.Run("follow=true streams the lines as the kubelet writes them", func(t *testing.T) {
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		resp := open(fctx, logURL(ns, "web", "?container=app&follow=true"), reader)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		sc := bufio.NewScanner(resp.Body)
		var got []string
		var first, last time.Time
		for len(got) < lines && sc.Scan() {
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
			got = append(got, sc.Text())
		}
		require.NoError(t, sc.Err())
		assert.Equal(t, podLogLines(lines), got)
		// The stream is still open (the container runs on), so every line must have
		// been flushed through kube-apiserver, the tunnel and the tunnel server as it
		// came; the kubelet spaced them, and so did their arrival.
		assert.GreaterOrEqual(t, last.Sub(first), time.Duration(lines-1)*interval/2, "lines arrive spread out, as written")
	})

	t.Run("a user without pods/log rights gets 403", func(t *testing.T) {
		code, body := get(logURL(ns, "web", ""), stranger)
		assert.Equal(t, http.StatusForbidden, code, body)
	})

	t.Run("an invalid token gets 401", func(t *testing.T) {
		code, body := get(logURL(ns, "web", ""), "not-a-token")
		assert.Equal(t, http.StatusUnauthorized, code, body)
	})

	t.Run("a pod in a namespace the syncer does not manage is refused", func(t *testing.T) {
		code, body := get(logURL(other, "web", ""), reader)
		assert.Equal(t, http.StatusForbidden, code, body)
		assert.Contains(t, body, "not managed by this syncer")
	})

	t.Run("a pod the syncer did not sync is refused", func(t *testing.T) {
		code, body := get(logURL(ns, "intruder", ""), reader)
		assert.Equal(t, http.StatusForbidden, code, body)
		assert.Contains(t, body, "was not synced by this syncer")
	})

	requests := kubelet.Requests()
	require.NotEmpty(t, requests, "kube-apiserver proxied pods/log to the stub kubelet")
	assert.Contains(t, strings.Join(requests, " "), "follow=true")
	for _, r := range requests {
		assert.True(t, strings.HasPrefix(r, "/containerLogs/"+downNS+"/web/app"), "only the synced pod's logs reach the kubelet: %s", r)
	}
	if os.Getenv("TMC_TEST_VERBOSE") != "" {
		t.Logf("syncer output:\n%s\ntunnel-server output:\n%s", p.Output, ts.Output)
	}
}

// srvConnected asks the tunnel server's /status.json whether the SyncTarget's
// tunnel is up.
func (ts *tunnelServerProcess) srvConnected(t *testing.T, cluster, name string) bool {
	t.Helper()
	// /status.json is served on the internal listener only.
	resp, err := http.Get(ts.internal + "/status.json") //nolint:noctx,gosec // status poll of a loopback address
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var page struct {
		Targets []struct {
			Cluster   string `json:"cluster"`
			Name      string `json:"name"`
			Connected bool   `json:"connected"`
		} `json:"targets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return false
	}
	for _, row := range page.Targets {
		if row.Name == name && (row.Cluster == cluster || row.Cluster == "") {
			return row.Connected
		}
	}
	return false
}
