package integration

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/downstream"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/engine"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// logRecorder keeps every log line of a syncer run (funcr's key=value rendering).
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) context(ctx context.Context) context.Context {
	logger := funcr.New(func(prefix, args string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lines = append(r.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 4})
	return klog.NewContext(ctx, logger)
}

// has reports whether one line contains every part.
func (r *logRecorder) has(parts ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func (r *logRecorder) waitLine(t *testing.T, parts ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return r.has(parts...) }, eventually, tick, "a log line with %q", parts)
}

// startLogged is start with the syncer's logs recorded.
func (h *syncerHarness) startLogged(resources ...schema.GroupVersionResource) *logRecorder {
	h.t.Helper()
	logs, _ := h.startOnEngineLogged(resourceNames(resources)...)
	return logs
}

// objectKey is how the syncer's logs name an upstream object (queue key).
func upstreamKey(ns, name string) string { return ns + "/" + name }

// keepsSyncing proves the rest is not stopped: a fresh ConfigMap in a fresh namespace syncs.
func (h *syncerHarness) keepsSyncing(msg string) {
	h.t.Helper()
	ns := h.upstreamNamespace("alive")
	name := "alive-" + rand.String(5)
	h.createUp(configMapsGVR, h.configMap(ns, name, map[string]any{"ok": "yes"}, nil))
	h.waitDown(configMapsGVR, ns, name, dataEquals("ok", "yes"), "another object keeps syncing: "+msg)
}

// installWidgets installs a Widget CRD of a fresh group on both clusters.
func installWidgets(t *testing.T, prefix string) schema.GroupVersionResource {
	t.Helper()
	env := framework.Shared(t)
	group := prefix + strings.ToLower(rand.String(5)) + ".example.com"
	for _, c := range []*framework.Cluster{env.KCP, env.Physical} {
		crd := widgetCRD(group)
		require.NoError(t, framework.ApplyCRD(context.Background(), c.Dynamic(t), crd))
		t.Cleanup(func() {
			_ = c.Dynamic(t).Resource(framework.CRDsResource).Delete(context.Background(), crd.GetName(), metav1.DeleteOptions{})
		})
	}
	return schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
}

func (h *syncerHarness) widget(gvr schema.GroupVersionResource, ns, name string, spec map[string]any) *unstructured.Unstructured {
	w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": gvr.GroupVersion().String(), "kind": "Widget", "spec": spec}}
	w.SetName(name)
	w.SetNamespace(ns)
	w.SetLabels(map[string]string{h.target.StateLabel(): "Sync"})
	return w
}

// TestBadInputHugeObjectsNearTheSizeLimitsSync: a custom resource of 1.4 MiB (etcd's
// default request limit is 1.5 MiB) and a ConfigMap just under its own 1 MiB limit go down
// whole, next to a small object.
func TestBadInputHugeObjectsNearTheSizeLimitsSync(t *testing.T) {
	gvr := installWidgets(t, "huge")
	h := newSyncer(t, "huge", downstream.Options{})
	h.startLogged(configMapsGVR, gvr)
	ns := h.upstreamNamespace("huge")
	bigCM := strings.Repeat("x", 1000*1024)
	bigCR := strings.Repeat("y", 1400*1024)
	h.createUp(configMapsGVR, h.configMap(ns, "huge", map[string]any{"blob": bigCM}, nil))
	h.createUp(gvr, h.widget(gvr, ns, "huge", map[string]any{"blob": bigCR}))
	h.createUp(configMapsGVR, h.configMap(ns, "small", map[string]any{"v": "1"}, nil))
	h.waitDown(configMapsGVR, ns, "small", dataEquals("v", "1"), "small object next to the huge ones")
	h.waitDown(configMapsGVR, ns, "huge", dataEquals("blob", bigCM), "1000 KiB ConfigMap synced whole")
	h.waitDown(gvr, ns, "huge", func(u *unstructured.Unstructured) bool {
		v, _, _ := unstructured.NestedString(u.Object, "spec", "blob")
		return v == bigCR
	}, "1.4 MiB custom resource synced whole")
	h.waitUp(gvr, ns, "huge", hasFinalizerFor(h), "finalizer on the huge object")
	h.keepsSyncing("after the huge objects")
}

// TestBadInputRejectedObjectIsLoggedWithItsKey: the physical cluster rejects an object (a
// spec-diff makes its port invalid downstream only): SyncFailed Event upstream with the
// server's message, a log line naming the object, and the rest keeps syncing.
// (TestDownstreamRejectedObjectIsReportedWithoutBlockingOthers covers the annotation, 100
// neighbours and the absence of a hot loop.)
func TestBadInputRejectedObjectIsLoggedWithItsKey(t *testing.T) {
	h := newSyncer(t, "rejectlog", downstream.Options{})
	logs := h.startLogged(configMapsGVR, servicesGVR)
	ns := h.upstreamNamespace("rejectlog")
	h.createUp(servicesGVR, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{
			"name": "rejected", "namespace": ns,
			"labels":      map[string]any{h.target.StateLabel(): "Sync"},
			"annotations": map[string]any{h.target.SpecDiffAnnotation(): `[{"op":"replace","path":"/ports/0/port","value":70000}]`},
		},
		"spec": map[string]any{"ports": []any{map[string]any{"port": int64(80)}}, "selector": map[string]any{"app": "x"}},
	}})
	h.waitEvent(ns, "rejected", spec.ReasonSyncFailed, "70000")
	logs.waitLine(t, upstreamKey(ns, "rejected"), "70000")
	h.keepsSyncing("after a rejected object")
}

// TestBadInputUnusualNamesSync: a 253-character name full of dots (the longest DNS subdomain)
// in a 63-character namespace syncs under the same name; the downstream namespace name stays
// a valid label.
func TestBadInputUnusualNamesSync(t *testing.T) {
	h := newSyncer(t, "names", downstream.Options{})
	h.startLogged(configMapsGVR)
	prefix := "n" + strings.Repeat("x", 50)
	ns := h.upstreamNamespace(prefix)
	require.LessOrEqual(t, len(ns), 63)
	var b strings.Builder
	for b.Len() < 253 {
		b.WriteString("a.b-c.")
	}
	name := strings.TrimRight(b.String()[:252], ".-") + "z"
	require.LessOrEqual(t, len(name), 253)
	h.createUp(configMapsGVR, h.configMap(ns, name, map[string]any{"v": "dots"}, nil))
	h.createUp(configMapsGVR, h.configMap(ns, "x.y", map[string]any{"v": "short"}, nil))
	h.waitDown(configMapsGVR, ns, name, dataEquals("v", "dots"), "253-character dotted name")
	h.waitDown(configMapsGVR, ns, "x.y", dataEquals("v", "short"), "dotted short name")
	h.waitUp(configMapsGVR, ns, name, hasFinalizerFor(h), "finalizer on the long name")
	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{}))
	h.waitDownGone(configMapsGVR, ns, name, "deleted")
	h.waitUp(configMapsGVR, ns, name, isNotFound, "finalizer released")
}

// TestBadInputNamespaceCollisionIsReportedAndForeignNamespaceUntouched: a foreign namespace
// already holds the mapped downstream name. The syncer never adopts it: the object gets a
// SyncFailed Event naming the collision, the log names the object, the foreign namespace is
// byte-identical, and other namespaces keep syncing.
func TestBadInputNamespaceCollisionIsReportedAndForeignNamespaceUntouched(t *testing.T) {
	h := newSyncer(t, "nscoll", downstream.Options{})
	logs := h.startLogged(configMapsGVR)
	ns := h.upstreamNamespace("nscoll")
	nsClient := h.env.Physical.Kube(t).CoreV1().Namespaces()
	foreign, err := nsClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: h.downstreamNamespace(ns), Labels: map[string]string{"owner": "someone-else"},
		Annotations: map[string]string{kcp.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"other","name":"other","uid":"1"},"cluster":"other","namespace":"x"}`},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	h.createUp(configMapsGVR, h.configMap(ns, "victim", map[string]any{"v": "1"}, nil))
	e := h.waitEvent(ns, "victim", spec.ReasonSyncFailed, "")
	assert.Contains(t, strings.ToLower(e.Message), "collision", "the Event says what is wrong: %s", e.Message)
	logs.waitLine(t, upstreamKey(ns, "victim"))
	h.keepsSyncing("despite the namespace collision")

	after, err := nsClient.Get(context.Background(), foreign.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, foreign.ResourceVersion, after.ResourceVersion, "the foreign namespace is untouched")
	cms, err := h.env.Physical.Kube(t).CoreV1().ConfigMaps(foreign.Name).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	for _, cm := range cms.Items {
		assert.NotEqual(t, "victim", cm.Name, "nothing of ours went into the foreign namespace")
	}
}

// TestBadInputMalformedAnnotationsAreReported: a spec-diff that is not JSON Patch, an
// ignore-fields list that is not JSON and an unknown conflict policy each give a SyncFailed
// Event naming the annotation and a log line with the object key; a well-formed object in
// the same namespace syncs.
func TestBadInputMalformedAnnotationsAreReported(t *testing.T) {
	h := newSyncer(t, "malformed", downstream.Options{})
	logs := h.startLogged(configMapsGVR, servicesGVR)
	ns := h.upstreamNamespace("malformed")
	service := func(name string, annotations map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Service",
			"metadata": map[string]any{
				"name": name, "namespace": ns, "annotations": annotations,
				"labels": map[string]any{h.target.StateLabel(): "Sync"},
			},
			"spec": map[string]any{"ports": []any{map[string]any{"port": int64(80)}}, "selector": map[string]any{"app": "x"}},
		}}
	}
	cases := []struct {
		name, annotation, value, wantInEvent string
	}{
		{name: "bad-specdiff", annotation: h.target.SpecDiffAnnotation(), value: `{"op": not json`, wantInEvent: "spec-diff"},
		{name: "bad-specdiff-op", annotation: h.target.SpecDiffAnnotation(), value: `[{"op":"explode","path":"/ports"}]`, wantInEvent: "spec-diff"},
		{name: "bad-ignore", annotation: conflict.IgnoreFieldsAnnotation, value: `["spec.ports"`, wantInEvent: conflict.IgnoreFieldsAnnotation},
		{name: "bad-ignore-empty", annotation: conflict.IgnoreFieldsAnnotation, value: `spec.ports, ..`, wantInEvent: conflict.IgnoreFieldsAnnotation},
		{name: "bad-policy", annotation: conflict.PolicyAnnotation, value: "Steal", wantInEvent: conflict.PolicyAnnotation},
	}
	for _, c := range cases {
		h.createUp(servicesGVR, service(c.name, map[string]any{c.annotation: c.value}))
	}
	h.createUp(servicesGVR, service("good", map[string]any{}))
	h.waitDown(servicesGVR, ns, "good", nil, "the well-formed Service syncs")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := h.waitEvent(ns, c.name, spec.ReasonSyncFailed, c.wantInEvent)
			t.Logf("%s: %s", c.name, e.Message)
			logs.waitLine(t, upstreamKey(ns, c.name))
			_, err := h.getDown(servicesGVR, ns, c.name)
			assert.Error(t, err, "nothing went down for a malformed annotation")
		})
	}
	h.keepsSyncing("after the malformed annotations")
}

// startOnEngineLogged is startOnEngine with the logs recorded and the engine's Run error
// returned through the channel (it must stay nil).
func (h *syncerHarness) startOnEngineLogged(resources ...string) (*logRecorder, <-chan error) {
	h.t.Helper()
	upClients, err := engine.ClientsFor(h.env.KCP.Config)
	require.NoError(h.t, err)
	downClients, err := engine.ClientsFor(h.env.Physical.Config)
	require.NoError(h.t, err)
	e, err := engine.New(engine.Config{
		SyncTargetName: h.target.Name, SyncTargetUID: h.target.UID, FromCluster: h.target.Cluster, Resources: resources,
	}, upClients, downClients)
	require.NoError(h.t, err)
	opts := h.opts
	opts.Registerer = prometheus.NewRegistry()
	reg, err := downstream.Register(e, downstream.Clients{Upstream: h.up, Downstream: h.down, UpstreamEvents: h.upKube}, opts)
	require.NoError(h.t, err)
	h.reg = reg
	logs := &logRecorder{}
	ctx, cancel := context.WithCancel(logs.context(context.Background()))
	// done delivers Run's result to the stop below; early to a test, and only when
	// the engine stopped before it was told to.
	done, early := make(chan error, 1), make(chan error, 1)
	var stopping atomic.Bool
	go func() {
		err := e.Run(ctx)
		if !stopping.Load() {
			early <- err
		}
		done <- err
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			stopping.Store(true)
			cancel()
			select {
			case err := <-done:
				require.NoError(h.t, err, "engine Run")
			case <-time.After(time.Minute):
				h.t.Error("engine did not stop within a minute")
			}
			reg.Close()
		})
	}
	h.t.Cleanup(h.stop)
	select {
	case <-e.Ready():
	case err := <-early:
		require.NoError(h.t, err, "engine stopped before it was ready")
	case <-time.After(eventually):
		h.t.Fatal("engine not ready in time")
	}
	return logs, early
}

// TestBadInputSyncTargetDeletedWhileSyncing: the SyncTarget goes away under a running
// syncer. The syncer logs that its SyncTarget is gone, keeps running (no crash, no exit),
// and objects already assigned keep syncing until their labels are removed.
func TestBadInputSyncTargetDeletedWhileSyncing(t *testing.T) {
	h := newSyncer(t, "stgone", downstream.Options{})
	logs, done := h.startOnEngineLogged("configmaps")
	ns := h.upstreamNamespace("stgone")
	h.createUp(configMapsGVR, h.configMap(ns, "before", map[string]any{"v": "1"}, nil))
	h.waitDown(configMapsGVR, ns, "before", dataEquals("v", "1"), "synced before the SyncTarget goes")

	sts := h.env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource)
	require.NoError(t, sts.Delete(context.Background(), h.target.Name, metav1.DeleteOptions{}))
	logs.waitLine(t, "sync target", h.target.Name, "not found")

	h.patchUp(configMapsGVR, ns, "before", map[string]any{"data": map[string]any{"v": "2"}})
	h.waitDown(configMapsGVR, ns, "before", dataEquals("v", "2"), "updates still go down")
	h.createUp(configMapsGVR, h.configMap(ns, "after", map[string]any{"v": "1"}, nil))
	h.waitDown(configMapsGVR, ns, "after", dataEquals("v", "1"), "new objects still go down")
	select {
	case err := <-done:
		t.Fatalf("the syncer stopped when its SyncTarget was deleted: %v", err)
	default:
	}
}

// TestBadInputCRDRemovedDownstreamAtRunTime: the physical cluster's CRD of a synced type is
// deleted while the syncer runs. A widget created afterwards gets a SyncFailed Event saying
// the type is not served and a log line with its key; ConfigMaps keep syncing; once the CRD is
// back the widget syncs at the next retry.
func TestBadInputCRDRemovedDownstreamAtRunTime(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	gvr := installWidgets(t, "crdgone")
	h := newSyncer(t, "crdgone", downstream.Options{PermanentRetryDelay: 3 * time.Second})
	logs, done := h.startOnEngineLogged("configmaps", "widgets."+gvr.Group)
	ns := h.upstreamNamespace("crdgone")
	h.createUp(gvr, h.widget(gvr, ns, "w1", map[string]any{"size": int64(1)}))
	h.waitDown(gvr, ns, "w1", nil, "widget synced while the CRD exists")

	crds := env.Physical.Dynamic(t).Resource(framework.CRDsResource)
	require.NoError(t, crds.Delete(ctx, "widgets."+gvr.Group, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := crds.Get(ctx, "widgets."+gvr.Group, metav1.GetOptions{})
		return err != nil
	}, eventually, tick, "downstream CRD deleted")

	h.createUp(gvr, h.widget(gvr, ns, "w2", map[string]any{"size": int64(2)}))
	e := h.waitEvent(ns, "w2", spec.ReasonSyncFailed, "does not serve")
	t.Logf("report: %s", e.Message)
	logs.waitLine(t, upstreamKey(ns, "w2"))
	h.keepsSyncing("with a synced CRD gone downstream")

	require.NoError(t, framework.ApplyCRD(ctx, env.Physical.Dynamic(t), widgetCRD(gvr.Group)))
	require.Eventually(t, func() bool {
		_, err := h.getDown(gvr, ns, "w2")
		return err == nil
	}, 2*time.Minute, 200*time.Millisecond, "the widget syncs once the CRD is back")
	select {
	case err := <-done:
		t.Fatalf("the syncer stopped: %v", err)
	default:
	}
}
