package downstream

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// TestObjectsGoToTheNamespaceAnOlderKcpCreated follows kcp v0.11.0's "old v0.6.0 namespace
// locator exists downstream": a downstream namespace whose locator names the SyncTarget's
// cluster as syncTarget.path, and whose name is not the hash of today's locator, receives the
// objects of its upstream namespace (and kcp's tenant label); no second namespace is made.
func TestObjectsGoToTheNamespaceAnOlderKcpCreated(t *testing.T) {
	target := identity.NewTarget("root:org:ws", "us-west1", "syncTargetUID")
	up := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "foo", "namespace": "test", "uid": "up-foo",
			"labels":      map[string]any{target.StateLabel(): "Sync", "something": "else"},
			"annotations": map[string]any{identity.LogicalClusterAnnotation: "root:org:ws"}},
		"data": map[string]any{"a": "b"},
	}}
	legacy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": "kcp-01c0zzvlqsi7n",
			"labels":      map[string]any{identity.DownstreamClusterLabel: target.Key},
			"annotations": map[string]any{identity.NamespaceLocatorAnnotation: `{"syncTarget":{"path":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"test"}`}},
	}}
	upClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), up)
	downClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), legacy)
	applyReactor(t, downClient)

	s, err := New(Clients{Upstream: upClient, Downstream: downClient}, target, []schema.GroupVersionResource{cmGVR},
		Options{Registerer: prometheus.NewRegistry(), NamespaceCleanDelay: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	require.Eventually(t, func() bool {
		_, err := downClient.Resource(cmGVR).Namespace("kcp-01c0zzvlqsi7n").Get(context.Background(), "foo", metav1.GetOptions{})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the ConfigMap goes to the existing namespace")
	_, err = downClient.Resource(namespacesGVR).Get(context.Background(), "kcp-33jbiactwhg0", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no namespace under today's name")
	ns, err := downClient.Resource(namespacesGVR).Get(context.Background(), "kcp-01c0zzvlqsi7n", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "9Fn3Q4y5UDPmCOrYCujwdgCbD9SwOcKdcefYE7", ns.GetLabels()[identity.TenantIDLabel], "kcp's tenant label added")

	cancel()
	require.NoError(t, <-done)
}

var namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
