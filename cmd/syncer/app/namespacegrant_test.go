package app

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
)

func TestNamespaceGrantOnlyWhenAskedAndAllowed(t *testing.T) {
	kube := func(denied string, user string) *fake.Clientset {
		c := fake.NewClientset()
		c.PrependReactor("create", "selfsubjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
			r := a.(clienttesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
			r.Status.Allowed = r.Spec.ResourceAttributes.Verb != denied
			return true, r, nil
		})
		c.PrependReactor("create", "selfsubjectreviews", func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, &authenticationv1.SelfSubjectReview{Status: authenticationv1.SelfSubjectReviewStatus{UserInfo: authenticationv1.UserInfo{Username: user}}}, nil
		})
		return c
	}
	ctx := context.Background()
	sa := "system:serviceaccount:tmc-syncer-eu:tmc-syncer"
	for _, tc := range []struct {
		name, role, denied, user string
		want                     *namespaces.Grant
	}{
		{"no flag: nothing (kcp's plugin RBAC)", "", "", sa, nil},
		{"service account", "r", "", sa, &namespaces.Grant{ClusterRole: "r", Subject: namespaces.Subject{Kind: "ServiceAccount", Namespace: "tmc-syncer-eu", Name: "tmc-syncer"}}},
		{"user", "r", "", "alice", &namespaces.Grant{ClusterRole: "r", Subject: namespaces.Subject{Kind: "User", Name: "alice"}}},
		{"odd service account name is a user", "r", "", "system:serviceaccount:x", &namespaces.Grant{ClusterRole: "r", Subject: namespaces.Subject{Kind: "User", Name: "system:serviceaccount:x"}}},
		{"may not bind: nothing", "r", "bind", sa, nil},
		{"may not create bindings: nothing", "r", "create", sa, nil},
		{"anonymous: nothing", "r", "", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, namespaceGrant(ctx, tc.role, kube(tc.denied, tc.user), logr.Discard()))
		})
	}
}
