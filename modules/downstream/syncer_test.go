package downstream

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

var cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

func kinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList", namespaces.Resource: "NamespaceList"}
}

func TestNewValidatesItsInput(t *testing.T) {
	c := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	target := identity.NewTarget("root", "east", "uid")
	res := []schema.GroupVersionResource{cmGVR}
	tests := map[string]struct {
		clients Clients
		target  identity.Target
		res     []schema.GroupVersionResource
		opts    Options
	}{
		"no clients":      {Clients{}, target, res, Options{}},
		"no target":       {Clients{Upstream: c, Downstream: c}, identity.Target{}, res, Options{}},
		"no resources":    {Clients{Upstream: c, Downstream: c}, target, nil, Options{}},
		"bad policy":      {Clients{Upstream: c, Downstream: c}, target, res, Options{ConflictPolicy: "Steal"}},
		"bad propagation": {Clients{Upstream: c, Downstream: c}, target, res, Options{DeletionPropagation: "Later"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := New(tt.clients, tt.target, tt.res, tt.opts)
			require.Error(t, err)
		})
	}
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tmc_syncer_downstream_applies_total", Help: "x"})))
	_, err := New(Clients{Upstream: c, Downstream: c}, target, res, Options{Registerer: reg})
	require.Error(t, err, "metrics name clash")
}

// applyReactor makes the fake dynamic client accept server-side apply patches.
func applyReactor(t *testing.T, c *dynamicfake.FakeDynamicClient) {
	c.PrependReactor("patch", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		p := a.(clienttesting.PatchAction)
		if p.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		u := &unstructured.Unstructured{}
		require.NoError(t, json.Unmarshal(p.GetPatch(), &u.Object))
		u.SetUID(types.UID("down-" + u.GetName()))
		gvr := p.GetResource()
		if _, err := c.Tracker().Get(gvr, p.GetNamespace(), p.GetName()); apierrors.IsNotFound(err) {
			return true, u, c.Tracker().Create(gvr, u, p.GetNamespace())
		}
		return true, u, c.Tracker().Update(gvr, u, p.GetNamespace())
	})
}

func TestRunSyncsCleansOrphansAndStops(t *testing.T) {
	target := identity.NewTarget("root", "east", "st-uid")
	up := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "web", "namespace": "team", "uid": "up-web",
			"labels": map[string]any{target.StateLabel(): "Sync"}},
		"data": map[string]any{"k": "v"},
	}}
	orphan := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "orphan", "namespace": "kcp-old", "uid": "d-orphan",
			"labels":      map[string]any{identity.DownstreamClusterLabel: target.Key},
			"annotations": map[string]any{ownership.NameAnnotation: "orphan", ownership.NamespaceAnnotation: "team", ownership.ClusterAnnotation: "root", ownership.UIDAnnotation: "up-orphan"}},
	}}
	upClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), up)
	downClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), orphan)
	applyReactor(t, downClient)

	s, err := New(Clients{Upstream: upClient, Downstream: downClient, UpstreamEvents: kubefake.NewClientset()}, target,
		[]schema.GroupVersionResource{cmGVR}, Options{Registerer: prometheus.NewRegistry(), NamespaceCleanDelay: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	nsName, err := namespace.DownstreamName(namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "east", UID: "st-uid"}, Cluster: "root", Namespace: "team"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := downClient.Resource(cmGVR).Namespace(nsName).Get(context.Background(), "web", metav1.GetOptions{})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the ConfigMap is synced down")
	require.Eventually(t, func() bool {
		_, err := downClient.Resource(cmGVR).Namespace("kcp-old").Get(context.Background(), "orphan", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 10*time.Second, 10*time.Millisecond, "the orphan is cleaned up on start")
	got, err := upClient.Resource(cmGVR).Namespace("team").Get(context.Background(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, got.GetFinalizers(), target.SyncerFinalizer())
	assert.True(t, s.HasSynced())
	assert.NotEmpty(t, s.Stats())

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRunSyncsTheSameConfigMapOfTwoWorkspacesApart runs New's informers and controllers on
// an upstream that lists ns/cm in logical clusters A and B (as kcp's syncer virtual
// workspace does): both reach the physical cluster, each in its own namespace.
func TestRunSyncsTheSameConfigMapOfTwoWorkspacesApart(t *testing.T) {
	target := identity.NewTarget("root", "east", "st-uid")
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("v1")
	list.SetKind("ConfigMapList")
	for _, c := range []string{"root:a", "root:b"} {
		list.Items = append(list.Items, unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "cm", "namespace": "team", "uid": "up-" + c,
				"labels":      map[string]any{target.StateLabel(): "Sync"},
				"annotations": map[string]any{identity.LogicalClusterAnnotation: c},
				"finalizers":  []any{target.SyncerFinalizer()}},
			"data": map[string]any{"from": c},
		}})
	}
	upClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	// The fake's tracker keys by namespace/name and cannot hold both: answer lists here.
	upClient.PrependReactor("list", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
		out := list.DeepCopy()
		out.Items = nil
		for _, it := range list.Items {
			if a.(clienttesting.ListAction).GetListRestrictions().Labels.Matches(labels.Set(it.GetLabels())) {
				out.Items = append(out.Items, it)
			}
		}
		return true, out, nil
	})
	downClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds())
	applyReactor(t, downClient)

	s, err := New(Clients{Upstream: upClient, Downstream: downClient}, target,
		[]schema.GroupVersionResource{cmGVR}, Options{Registerer: prometheus.NewRegistry(), NamespaceCleanDelay: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	for _, c := range []string{"root:a", "root:b"} {
		ns, err := namespace.DownstreamName(namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "east", UID: "st-uid"}, Cluster: c, Namespace: "team"})
		require.NoError(t, err)
		var got *unstructured.Unstructured
		require.Eventually(t, func() bool {
			got, err = downClient.Resource(cmGVR).Namespace(ns).Get(context.Background(), "cm", metav1.GetOptions{})
			return err == nil
		}, 10*time.Second, 10*time.Millisecond, "the ConfigMap of %s is synced into %s", c, ns)
		assert.Equal(t, map[string]any{"from": c}, got.Object["data"])
		owner, ok := ownership.FromAnnotations(got.GetAnnotations())
		require.True(t, ok)
		assert.Equal(t, c, owner.Cluster)
		_, err = downClient.Resource(namespaces.Resource).Get(context.Background(), ns, metav1.GetOptions{})
		require.NoError(t, err, "namespace %s was created", ns)
	}
}
