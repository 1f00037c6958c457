package rename

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestRenamesRoundTripBothDirections(t *testing.T) {
	cm := schema.GroupKind{Kind: "ConfigMap"}
	secret := schema.GroupKind{Kind: "Secret"}
	custom := schema.GroupKind{Group: "example.com", Kind: "Secret"}
	ofDefault := map[string]string{ServiceAccountNameAnnotation: "default"}
	tests := []struct {
		name        string
		gk          schema.GroupKind
		upstream    string
		annotations map[string]string
		downstream  string
	}{
		{name: "root CA", gk: cm, upstream: "kube-root-ca.crt", downstream: "kcp-root-ca.crt"},
		{name: "other ConfigMap", gk: cm, upstream: "app-config", downstream: "app-config"},
		{name: "default token", gk: secret, upstream: "default-token-x7k2p", annotations: ofDefault, downstream: "kcp-default-token-x7k2p"},
		{name: "other Secret", gk: secret, upstream: "tls", downstream: "tls"},
		{name: "Secret named like the CA", gk: secret, upstream: "kube-root-ca.crt", downstream: "kube-root-ca.crt"},
		{name: "ConfigMap named like a token", gk: cm, upstream: "default-token-a", annotations: ofDefault, downstream: "default-token-a"},
		{name: "custom kind called Secret", gk: custom, upstream: "default-token-a", annotations: ofDefault, downstream: "default-token-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.downstream, DownstreamName(tt.gk, tt.upstream, tt.annotations))
			assert.Equal(t, tt.upstream, UpstreamName(tt.gk, tt.downstream))
		})
	}
}

// TestDefaultTokenSecretsAreRenamedOnlyForTheDefaultServiceAccount follows kcp v0.11.0's
// getTransformedName: the prefix alone is not enough, the Secret must name the default
// ServiceAccount.
func TestDefaultTokenSecretsAreRenamedOnlyForTheDefaultServiceAccount(t *testing.T) {
	secret := schema.GroupKind{Kind: "Secret"}
	tests := []struct {
		name        string
		secret      string
		annotations map[string]string
		want        string
	}{
		{name: "token of the default ServiceAccount", secret: "default-token-abc",
			annotations: map[string]string{ServiceAccountNameAnnotation: "default"}, want: "kcp-default-token-abc"},
		{name: "no ServiceAccount annotation", secret: "default-token-abc", want: "default-token-abc"},
		{name: "token of another ServiceAccount", secret: "default-token-abc",
			annotations: map[string]string{ServiceAccountNameAnnotation: "builder"}, want: "default-token-abc"},
		{name: "empty ServiceAccount name", secret: "default-token-abc",
			annotations: map[string]string{ServiceAccountNameAnnotation: ""}, want: "default-token-abc"},
		{name: "default ServiceAccount, other name", secret: "registry",
			annotations: map[string]string{ServiceAccountNameAnnotation: "default"}, want: "registry"},
		{name: "prefix without the dash", secret: "default-tokenabc",
			annotations: map[string]string{ServiceAccountNameAnnotation: "default"}, want: "default-tokenabc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, DownstreamName(secret, tt.secret, tt.annotations))
		})
	}
}

// TestUpstreamNameOfKcpsCases ports the cases of kcp v0.11.0's GetUpstreamResourceName test.
func TestUpstreamNameOfKcpsCases(t *testing.T) {
	tests := []struct {
		name       string
		gk         schema.GroupKind
		downstream string
		want       string
	}{
		{name: "root CA ConfigMap", gk: schema.GroupKind{Kind: "ConfigMap"}, downstream: "kcp-root-ca.crt", want: "kube-root-ca.crt"},
		{name: "other ConfigMap", gk: schema.GroupKind{Kind: "ConfigMap"}, downstream: "my-configmap", want: "my-configmap"},
		{name: "default token Secret", gk: schema.GroupKind{Kind: "Secret"}, downstream: "kcp-default-token-1234", want: "default-token-1234"},
		{name: "other Secret", gk: schema.GroupKind{Kind: "Secret"}, downstream: "my-super-secret", want: "my-super-secret"},
		{name: "other kind", gk: schema.GroupKind{Group: "random", Kind: "Another"}, downstream: "kcp-foo", want: "kcp-foo"},
		{name: "ConfigMap named like a token", gk: schema.GroupKind{Kind: "ConfigMap"}, downstream: "kcp-default-token-1234", want: "kcp-default-token-1234"},
		{name: "no kind", gk: schema.GroupKind{}, downstream: "kcp-foo", want: "kcp-foo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, UpstreamName(tt.gk, tt.downstream))
		})
	}
}

func TestReferenceHelpers(t *testing.T) {
	assert.Equal(t, "kcp-root-ca.crt", ConfigMap("kube-root-ca.crt"))
	assert.Equal(t, "kcp-default-token-1", Secret("default-token-1"))
	assert.Equal(t, "kube-root-ca.crt", Secret("kube-root-ca.crt"))
}
