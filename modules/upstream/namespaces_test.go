package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// TestStatusIsReadFromTheNamespaceAnOlderKcpCreated: the status side resolves downstream
// namespaces like the spec side, so an object in a namespace created by kcp ≤ v0.6 (locator
// with syncTarget.path, a name not hashed from today's locator) is found.
func TestStatusIsReadFromTheNamespaceAnOlderKcpCreated(t *testing.T) {
	target := identity.NewTarget("root:org:ws", "us-west1", "syncTargetUID")
	ns := func(name, locator string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace"}}
		u.SetName(name)
		u.SetLabels(map[string]string{identity.DownstreamClusterLabel: target.Key})
		u.SetAnnotations(map[string]string{identity.NamespaceLocatorAnnotation: locator})
		return u
	}
	want := namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root:org:ws", Name: "us-west1", UID: "syncTargetUID"},
		Cluster: "root:org:ws", Namespace: "test"}
	tests := []struct {
		name     string
		existing *unstructured.Unstructured
		want     string
		found    bool
	}{
		{name: "kcp v0.6.0 locator", existing: ns("kcp-01c0zzvlqsi7n",
			`{"syncTarget":{"path":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"test"}`),
			want: "kcp-01c0zzvlqsi7n", found: true},
		{name: "an older SyncTarget UID is not ours", existing: ns("kcp-old",
			`{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"older"},"cluster":"root:org:ws","namespace":"test"}`)},
		{name: "another namespace", existing: ns("kcp-other",
			`{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"other"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kinds := map[schema.GroupVersionResource]string{informers.NamespacesGVR: "NamespaceList"}
			down := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds, tt.existing)
			mgr := informers.NewManager(informers.Options{Target: target, FromCluster: "root",
				Downstream: informers.Clients{Dynamic: down}})
			l := namespaceLookup{mgr}
			_, ok := l.Existing(want)
			assert.False(t, ok, "no informer running: nothing found")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			inf, err := mgr.Start(ctx, informers.ID{Side: informers.Downstream, GVR: informers.NamespacesGVR})
			require.NoError(t, err)
			require.Eventually(t, inf.HasSynced, 10*time.Second, 10*time.Millisecond)
			got, ok := l.Existing(want)
			assert.Equal(t, tt.found, ok)
			assert.Equal(t, tt.want, got)
			mgr.StopAll()
		})
	}
}
