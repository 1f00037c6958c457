package downstream

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

func tokenSecret(cluster, ns, name, sa, token string, created time.Time, labels map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
		"metadata": map[string]any{"name": name, "namespace": ns, "uid": "uid-" + name,
			"creationTimestamp": created.UTC().Format(time.RFC3339),
			"annotations":       map[string]any{"kubernetes.io/service-account.name": sa, identity.LogicalClusterAnnotation: cluster}},
	}}
	if labels != nil {
		u.Object["metadata"].(map[string]any)["labels"] = labels
	}
	if token != "" {
		u.Object["data"] = map[string]any{"token": "dG9r", "namespace": "dGVhbQ=="}
	}
	return u
}

func TestPodInputsPicksTheOldestTokenSecretOfTheServiceAccountInItsWorkspace(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	opaque := tokenSecret("root:a", "team", "looks-like-a-token", "app", "x", t0.Add(-time.Hour), nil)
	opaque.Object["type"] = "Opaque"
	store := cache.NewIndexer(informers.StoreKeyFunc("root:a"), cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, s := range []*unstructured.Unstructured{
		tokenSecret("root:a", "team", "app-token-new", "app", "x", t0.Add(time.Hour), nil),
		tokenSecret("root:a", "team", "app-token-old", "app", "x", t0, nil),
		tokenSecret("root:a", "team", "app-token-empty", "app", "", t0.Add(-2*time.Hour), nil), // not filled by the token controller yet
		tokenSecret("root:b", "team", "app-token-other-ws", "app", "x", t0.Add(-3*time.Hour), nil),
		tokenSecret("root:a", "other", "app-token-other-ns", "app", "x", t0.Add(-3*time.Hour), nil),
		tokenSecret("root:a", "team", "default-token-abc", "default", "x", t0.Add(-3*time.Hour), nil),
		tokenSecret("root:a", "team", "b-same-time", "tie", "x", t0, nil),
		tokenSecret("root:a", "team", "a-same-time", "tie", "x", t0, nil),
		opaque,
	} {
		require.NoError(t, store.Add(s))
	}
	p := &podInputs{secrets: func() (cache.Indexer, bool) { return store, true }, fromCluster: "root:a"}
	tests := []struct{ cluster, ns, sa, want string }{
		{"root:a", "team", "app", "app-token-old"},
		{"root:b", "team", "app", "app-token-other-ws"},
		{"root:a", "other", "app", "app-token-other-ns"},
		{"root:a", "team", "default", "default-token-abc"},
		{"root:a", "team", "tie", "a-same-time"},
		{"root:a", "team", "nobody", ""},
		{"root:c", "team", "app", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s|%s/%s", tt.cluster, tt.ns, tt.sa), func(t *testing.T) {
			got, err := p.TokenSecret(tt.cluster, tt.ns, tt.sa)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	ns, err := p.Nameserver("root:a")
	require.NoError(t, err)
	assert.Empty(t, ns, "no workspace DNS plugged in")
	p.nameservers = NameserversFunc(func(cluster string) (string, error) { return "10.0.0." + cluster[len(cluster)-1:], nil })
	ns, err = p.Nameserver("root:a")
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.a", ns)

	notSynced := &podInputs{secrets: func() (cache.Indexer, bool) { return nil, false }}
	_, err = notSynced.TokenSecret("root:a", "team", "app")
	assert.ErrorIs(t, err, transformation.ErrPodInputsNotReady)
}

func TestRegisterRefusesAPodMutatorWithoutAPIURL(t *testing.T) {
	target := identity.NewTarget("root", "east", "st-uid")
	_, err := podMutatorOption(&PodMutatorOptions{}, nil, target.Cluster)
	require.Error(t, err)
}

// A Pod of ServiceAccount app syncs down pointing at the workspace API with app's token
// Secret under the name that Secret really gets downstream; the default ServiceAccount's
// default-token-* is renamed, and the pod mutator references the renamed Secret. A Pod
// whose ServiceAccount has no token yet waits, without reporting an error upstream, and
// syncs within seconds once its token Secret appears.
func TestEnginePathMutatesPodsToReachTheirWorkspace(t *testing.T) {
	target := identity.NewTarget("root", "east", "st-uid")
	syncLabels := map[string]any{target.StateLabel(): "Sync"}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	pod := func(name, sa string) *unstructured.Unstructured {
		spec := map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}}
		if sa != "" {
			spec["serviceAccountName"] = sa
		}
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name, "namespace": "team", "uid": "uid-" + name, "labels": syncLabels},
			"spec":     spec,
		}}
	}
	var mu sync.Mutex
	prepared := map[string]int{}
	f := startFakeEngineSyncing(t, target, []string{"pods"}, []runtime.Object{
		tokenSecret("root", "team", "app-token-1", "app", "x", t0, syncLabels),
		tokenSecret("root", "team", "default-token-abc", "default", "x", t0, syncLabels),
		pod("app", "app"), pod("plain", ""), pod("waiting", "late"),
	}, nil, Options{
		PodMutator: &PodMutatorOptions{APIURL: &url.URL{Scheme: "https", Host: "kcp.example:6443"},
			PrepareNamespace: func(_ context.Context, ns string) error {
				mu.Lock()
				defer mu.Unlock()
				prepared[ns]++
				return nil
			}},
		PodInputsRetryDelay: 100 * time.Millisecond,
	})
	downNS, err := namespace.DownstreamName(namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "east", UID: "st-uid"}, Cluster: "root", Namespace: "team"})
	require.NoError(t, err)
	ctx := context.Background()
	get := func(gvr schema.GroupVersionResource, name string) (*unstructured.Unstructured, error) {
		return f.down.Resource(gvr).Namespace(downNS).Get(ctx, name, metav1.GetOptions{})
	}
	projected := func(p *unstructured.Unstructured) (secret, configMap string) {
		vols, _, _ := unstructured.NestedSlice(p.Object, "spec", "volumes")
		for _, v := range vols {
			vm := v.(map[string]any)
			if vm["name"] != transformation.APIAccessVolume {
				continue
			}
			sources := vm["projected"].(map[string]any)["sources"].([]any)
			return sources[0].(map[string]any)["secret"].(map[string]any)["name"].(string),
				sources[1].(map[string]any)["configMap"].(map[string]any)["name"].(string)
		}
		return "", ""
	}
	for name, wantSecret := range map[string]string{"app": "app-token-1", "plain": "kcp-default-token-abc"} {
		var p *unstructured.Unstructured
		require.Eventually(t, func() bool { p, err = get(podsGVR, name); return err == nil }, 10*time.Second, 10*time.Millisecond, "pod %s synced", name)
		secret, cm := projected(p)
		assert.Equal(t, wantSecret, secret, "pod %s", name)
		assert.Equal(t, "kcp-root-ca.crt", cm)
		auto, _, _ := unstructured.NestedBool(p.Object, "spec", "automountServiceAccountToken")
		assert.False(t, auto)
		require.Eventually(t, func() bool { _, err := get(secretsGVR, wantSecret); return err == nil }, 10*time.Second, 10*time.Millisecond,
			"the Secret pod %s mounts exists downstream under that name", name)
	}

	_, err = get(podsGVR, "waiting")
	require.Error(t, err, "no token Secret for ServiceAccount late yet: not synced")
	_, err = f.up.Resource(secretsGVR).Namespace("team").Create(ctx, tokenSecret("root", "team", "late-token", "late", "x", t0, syncLabels), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := get(podsGVR, "waiting")
		if err != nil {
			return false
		}
		s, _ := projected(p)
		return s == "late-token"
	}, 10*time.Second, 10*time.Millisecond, "the waiting pod syncs once its token Secret is there")
	waiting, err := f.up.Resource(podsGVR).Namespace("team").Get(ctx, "waiting", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, waiting.GetAnnotations(), spec.SyncErrorAnnotation, "waiting for inputs is not a sync error")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{downNS: 1}, prepared, "the namespace is prepared once")
}

func TestNotReadyNameserverWaitsToo(t *testing.T) {
	target := identity.NewTarget("root", "east", "st-uid")
	syncLabels := map[string]any{target.StateLabel(): "Sync"}
	ready := make(chan struct{})
	dns := NameserversFunc(func(string) (string, error) {
		select {
		case <-ready:
			return "10.96.0.53", nil
		default:
			return "", fmt.Errorf("workspace DNS: %w", transformation.ErrPodInputsNotReady)
		}
	})
	p := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "app", "namespace": "team", "uid": "uid-app", "labels": syncLabels},
		"spec":     map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox"}}},
	}}
	f := startFakeEngineSyncing(t, target, []string{"pods"}, []runtime.Object{
		tokenSecret("root", "team", "default-token-abc", "default", "x", time.Now(), syncLabels), p,
	}, nil, Options{
		PodMutator:          &PodMutatorOptions{APIURL: &url.URL{Scheme: "https", Host: "kcp.example:6443"}, Nameservers: dns},
		PodInputsRetryDelay: 50 * time.Millisecond,
	})
	nsName, err := namespace.DownstreamName(namespace.Locator{SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "east", UID: "st-uid"}, Cluster: "root", Namespace: "team"})
	require.NoError(t, err)
	get := func() (*unstructured.Unstructured, error) {
		return f.down.Resource(podsGVR).Namespace(nsName).Get(context.Background(), "app", metav1.GetOptions{})
	}
	require.Never(t, func() bool { _, err := get(); return err == nil }, 300*time.Millisecond, 20*time.Millisecond, "the pod waits for its workspace DNS")
	close(ready)
	require.Eventually(t, func() bool {
		got, err := get()
		if err != nil {
			return false
		}
		policy, _, _ := unstructured.NestedString(got.Object, "spec", "dnsPolicy")
		return policy == "None"
	}, 10*time.Second, 10*time.Millisecond, "the pod syncs with the workspace DNS once it is ready")
	up, err := f.up.Resource(podsGVR).Namespace("team").Get(context.Background(), "app", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, up.GetAnnotations(), spec.SyncErrorAnnotation)
}
