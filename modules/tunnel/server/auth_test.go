package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

func fakeKube(t *testing.T) *fake.Clientset {
	t.Helper()
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		switch tr.Spec.Token {
		case "good":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
				Username: "system:serviceaccount:default:syncer", UID: "u1", Groups: []string{"g"},
				Extra: map[string]authnv1.ExtraValue{"k": {"v"}},
			}}
			tr.Status.Audiences = tr.Spec.Audiences // a real API server confirms what it checked
		case "error":
			return true, nil, errors.New("apiserver down")
		case "audience-ignored": // an API server that does not check audiences
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "u"}}
		case "other-audience":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "u"}, Audiences: []string{"https://kubernetes.default.svc"}}
		case "with-error":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "u"}, Audiences: tr.Spec.Audiences, Error: "token is being revoked"}
		case "no-user":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ra := sar.Spec.ResourceAttributes
		if ra.Name == "error" {
			return true, nil, errors.New("apiserver down")
		}
		sar.Status.Allowed = sar.Spec.User == "system:serviceaccount:default:syncer" && ra.Verb == "update" &&
			ra.Resource == "synctargets" && ra.Subresource == "tunnel" && ra.Group == "workload.kcp.io" &&
			len(sar.Spec.Extra["k"]) == 1
		if !sar.Status.Allowed {
			sar.Status.Reason = "no RBAC rule"
		}
		return true, sar, nil
	})
	return cs
}

func TestTokenReviewAuthenticator(t *testing.T) {
	a := server.NewTokenReviewAuthenticator(server.SingleCluster(fakeKube(t)), "tunnel")
	ctx := context.Background()
	u, ok, err := a.AuthenticateToken(ctx, "root", "good")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "system:serviceaccount:default:syncer", u.Name)
	assert.Equal(t, []string{"v"}, u.Extra["k"])

	_, ok, err = a.AuthenticateToken(ctx, "root", "bad")
	require.NoError(t, err)
	assert.False(t, ok)

	_, _, err = a.AuthenticateToken(ctx, "root", "error")
	require.ErrorContains(t, err, "token review")

	broken := server.NewTokenReviewAuthenticator(func(string) (kubernetes.Interface, error) { return nil, errors.New("no client") })
	_, _, err = broken.AuthenticateToken(ctx, "root", "good")
	require.Error(t, err)
}

func TestTokenReviewAcceptsOnlyConfirmedAudiencesAndNoErrors(t *testing.T) {
	var asked [][]string
	kube := fakeKube(t)
	kube.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		asked = append(asked, a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).Spec.Audiences)
		return false, nil, nil
	})
	withAudience := server.NewTokenReviewAuthenticator(server.SingleCluster(kube), "tmc-syncer-tunnel")
	anyAudience := server.NewTokenReviewAuthenticator(server.SingleCluster(kube))
	for _, c := range []struct {
		token          string
		audience, none bool // accepted with the tunnel audience, without
	}{
		{"good", true, true},
		{"audience-ignored", false, true},
		{"other-audience", false, true},
		{"with-error", false, false},
		{"no-user", false, false},
		{"bad", false, false},
	} {
		_, ok, err := withAudience.AuthenticateToken(context.Background(), "root", c.token)
		require.NoError(t, err)
		assert.Equal(t, c.audience, ok, "%s with the tunnel audience", c.token)
		_, ok, err = anyAudience.AuthenticateToken(context.Background(), "root", c.token)
		require.NoError(t, err)
		assert.Equal(t, c.none, ok, "%s without an audience", c.token)
	}
	assert.Equal(t, []string{"tmc-syncer-tunnel"}, asked[0], "the review asks for the audience")
	assert.Empty(t, asked[1])
}

func TestSubjectAccessReviewAuthorizer(t *testing.T) {
	az := server.NewSubjectAccessReviewAuthorizer(server.SingleCluster(fakeKube(t)))
	ctx := context.Background()
	user := server.UserInfo{Name: "system:serviceaccount:default:syncer", Extra: map[string][]string{"k": {"v"}}}
	attrs := server.Attributes{User: user, Cluster: "root", Verb: "update", Group: "workload.kcp.io", Resource: "synctargets", Subresource: "tunnel", Name: "c1"}
	ok, _, err := az.Authorize(ctx, attrs)
	require.NoError(t, err)
	assert.True(t, ok)

	attrs.Verb = "get"
	ok, reason, err := az.Authorize(ctx, attrs)
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, "no RBAC rule", reason)

	attrs.Name = "error"
	_, _, err = az.Authorize(ctx, attrs)
	require.Error(t, err)

	broken := server.NewSubjectAccessReviewAuthorizer(func(string) (kubernetes.Interface, error) { return nil, errors.New("no client") })
	_, _, err = broken.Authorize(ctx, attrs)
	require.Error(t, err)
}

func TestKCPClientsAddTheClusterPathAndKeepOnlyAuthenticatedClusters(t *testing.T) {
	clients, err := server.NewKCPClients(&rest.Config{Host: "https://kcp.example:6443/", QPS: 50, Burst: 100}, 3)
	require.NoError(t, err)
	a, err := clients.Authenticated("root:org")
	require.NoError(t, err)
	b, err := clients.Authenticated("root:org")
	require.NoError(t, err)
	assert.Same(t, a.(*kubernetes.Clientset), b.(*kubernetes.Clientset))
	rc := a.(*kubernetes.Clientset).CoreV1().RESTClient().Get().URL()
	assert.Contains(t, rc.String(), "https://kcp.example:6443/clusters/root:org/api/v1")
	u, err := clients.Unauthenticated("root:org")
	require.NoError(t, err)
	assert.Same(t, a.(*kubernetes.Clientset), u.(*kubernetes.Clientset), "a kept client serves unauthenticated reviews too")

	for i := range 1000 {
		c, err := clients.Unauthenticated(fmt.Sprintf("random-%d", i))
		require.NoError(t, err)
		assert.Contains(t, c.(*kubernetes.Clientset).CoreV1().RESTClient().Get().URL().String(), fmt.Sprintf("/clusters/random-%d/", i))
	}
	assert.Equal(t, 1, clients.Len(), "unauthenticated clusters are not kept")
	for i := range 10 {
		_, err := clients.Authenticated(fmt.Sprintf("ws-%d", i))
		require.NoError(t, err)
	}
	assert.Equal(t, 3, clients.Len(), "at most MaxClusters kept")

	_, err = server.NewKCPClients(&rest.Config{Host: "https://x", TLSClientConfig: rest.TLSClientConfig{CAFile: "/does/not/exist"}}, 0)
	require.Error(t, err)
}
