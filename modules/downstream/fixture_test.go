package downstream

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	discoveryfake "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/tmc-syncer/syncer/modules/downstream/namespaces"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

var (
	cmGVR         = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

func kinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{
		cmGVR: "ConfigMapList", namespacesGVR: "NamespaceList",
		{Version: "v1", Resource: "secrets"}:         "SecretList",
		{Version: "v1", Resource: "serviceaccounts"}: "ServiceAccountList",
		{Version: "v1", Resource: "pods"}:            "PodList",
		workloadv1alpha1.SyncTargetsResource:         "SyncTargetList",
		namespaces.NetworkPoliciesResource:           "NetworkPolicyList",
	}
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

func fakeDiscovery() *discoveryfake.FakeDiscovery {
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete"}
	return &discoveryfake.FakeDiscovery{Fake: &clienttesting.Fake{Resources: []*metav1.APIResourceList{{
		GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "configmaps", Namespaced: true, Verbs: verbs},
			{Name: "secrets", Namespaced: true, Verbs: verbs},
			{Name: "serviceaccounts", Namespaced: true, Verbs: verbs},
			{Name: "pods", Namespaced: true, Verbs: verbs},
			{Name: "namespaces", Verbs: verbs},
		},
	}}}}
}

// metadataOf returns the PartialObjectMetadata of the namespaces among objs, for the
// engine's metadata-only namespace informers.
func metadataOf(objs []runtime.Object) []runtime.Object {
	var out []runtime.Object
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok || u.GetKind() != "Namespace" {
			continue
		}
		out = append(out, &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Labels: u.GetLabels(), Annotations: u.GetAnnotations()},
		})
	}
	return out
}

// fakeEngine runs downstream sync registered on an engine over fake clients: the
// one wiring path of the syncer, as cmd/syncer assembles it.
type fakeEngine struct {
	up, down *dynamicfake.FakeDynamicClient
	reg      *Registration
}

func startFakeEngine(t *testing.T, target identity.Target, upObjs, downObjs []runtime.Object, opts Options) *fakeEngine {
	t.Helper()
	return startFakeEngineSyncing(t, target, nil, upObjs, downObjs, opts)
}

// startFakeEngineSyncing is startFakeEngine with --resources (besides the ones always synced).
func startFakeEngineSyncing(t *testing.T, target identity.Target, resources []string, upObjs, downObjs []runtime.Object, opts Options) *fakeEngine {
	t.Helper()
	st := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
		"metadata": map[string]any{"name": target.Name, "uid": string(target.UID)},
	}}
	f := &fakeEngine{
		up:   dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), append(upObjs, st)...),
		down: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kinds(), downObjs...),
	}
	applyReactor(t, f.down)
	// The metadata fakes hold namespaces as PartialObjectMetadata of kind Namespace.
	metaScheme := func() *runtime.Scheme {
		s := runtime.NewScheme()
		s.AddKnownTypeWithName(corev1.SchemeGroupVersion.WithKind("Namespace"), &metav1.PartialObjectMetadata{})
		s.AddKnownTypeWithName(corev1.SchemeGroupVersion.WithKind("NamespaceList"), &metav1.PartialObjectMetadataList{})
		return s
	}
	e, err := engine.New(engine.Config{SyncTargetName: target.Name, SyncTargetUID: target.UID, FromCluster: target.Cluster, Resources: resources},
		engine.ClusterClients{Dynamic: f.up, Metadata: metadatafake.NewSimpleMetadataClient(metaScheme(), metadataOf(upObjs)...), Discovery: fakeDiscovery()},
		engine.ClusterClients{Dynamic: f.down, Metadata: metadatafake.NewSimpleMetadataClient(metaScheme(), metadataOf(downObjs)...), Discovery: fakeDiscovery()})
	require.NoError(t, err)
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.NamespaceCleanDelay == 0 {
		opts.NamespaceCleanDelay = time.Hour
	}
	f.reg, err = Register(e, Clients{Upstream: f.up, Downstream: f.down}, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("engine did not stop")
		}
		f.reg.Close()
	})
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatalf("engine stopped before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("engine not ready")
	}
	return f
}
