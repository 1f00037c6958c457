package client_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tmc-syncer/syncer/modules/tunnel/client"
	"github.com/tmc-syncer/syncer/modules/tunnel/internal/tunneltest"
)

func TestBoundTokensAreRequestedForTheTunnelAudienceAndRefreshedBeforeExpiry(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1_700_000_000, 0))
	var asked []*authnv1.TokenRequest
	fail := false
	request := func(_ context.Context, ns, name string, req *authnv1.TokenRequest) (*authnv1.TokenRequest, error) {
		assert.Equal(t, "syncers", ns)
		assert.Equal(t, "tmc-syncer", name)
		asked = append(asked, req)
		if fail {
			return nil, errors.New("apiserver down")
		}
		req.Status = authnv1.TokenRequestStatus{
			Token: "t" + string(rune('0'+len(asked))), ExpirationTimestamp: metav1.NewTime(clk.Now().Add(10 * time.Minute)),
		}
		return req, nil
	}
	src := client.BoundToken(request, client.BoundTokenOptions{Namespace: "syncers", Name: "tmc-syncer", Clock: clk})
	ctx := context.Background()
	tok, err := src(ctx)
	require.NoError(t, err)
	assert.Equal(t, "t1", tok)
	require.Len(t, asked, 1)
	assert.Equal(t, []string{client.DefaultTunnelAudience}, asked[0].Spec.Audiences)
	assert.Equal(t, int64(3600), *asked[0].Spec.ExpirationSeconds)

	clk.SetTime(clk.Now().Add(7 * time.Minute))
	tok, _ = src(ctx)
	assert.Equal(t, "t1", tok, "reused within 80 % of its lifetime")
	assert.Len(t, asked, 1)

	clk.SetTime(clk.Now().Add(time.Minute + time.Second)) // past 8 of 10 minutes
	tok, _ = src(ctx)
	assert.Equal(t, "t2", tok, "a new token before the old one expires")

	fail = true
	clk.SetTime(clk.Now().Add(9 * time.Minute))
	tok, err = src(ctx)
	require.NoError(t, err)
	assert.Equal(t, "t2", tok, "the still valid token while the API server fails")
	clk.SetTime(clk.Now().Add(2 * time.Minute))
	_, err = src(ctx)
	require.ErrorContains(t, err, `ServiceAccount syncers/tmc-syncer with audience "tmc-syncer-tunnel"`, "an expired token is never used")
}

func jwt(payload string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".sig"
}

func TestServiceAccountOfToken(t *testing.T) {
	for _, c := range []struct {
		name, token, ns, sa, err string
	}{
		{"bound", jwt(`{"kubernetes.io":{"namespace":"syncers","serviceaccount":{"name":"tmc-syncer","uid":"u"}}}`), "syncers", "tmc-syncer", ""},
		{"legacy", jwt(`{"kubernetes.io/serviceaccount/namespace":"default","kubernetes.io/serviceaccount/service-account.name":"kcp-syncer-x"}`), "default", "kcp-syncer-x", ""},
		{"not a jwt", "static-token", "", "", "not a JWT"},
		{"bad base64", "a.%%%.c", "", "", "JWT payload"},
		{"bad json", jwt(`{`), "", "", "JWT claims"},
		{"no service account", jwt(`{"sub":"alice"}`), "", "", "names no ServiceAccount"},
		{"bad namespace", jwt(`{"kubernetes.io":{"namespace":"../x","serviceaccount":{"name":"a"}}}`), "", "", "not a namespace name"},
		{"bad name", jwt(`{"kubernetes.io":{"namespace":"a","serviceaccount":{"name":"A*"}}}`), "", "", "not a name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns, sa, err := client.ServiceAccountOfToken(c.token)
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.ns, ns)
			assert.Equal(t, c.sa, sa)
		})
	}
}

func FuzzServiceAccountOfToken(f *testing.F) {
	f.Add(jwt(`{"kubernetes.io":{"namespace":"syncers","serviceaccount":{"name":"tmc-syncer"}}}`))
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		ns, sa, err := client.ServiceAccountOfToken(token)
		if err == nil && (ns == "" || sa == "") {
			t.Fatalf("accepted %q without a ServiceAccount", token)
		}
	})
}

func TestAClientCertificateReplacesTheBearerToken(t *testing.T) {
	pki := tunneltest.NewPKI(t)
	_, err := client.New(client.Options{ServerURL: "https://x", Target: tunneltest.Target, TLSConfig: pki.ClientTLS()})
	require.ErrorContains(t, err, "Token is required without a client certificate")

	seen := make(chan http.Header, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Clone():
		default:
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	srv.TLS = pki.ServerTLS()
	srv.StartTLS()
	defer srv.Close()
	cfg := pki.ClientTLS()
	cfg.Certificates = []tls.Certificate{pki.Client}
	c, err := client.New(client.Options{ServerURL: srv.URL, Target: tunneltest.Target, TLSConfig: cfg})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case h := <-seen:
		assert.Empty(t, h.Get("Authorization"), "no bearer token crosses to the tunnel server")
	case <-time.After(10 * time.Second):
		t.Fatal("the client never tried to connect")
	}
}
