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
	tests := []struct {
		name       string
		gk         schema.GroupKind
		upstream   string
		downstream string
	}{
		{name: "root CA", gk: cm, upstream: "kube-root-ca.crt", downstream: "kcp-root-ca.crt"},
		{name: "other ConfigMap", gk: cm, upstream: "app-config", downstream: "app-config"},
		{name: "default token", gk: secret, upstream: "default-token-x7k2p", downstream: "kcp-default-token-x7k2p"},
		{name: "other Secret", gk: secret, upstream: "tls", downstream: "tls"},
		{name: "Secret named like the CA", gk: secret, upstream: "kube-root-ca.crt", downstream: "kube-root-ca.crt"},
		{name: "ConfigMap named like a token", gk: cm, upstream: "default-token-a", downstream: "default-token-a"},
		{name: "custom kind called Secret", gk: custom, upstream: "default-token-a", downstream: "default-token-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.downstream, DownstreamName(tt.gk, tt.upstream))
			assert.Equal(t, tt.upstream, UpstreamName(tt.gk, tt.downstream))
		})
	}
}

func TestReferenceHelpers(t *testing.T) {
	assert.Equal(t, "kcp-root-ca.crt", ConfigMap("kube-root-ca.crt"))
	assert.Equal(t, "kcp-default-token-1", Secret("default-token-1"))
	assert.Equal(t, "kube-root-ca.crt", Secret("kube-root-ca.crt"))
}
