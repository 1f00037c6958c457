package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

const engineFromCluster = "root:e2e"

var configmapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

// keyRecorder is a test controller: it records every key and lets a test decide
// what Reconcile returns.
type keyRecorder struct {
	name    string
	workers int
	fn      func(ctx context.Context, key queue.Key, attempt int) error

	mu       sync.Mutex
	keys     []queue.Key
	attempts map[queue.Key][]time.Time
}

func newKeyRecorder(name string, fn func(ctx context.Context, key queue.Key, attempt int) error) *keyRecorder {
	return &keyRecorder{name: name, workers: 2, fn: fn, attempts: map[queue.Key][]time.Time{}}
}

func (c *keyRecorder) Name() string { return c.name }
func (c *keyRecorder) Workers() int { return c.workers }
func (c *keyRecorder) Reconcile(ctx context.Context, key queue.Key) error {
	c.mu.Lock()
	c.keys = append(c.keys, key)
	c.attempts[key] = append(c.attempts[key], time.Now())
	n := len(c.attempts[key])
	c.mu.Unlock()
	if c.fn == nil {
		return nil
	}
	return c.fn(ctx, key, n)
}

func (c *keyRecorder) seen(match func(queue.Key) bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.keys {
		if match(k) {
			return true
		}
	}
	return false
}

func (c *keyRecorder) times(k queue.Key) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.attempts[k]...)
}

func named(ns, name string) func(queue.Key) bool {
	return func(k queue.Key) bool { return k.Namespace == ns && k.Name == name }
}

// runningEngine is an engine started against the test bed.
type runningEngine struct {
	*engine.Engine
	name   string
	stop   func() // cancels the engine and waits for Run to return
	done   chan error
	target identity.Target
}

// startEngine creates a fresh SyncTarget upstream and runs an engine for it with
// the given controllers, each watching upstream (keys Down) and downstream (keys Up).
func startEngine(t *testing.T, cfg engine.Config, ctrls ...queue.Controller) (*runningEngine, map[string]*queue.Runner) {
	t.Helper()
	env := framework.Shared(t)
	ctx := context.Background()

	name := "e2e-" + rand.String(6)
	sts := env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource)
	st, err := sts.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": map[string]any{"name": name},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sts.Delete(context.Background(), name, metav1.DeleteOptions{}) })

	cfg.SyncTargetName, cfg.SyncTargetUID, cfg.FromCluster = name, st.GetUID(), engineFromCluster
	if cfg.IncompatibleRetryInterval == 0 {
		cfg.IncompatibleRetryInterval = 500 * time.Millisecond
	}
	up, err := engine.ClientsFor(clients.Configure(env.KCP.Config, clients.Options{Version: "e2e"}))
	require.NoError(t, err)
	down, err := engine.ClientsFor(clients.Configure(env.Physical.Config, clients.Options{Version: "e2e"}))
	require.NoError(t, err)
	e, err := engine.New(cfg, up, down)
	require.NoError(t, err)

	runners := map[string]*queue.Runner{}
	for _, c := range ctrls {
		r, err := e.Register(c,
			engine.Watch{Side: informers.Upstream, Direction: queue.Down},
			engine.Watch{Side: informers.Downstream, Direction: queue.Up})
		require.NoError(t, err)
		runners[c.Name()] = r
	}

	runCtx, cancel := context.WithCancel(ctx)
	re := &runningEngine{Engine: e, name: name, done: make(chan error, 1), target: e.Target()}
	go func() { re.done <- e.Run(runCtx) }()
	var once sync.Once
	re.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-re.done:
				require.NoError(t, err, "engine Run")
			case <-time.After(60 * time.Second):
				t.Error("engine did not stop within 60s")
			}
		})
	}
	t.Cleanup(re.stop)

	select {
	case <-e.Ready():
	case err := <-re.done:
		t.Fatalf("engine stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("engine for sync target %s not ready within 60s: %+v", name, e.Snapshot())
	}
	return re, runners
}

func configMap(ns, name string, labels map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
}

func TestEngineInformersForThreeResourcesSync(t *testing.T) {
	env := framework.Shared(t)
	e, _ := startEngine(t, engine.Config{Resources: []string{"deployments.apps,services"}})

	want := map[string]bool{"configmaps": true, "secrets": true, "serviceaccounts": true, "services": true, "deployments.apps": true}
	require.Eventually(t, func() bool {
		synced := 0
		for _, r := range e.Snapshot().Resources {
			if want[r.GVR.GroupResource().String()] && r.State == "Accepted" && r.UpstreamSynced && r.DownstreamSynced {
				synced++
			}
		}
		return synced == len(want)
	}, 30*time.Second, 50*time.Millisecond, "upstream and downstream informers of %v should sync", want)

	st, err := env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), e.name, metav1.GetOptions{})
	require.NoError(t, err)
	entries, _, err := unstructured.NestedSlice(st.Object, "status", "syncedResources")
	require.NoError(t, err)
	got := map[string]string{}
	for _, x := range entries {
		m := x.(map[string]any)
		gr := schema.GroupResource{Group: fmt.Sprint(m["group"]), Resource: fmt.Sprint(m["resource"])}
		if m["group"] == nil {
			gr.Group = ""
		}
		got[gr.String()] = fmt.Sprint(m["state"])
	}
	for gr := range want {
		assert.Equal(t, "Accepted", got[gr], "status.syncedResources entry of %s", gr)
	}
	conds, _, _ := unstructured.NestedSlice(st.Object, "status", "conditions")
	require.NotEmpty(t, conds)
	assert.Equal(t, "True", conds[0].(map[string]any)["status"], "ResourcesCompatible condition: %v", conds)
}

func TestEngineDeliversOnlyObjectsLabelledForItsTarget(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	rec := newKeyRecorder("recorder", nil)
	e, _ := startEngine(t, engine.Config{}, rec)
	other := identity.NewTarget(engineFromCluster, "someone-else", "x")

	ns := env.KCP.CreateNamespace(t, "labels")
	cms := env.KCP.Kube(t).CoreV1().ConfigMaps(ns)
	// The other target's object is created first: the informer delivers in order, so
	// once "mine" has arrived, "theirs" would have too had it passed the filter.
	_, err := cms.Create(ctx, configMap(ns, "theirs", map[string]string{other.StateLabel(): "Sync"}), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cms.Create(ctx, configMap(ns, "unlabelled", nil), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cms.Create(ctx, configMap(ns, "mine", map[string]string{e.target.StateLabel(): "Sync"}), metav1.CreateOptions{})
	require.NoError(t, err)

	require.Eventually(t, func() bool { return rec.seen(named(ns, "mine")) }, 30*time.Second, 20*time.Millisecond,
		"configmap labelled for this target should reach the controller")
	assert.True(t, rec.seen(func(k queue.Key) bool {
		return k == queue.Key{Direction: queue.Down, GVR: configmapsGVR, Cluster: engineFromCluster, Namespace: ns, Name: "mine"}
	}), "key carries direction, GVR, logical cluster, namespace and name")
	assert.False(t, rec.seen(named(ns, "theirs")), "object of another target must not reach the controller")
	assert.False(t, rec.seen(named(ns, "unlabelled")), "unlabelled object must not reach the controller")

	// Downstream: an object in a namespace whose locator points upstream maps back to the upstream key.
	loc, err := e.target.Locator(engineFromCluster, ns).JSON()
	require.NoError(t, err)
	dns := "kcp-" + strings.ToLower(rand.String(12))
	pkube := env.Physical.Kube(t)
	_, err = pkube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: dns, Labels: e.target.DownstreamLabels(), Annotations: map[string]string{identity.NamespaceLocatorAnnotation: loc},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pkube.CoreV1().Namespaces().Delete(context.Background(), dns, metav1.DeleteOptions{}) })
	require.Eventually(t, func() bool {
		n, ok, err := e.Informers().DownstreamNamespace(engineFromCluster, ns)
		return err == nil && ok && n == dns
	}, 30*time.Second, 20*time.Millisecond, "downstream namespace %s should be indexed by its locator", dns)
	_, err = pkube.CoreV1().ConfigMaps(dns).Create(ctx, configMap(dns, "down", e.target.DownstreamLabels()), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return rec.seen(func(k queue.Key) bool {
			return k == queue.Key{Direction: queue.Up, GVR: configmapsGVR, Cluster: engineFromCluster, Namespace: ns, Name: "down"}
		})
	}, 30*time.Second, 20*time.Millisecond, "downstream object should arrive keyed by its upstream namespace")
}

func widgetCRD(group string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets." + group},
		"spec": map[string]any{
			"group": group, "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{
				"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
}

// setSyncedResource adds (accepted) or removes the entry of gr in status.syncedResources.
func setSyncedResource(t *testing.T, name string, gr schema.GroupResource, accepted bool) {
	t.Helper()
	sts := framework.Shared(t).KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		st, err := sts.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		entries, _, _ := unstructured.NestedSlice(st.Object, "status", "syncedResources")
		var out []any
		for _, x := range entries {
			m := x.(map[string]any)
			if m["group"] == gr.Group && m["resource"] == gr.Resource {
				continue
			}
			out = append(out, x)
		}
		if accepted {
			out = append(out, map[string]any{"group": gr.Group, "resource": gr.Resource, "versions": []any{"v1"}, "state": "Accepted"})
		}
		if err := unstructured.SetNestedSlice(st.Object, out, "status", "syncedResources"); err != nil {
			return err
		}
		_, err = sts.UpdateStatus(context.Background(), st, metav1.UpdateOptions{})
		return err
	})
	require.NoError(t, err)
}

func TestEngineStartsAndStopsInformerOfNewCRDAtRunTime(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	rec := newKeyRecorder("recorder", nil)
	e, _ := startEngine(t, engine.Config{}, rec)

	group := "e2e" + strings.ToLower(rand.String(5)) + ".example.com"
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
	for _, c := range []*framework.Cluster{env.KCP, env.Physical} {
		crd := widgetCRD(group)
		require.NoError(t, framework.ApplyCRD(ctx, c.Dynamic(t), crd))
		t.Cleanup(func() {
			_ = c.Dynamic(t).Resource(framework.CRDsResource).Delete(context.Background(), crd.GetName(), metav1.DeleteOptions{})
		})
	}
	upID := informers.ID{Side: informers.Upstream, GVR: gvr}
	downID := informers.ID{Side: informers.Downstream, GVR: gvr}
	_, running := e.Informers().Informer(upID)
	require.False(t, running, "no informer before the syncedResources entry exists")

	setSyncedResource(t, e.name, gvr.GroupResource(), true)
	require.Eventually(t, func() bool {
		up, ok1 := e.Informers().Informer(upID)
		down, ok2 := e.Informers().Informer(downID)
		return ok1 && ok2 && up.HasSynced() && down.HasSynced()
	}, 60*time.Second, 50*time.Millisecond, "informers of %s should start and sync without a restart", gvr)

	ns := env.KCP.CreateNamespace(t, "crd")
	w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": group + "/v1", "kind": "Widget"}}
	w.SetName("w1")
	w.SetLabels(map[string]string{e.target.StateLabel(): "Sync"})
	_, err := env.KCP.Dynamic(t).Resource(gvr).Namespace(ns).Create(ctx, w, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return rec.seen(func(k queue.Key) bool { return k.GVR == gvr && k.Namespace == ns && k.Name == "w1" })
	}, 30*time.Second, 20*time.Millisecond, "a widget for this target should reach the controller")

	upInf, _ := e.Informers().Informer(upID)
	setSyncedResource(t, e.name, gvr.GroupResource(), false)
	require.Eventually(t, func() bool {
		_, ok := e.Informers().Informer(upID)
		return !ok && upInf.IsStopped()
	}, 30*time.Second, 50*time.Millisecond, "informer of %s should stop once its entry is gone", gvr)
}

func TestEngineRetriesFailingReconcileWithBackoffThenSucceeds(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	rec := newKeyRecorder("flaky", func(_ context.Context, k queue.Key, attempt int) error {
		if k.Name == "flaky" && attempt <= 3 {
			return fmt.Errorf("attempt %d fails", attempt)
		}
		return nil
	})
	e, runners := startEngine(t, engine.Config{RateLimit: queue.RateLimit{BaseDelay: 100 * time.Millisecond, MaxDelay: 10 * time.Second}}, rec)

	ns := env.KCP.CreateNamespace(t, "retry")
	_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx, configMap(ns, "flaky", map[string]string{e.target.StateLabel(): "Sync"}), metav1.CreateOptions{})
	require.NoError(t, err)
	key := queue.Key{Direction: queue.Down, GVR: configmapsGVR, Cluster: engineFromCluster, Namespace: ns, Name: "flaky"}
	require.Eventually(t, func() bool { return len(rec.times(key)) >= 4 }, 30*time.Second, 20*time.Millisecond,
		"failing key should be retried until it succeeds")

	ts := rec.times(key)
	require.Len(t, ts, 4, "no further reconcile after success")
	for i, min := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		assert.GreaterOrEqual(t, ts[i+1].Sub(ts[i]), min, "retry %d should back off at least %s", i+1, min)
	}
	var stats queue.GVRStats
	for _, s := range runners["flaky"].Stats() {
		if s.GVR == configmapsGVR {
			stats = s
		}
	}
	assert.Equal(t, int64(3), stats.ReconcilesFailed)
	assert.GreaterOrEqual(t, stats.ReconcilesOK, int64(1))
	assert.Contains(t, stats.LastError, "attempt 3 fails")
}

func TestEngineShutdownDrainsQueuedKeys(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	release := make(chan struct{})
	var once sync.Once
	rec := newKeyRecorder("slow", func(ctx context.Context, _ queue.Key, _ int) error {
		<-release
		return ctx.Err()
	})
	rec.workers = 1
	e, runners := startEngine(t, engine.Config{}, rec)
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	ns := env.KCP.CreateNamespace(t, "drain")
	const n = 5
	for i := range n {
		_, err := env.KCP.Kube(t).CoreV1().ConfigMaps(ns).Create(ctx,
			configMap(ns, fmt.Sprintf("cm-%d", i), map[string]string{e.target.StateLabel(): "Sync"}), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	// One key in flight (blocked), the other four queued.
	require.Eventually(t, func() bool {
		for _, s := range runners["slow"].Stats() {
			if s.GVR == configmapsGVR {
				return s.Pending == n-1
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "four keys should be queued behind the blocked one")

	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	require.Never(t, func() bool {
		select {
		case <-stopped:
			return true
		default:
			return false
		}
	}, 300*time.Millisecond, 20*time.Millisecond, "engine must not stop while keys are queued")
	once.Do(func() { close(release) })
	select {
	case <-stopped:
	case <-time.After(60 * time.Second):
		t.Fatal("engine did not stop after the queue drained")
	}
	for i := range n {
		assert.Len(t, rec.times(queue.Key{Direction: queue.Down, GVR: configmapsGVR, Cluster: engineFromCluster, Namespace: ns, Name: fmt.Sprintf("cm-%d", i)}), 1,
			"cm-%d should be reconciled once during the drain", i)
	}
}
