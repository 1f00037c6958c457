package namespaces

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// The sync target, namespace names and labels of kcp v0.11.0's spec_process_test.go.
const (
	kcpKey        = "6ohB8yeXhwqTQVuBzJRgqcRJTpRjX7yTZu5g5g"
	kcpTenantID   = "9Fn3Q4y5UDPmCOrYCujwdgCbD9SwOcKdcefYE7"
	kcpNamespace  = "kcp-33jbiactwhg0"
	kcpLegacyName = "kcp-01c0zzvlqsi7n"
	kcpLocator    = `{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"test"}`
	kcpV060       = `{"syncTarget":{"path":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"test"}`
)

func kcpTestLocator() namespace.Locator {
	return namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root:org:ws", Name: "us-west1", UID: "syncTargetUID"},
		Cluster: "root:org:ws", Namespace: "test"}
}

func downstreamNS(name string, labels, annotations map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace"}}
	u.SetName(name)
	u.SetLabels(labels)
	u.SetAnnotations(annotations)
	return u
}

// TestEnsurePortsKcpsNamespaceCases ports the namespace parts of kcp v0.11.0's
// TestSpecSyncerProcess: the namespace created, the collisions refused, the v0.6.0 locator
// mapped to its existing namespace, and the tenant label added to an existing namespace.
func TestEnsurePortsKcpsNamespaceCases(t *testing.T) {
	require.Equal(t, kcpKey, identity.SyncTargetKey("root:org:ws", "us-west1"))
	ours := map[string]string{identity.DownstreamClusterLabel: kcpKey}
	tests := []struct {
		name        string
		existing    []*unstructured.Unstructured
		cached      bool
		wantName    string
		wantErr     error
		wantCreate  *unstructured.Unstructured
		wantPatched map[string]any // labels of the one patch, if any
	}{
		{
			name:     "namespace created with locator, cluster label and tenant id",
			wantName: kcpNamespace,
			wantCreate: downstreamNS(kcpNamespace,
				map[string]string{identity.DownstreamClusterLabel: kcpKey, identity.TenantIDLabel: kcpTenantID},
				map[string]string{identity.NamespaceLocatorAnnotation: kcpLocator}),
		},
		{
			name:     "existing namespace with a different locator: collision",
			existing: []*unstructured.Unstructured{downstreamNS(kcpNamespace, ours, map[string]string{identity.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"ANOTHERNAMESPACE"}`})},
			wantName: kcpNamespace, wantErr: namespace.ErrCollision,
		},
		{
			name:     "existing namespace without a locator: collision",
			existing: []*unstructured.Unstructured{downstreamNS(kcpNamespace, ours, map[string]string{})},
			wantName: kcpNamespace, wantErr: namespace.ErrCollision,
		},
		{
			name: "old v0.6.0 locator exists downstream: its namespace is used",
			existing: []*unstructured.Unstructured{downstreamNS(kcpLegacyName,
				map[string]string{identity.DownstreamClusterLabel: kcpKey, identity.TenantIDLabel: kcpTenantID},
				map[string]string{identity.NamespaceLocatorAnnotation: kcpV060})},
			cached: true, wantName: kcpLegacyName,
		},
		{
			name: "tenant label is added to existing downstream namespaces",
			existing: []*unstructured.Unstructured{downstreamNS(kcpLegacyName, ours,
				map[string]string{identity.NamespaceLocatorAnnotation: kcpV060})},
			cached: true, wantName: kcpLegacyName,
			wantPatched: map[string]any{identity.TenantIDLabel: kcpTenantID},
		},
		{
			name: "wrong tenant label is corrected",
			existing: []*unstructured.Unstructured{downstreamNS(kcpNamespace,
				map[string]string{identity.DownstreamClusterLabel: kcpKey, identity.TenantIDLabel: "stale"},
				map[string]string{identity.NamespaceLocatorAnnotation: kcpLocator})},
			cached: true, wantName: kcpNamespace,
			wantPatched: map[string]any{identity.TenantIDLabel: kcpTenantID},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{ByLocatorIndex: IndexByLocator})
			var objs []runtime.Object
			for _, o := range tt.existing {
				objs = append(objs, o)
				if tt.cached {
					require.NoError(t, store.Add(o))
				}
			}
			client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), objs...)
			name, err := NewEnsurer(client, store, kcpKey).Ensure(context.Background(), kcpTestLocator())
			assert.Equal(t, tt.wantName, name)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			var creates, patches []clienttesting.Action
			for _, a := range client.Actions() {
				if a.GetResource() != Resource {
					continue // the tenant isolation NetworkPolicy: TestNamespacesAreIsolatedByTenant
				}
				switch a.GetVerb() {
				case "create":
					creates = append(creates, a)
				case "patch", "update":
					patches = append(patches, a)
				}
			}
			if tt.wantCreate == nil {
				assert.Empty(t, creates)
			} else {
				require.Len(t, creates, 1)
				got := creates[0].(clienttesting.CreateAction).GetObject().(*unstructured.Unstructured)
				assert.Equal(t, tt.wantCreate.Object, got.Object)
			}
			if tt.wantPatched == nil {
				assert.Empty(t, patches)
				return
			}
			require.Len(t, patches, 1)
			var body map[string]map[string]map[string]any
			require.NoError(t, json.Unmarshal(patches[0].(clienttesting.PatchAction).GetPatch(), &body))
			assert.Equal(t, tt.wantPatched, body["metadata"]["labels"])
			live, err := client.Resource(Resource).Get(context.Background(), tt.wantName, metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, kcpTenantID, live.GetLabels()[identity.TenantIDLabel])
			assert.Equal(t, kcpKey, live.GetLabels()[identity.DownstreamClusterLabel], "other labels kept")
		})
	}
}

func TestExistingFindsNamespacesByLocatorOnly(t *testing.T) {
	legacy := downstreamNS(kcpLegacyName, nil, map[string]string{identity.NamespaceLocatorAnnotation: kcpV060})
	otherUID := downstreamNS("kcp-otheruid", nil, map[string]string{identity.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"older"},"cluster":"root:org:ws","namespace":"test"}`})
	indexed := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{ByLocatorIndex: IndexByLocator})
	plain := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	tests := []struct {
		name     string
		store    Store
		objs     []*unstructured.Unstructured
		want     string
		wantFind bool
	}{
		{name: "legacy locator", store: indexed, objs: []*unstructured.Unstructured{legacy}, want: kcpLegacyName, wantFind: true},
		{name: "same namespace of an older SyncTarget UID is not ours", store: indexed, objs: []*unstructured.Unstructured{otherUID}},
		{name: "a cache without the index finds nothing", store: plain, objs: []*unstructured.Unstructured{legacy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, o := range tt.objs {
				require.NoError(t, tt.store.(cache.Indexer).Add(o))
				defer func() { _ = tt.store.(cache.Indexer).Delete(o) }()
			}
			client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
			name, ok := NewEnsurer(client, tt.store, kcpKey).Existing(kcpTestLocator())
			assert.Equal(t, tt.wantFind, ok)
			assert.Equal(t, tt.want, name)
		})
	}
}
