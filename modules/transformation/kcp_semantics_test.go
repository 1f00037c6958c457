package transformation

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

func TestDefaultServiceAccountOfANamespaceIsNotSynced(t *testing.T) {
	tests := []struct {
		name     string
		obj      *unstructured.Unstructured
		skipped  bool
		wantName string
	}{
		{name: "default ServiceAccount", obj: synced("v1", "ServiceAccount", "team-a", "default", nil), skipped: true},
		{name: "another ServiceAccount", obj: synced("v1", "ServiceAccount", "team-a", "builder", nil), wantName: "builder"},
		{name: "ConfigMap named default", obj: synced("v1", "ConfigMap", "team-a", "default", nil), wantName: "default"},
		{name: "custom kind called ServiceAccount", obj: synced("example.com/v1", "ServiceAccount", "team-a", "default", nil), wantName: "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := NewPipeline().ToDownstream(testContext(), tt.obj)
			if tt.skipped {
				var skip *SkipError
				require.ErrorAs(t, err, &skip)
				assert.Equal(t, "select", skip.Stage)
				assert.Contains(t, skip.Reason, "default ServiceAccount")
				assert.Nil(t, out)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantName, out.GetName())
		})
	}
}

// TestDefaultTokenSecretIsRenamedOnlyWhenItBelongsToTheDefaultServiceAccount follows kcp
// v0.11.0's getTransformedName: a Secret goes down as kcp-default-token-* only when its
// kubernetes.io/service-account.name annotation says "default".
func TestDefaultTokenSecretIsRenamedOnlyWhenItBelongsToTheDefaultServiceAccount(t *testing.T) {
	tests := []struct {
		name        string
		secret      string
		annotations map[string]string
		want        string
	}{
		// kcp v0.11.0 spec_process_test.go syncs secret "default-token-abc" of SA "default".
		{name: "token of the default ServiceAccount", secret: "default-token-abc",
			annotations: map[string]string{"kubernetes.io/service-account.name": "default"}, want: "kcp-default-token-abc"},
		{name: "no ServiceAccount annotation", secret: "default-token-abc", want: "default-token-abc"},
		{name: "token of another ServiceAccount", secret: "default-token-abc",
			annotations: map[string]string{"kubernetes.io/service-account.name": "builder"}, want: "default-token-abc"},
		{name: "other name, default ServiceAccount", secret: "foo",
			annotations: map[string]string{"kubernetes.io/service-account.name": "default"}, want: "foo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := synced("v1", "Secret", "team-a", tt.secret, map[string]any{"type": "kubernetes.io/service-account-token"})
			if tt.annotations != nil {
				in.SetAnnotations(tt.annotations)
			}
			out := toDownstream(t, in)
			assert.Equal(t, tt.want, out.GetName())
		})
	}
}

type lookupFunc func(namespace.Locator) (string, bool)

func (f lookupFunc) Existing(l namespace.Locator) (string, bool) { return f(l) }

func TestObjectsGoToTheExistingNamespaceOfTheirLocator(t *testing.T) {
	ctx := testContext()
	in := synced("v1", "ConfigMap", "team-a", "cfg", nil)
	hashed, err := namespace.DownstreamName(ctx.Locator(in))
	require.NoError(t, err)
	tests := []struct {
		name   string
		lookup namespace.Lookup
		want   string
	}{
		{name: "no lookup: named after the locator", want: hashed},
		{name: "nothing found: named after the locator", lookup: lookupFunc(func(namespace.Locator) (string, bool) { return "", false }), want: hashed},
		{name: "a namespace of an older kcp found", lookup: lookupFunc(func(l namespace.Locator) (string, bool) {
			return "kcp-01c0zzvlqsi7n", l == ctx.Locator(in)
		}), want: "kcp-01c0zzvlqsi7n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ctx
			c.Namespaces = tt.lookup
			out, err := NewPipeline().ToDownstream(c, in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, out.GetNamespace())
			got, err := c.DownstreamNamespace(in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "Context.DownstreamNamespace agrees with ToDownstream")
		})
	}
}
