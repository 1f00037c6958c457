package podapi

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

// The proxy forwards the pod's own token and nothing of the syncer's; headers that would
// let a pod act as someone else never reach the control plane.
func TestHandlerForwardsThePodsTokenOnly(t *testing.T) {
	type seen struct {
		auth, path, impersonate, remote, host string
	}
	got := make(chan seen, 1)
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{auth: r.Header.Get("Authorization"), path: r.URL.RequestURI(), impersonate: r.Header.Get("Impersonate-User"),
			remote: r.Header.Get("X-Remote-User"), host: r.Host}
		_, _ = io.WriteString(w, `{"kind":"ConfigMapList"}`)
	}))
	defer upstream.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw})
	syncerCfg := &rest.Config{Host: upstream.URL, BearerToken: "syncer-token", TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		Impersonate: rest.ImpersonationConfig{UserName: "admin"}}
	dialed := 0
	transport, err := NewTransport(syncerCfg, func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed++
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	})
	require.NoError(t, err)
	target, err := url.Parse(upstream.URL)
	require.NoError(t, err)
	proxy := httptest.NewServer(NewHandler(target, transport))
	defer proxy.Close()

	req, err := http.NewRequest(http.MethodGet, proxy.URL+"/api/v1/namespaces/default/configmaps?limit=5", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer pod-token")
	req.Header.Set("Impersonate-User", "system:admin")
	req.Header.Set("Impersonate-Group", "system:masters")
	req.Header.Set("X-Remote-User", "system:admin")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	s := <-got
	assert.Equal(t, "Bearer pod-token", s.auth, "the pod's own token")
	assert.Equal(t, "/api/v1/namespaces/default/configmaps?limit=5", s.path)
	assert.Empty(t, s.impersonate, "impersonation headers are stripped")
	assert.Empty(t, s.remote, "front-proxy headers are stripped")
	assert.Equal(t, target.Host, s.host)
	assert.Equal(t, 1, dialed, "through the given dialer")

	// No token: the request goes anonymous, never with the syncer's token.
	resp, err = http.Get(proxy.URL + "/version")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Empty(t, (<-got).auth)
}

func TestHandlerVerifiesTheControlPlane(t *testing.T) {
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("reached an unverified server") }))
	defer upstream.Close()
	other, err := NewCA("other", time.Now())
	require.NoError(t, err)
	transport, err := NewTransport(&rest.Config{Host: upstream.URL, TLSClientConfig: rest.TLSClientConfig{CAData: other.CertPEM()}}, (&net.Dialer{}).DialContext)
	require.NoError(t, err)
	target, _ := url.Parse(upstream.URL)
	rec := httptest.NewRecorder()
	NewHandler(target, transport).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api", nil))
	assert.Equal(t, http.StatusBadGateway, rec.Code)

	_, err = NewTransport(&rest.Config{Host: upstream.URL}, nil)
	assert.Error(t, err)
}

// The CA survives a restart through its Secret; serving certificates it issues verify for
// the names and addresses asked, and only for them.
func TestCAIsKeptInItsSecretAndIssuesServingCerts(t *testing.T) {
	ctx := context.Background()
	secrets := fake.NewClientset().CoreV1().Secrets("syncer-ns")
	now := time.Now()
	ca, err := LoadOrCreateCA(ctx, secrets, "pod-api-ca", map[string]string{"app": "x"}, now)
	require.NoError(t, err)
	again, err := LoadOrCreateCA(ctx, secrets, "pod-api-ca", nil, now)
	require.NoError(t, err)
	assert.Equal(t, ca.CertPEM(), again.CertPEM(), "a restart keeps the CA")
	s, err := secrets.Get(ctx, "pod-api-ca", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "kubernetes.io/tls", string(s.Type))
	assert.Equal(t, "x", s.Labels["app"])

	cert, err := again.ServingCert([]string{"svc.ns.svc"}, []net.IP{net.ParseIP("10.96.0.10")}, now)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca.CertPEM()))
	for name, ok := range map[string]bool{"svc.ns.svc": true, "10.96.0.10": true, "other.example": false, "10.96.0.11": false} {
		_, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name})
		assert.Equal(t, ok, err == nil, "%s: %v", name, err)
	}
	_, err = ParseCA([]byte("junk"), []byte("junk"))
	assert.Error(t, err)
}
