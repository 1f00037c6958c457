package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/downstream"
	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

var (
	configMapsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	servicesGVR    = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// upstreamCluster is the logical cluster of everything on the plain kube-apiserver that
// stands for kcp (the syncer's --from-cluster).
const upstreamCluster = "root"

const eventually = 30 * time.Second
const tick = 50 * time.Millisecond

// syncerHarness is one in-process downstream syncer for one SyncTarget of the test bed.
type syncerHarness struct {
	t        *testing.T
	env      *framework.Environment
	target   identity.Target
	up, down dynamic.Interface
	upKube   kubernetes.Interface
	opts     downstream.Options
	// downRequests counts downstream requests by "METHOD path".
	downRequests *requestCounter
	stop         func()
	syncer       *downstream.Syncer
}

type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *requestCounter) count(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.counts {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

type countingTransport struct {
	next    http.RoundTripper
	counter *requestCounter
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("watch") != "true" {
		t.counter.mu.Lock()
		t.counter.counts[r.Method+" "+r.URL.Path]++
		t.counter.mu.Unlock()
	}
	return t.next.RoundTrip(r)
}

// newSyncer creates a SyncTarget upstream and returns a harness for it; start runs it.
func newSyncer(t *testing.T, name string, opts downstream.Options) *syncerHarness {
	t.Helper()
	env := framework.Shared(t)
	ctx := context.Background()
	sts := env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource)
	st := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
		"metadata": map[string]any{"generateName": name + "-"},
	}}
	created, err := sts.Create(ctx, st, metav1.CreateOptions{})
	require.NoError(t, err, "create SyncTarget")
	t.Cleanup(func() { _ = sts.Delete(context.Background(), created.GetName(), metav1.DeleteOptions{}) })

	counter := &requestCounter{counts: map[string]int{}}
	downCfg := rest.CopyConfig(env.Physical.Config)
	downCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, counter: counter} })
	down, err := dynamic.NewForConfig(downCfg)
	require.NoError(t, err)
	if opts.NamespaceCleanDelay == 0 {
		opts.NamespaceCleanDelay = time.Hour // tests that want namespace deletion say so
	}
	return &syncerHarness{
		t: t, env: env,
		target: identity.NewTarget(upstreamCluster, created.GetName(), created.GetUID()),
		up:     env.KCP.Dynamic(t), down: down, upKube: env.KCP.Kube(t),
		opts: opts, downRequests: counter,
	}
}

// start runs the syncer until stopSyncer or the end of the test.
func (h *syncerHarness) start(resources ...schema.GroupVersionResource) {
	h.t.Helper()
	if len(resources) == 0 {
		resources = []schema.GroupVersionResource{configMapsGVR}
	}
	opts := h.opts
	opts.Registerer = prometheus.NewRegistry()
	s, err := downstream.New(downstream.Clients{Upstream: h.up, Downstream: h.down, UpstreamEvents: h.upKube}, h.target, resources, opts)
	require.NoError(h.t, err)
	h.syncer = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(h.t, err, "syncer Run")
			case <-time.After(time.Minute):
				h.t.Error("syncer did not stop within a minute")
			}
		})
	}
	h.t.Cleanup(h.stop)
	require.Eventually(h.t, s.HasSynced, eventually, tick, "syncer caches sync")
}

// upstreamNamespace creates an upstream namespace and removes its downstream namespace at
// the end of the test.
func (h *syncerHarness) upstreamNamespace(prefix string) string {
	h.t.Helper()
	ns := h.env.KCP.CreateNamespace(h.t, prefix)
	down := h.downstreamNamespace(ns)
	h.t.Cleanup(func() {
		_ = h.env.Physical.Kube(h.t).CoreV1().Namespaces().Delete(context.Background(), down, metav1.DeleteOptions{})
	})
	return ns
}

func (h *syncerHarness) downstreamNamespace(upstreamNS string) string {
	name, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: h.target.Cluster, Name: h.target.Name, UID: string(h.target.UID)},
		Cluster:    upstreamCluster, Namespace: upstreamNS,
	})
	require.NoError(h.t, err)
	return name
}

func (h *syncerHarness) configMap(ns, name string, data map[string]any, annotations map[string]any) *unstructured.Unstructured {
	md := map[string]any{"name": name, "namespace": ns, "labels": map[string]any{h.target.StateLabel(): "Sync"}}
	if annotations != nil {
		md["annotations"] = annotations
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}}
}

func (h *syncerHarness) createUp(gvr schema.GroupVersionResource, obj *unstructured.Unstructured) *unstructured.Unstructured {
	h.t.Helper()
	out, err := h.up.Resource(gvr).Namespace(obj.GetNamespace()).Create(context.Background(), obj, metav1.CreateOptions{})
	require.NoError(h.t, err, "create upstream %s %s/%s", gvr.Resource, obj.GetNamespace(), obj.GetName())
	return out
}

func (h *syncerHarness) patchUp(gvr schema.GroupVersionResource, ns, name string, patch map[string]any) {
	h.t.Helper()
	body, err := json.Marshal(patch)
	require.NoError(h.t, err)
	_, err = h.up.Resource(gvr).Namespace(ns).Patch(context.Background(), name, types.MergePatchType, body, metav1.PatchOptions{})
	require.NoError(h.t, err, "patch upstream %s/%s", ns, name)
}

func (h *syncerHarness) getUp(gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	return h.up.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
}

// getDown reads the downstream copy with the test's own admin client (not counted).
func (h *syncerHarness) getDown(gvr schema.GroupVersionResource, upstreamNS, name string) (*unstructured.Unstructured, error) {
	return h.env.Physical.Dynamic(h.t).Resource(gvr).Namespace(h.downstreamNamespace(upstreamNS)).Get(context.Background(), name, metav1.GetOptions{})
}

func (h *syncerHarness) waitDown(gvr schema.GroupVersionResource, upstreamNS, name string, cond func(*unstructured.Unstructured) bool, msg string) *unstructured.Unstructured {
	h.t.Helper()
	var got *unstructured.Unstructured
	require.Eventually(h.t, func() bool {
		u, err := h.getDown(gvr, upstreamNS, name)
		if err != nil {
			return false
		}
		got = u
		return cond == nil || cond(u)
	}, eventually, tick, "downstream %s %s/%s: %s", gvr.Resource, upstreamNS, name, msg)
	return got
}

func (h *syncerHarness) waitDownGone(gvr schema.GroupVersionResource, upstreamNS, name, msg string) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		_, err := h.getDown(gvr, upstreamNS, name)
		return apierrors.IsNotFound(err)
	}, eventually, tick, "downstream %s %s/%s is deleted: %s", gvr.Resource, upstreamNS, name, msg)
}

func (h *syncerHarness) waitUp(gvr schema.GroupVersionResource, ns, name string, cond func(*unstructured.Unstructured, error) bool, msg string) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		u, err := h.getUp(gvr, ns, name)
		return cond(u, err)
	}, eventually, tick, "upstream %s %s/%s: %s", gvr.Resource, ns, name, msg)
}

func dataEquals(key, value string) func(*unstructured.Unstructured) bool {
	return func(u *unstructured.Unstructured) bool {
		v, _, _ := unstructured.NestedString(u.Object, "data", key)
		return v == value
	}
}

func hasFinalizerFor(h *syncerHarness) func(*unstructured.Unstructured, error) bool {
	return func(u *unstructured.Unstructured, err error) bool {
		if err != nil {
			return false
		}
		for _, f := range u.GetFinalizers() {
			if f == h.target.SyncerFinalizer() {
				return true
			}
		}
		return false
	}
}

func isNotFound(_ *unstructured.Unstructured, err error) bool { return apierrors.IsNotFound(err) }

// upstreamEvents returns the reasons and messages of the Events recorded on an upstream object.
func (h *syncerHarness) upstreamEvents(ns, name string) []corev1.Event {
	list, err := h.upKube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return nil
	}
	return list.Items
}

func (h *syncerHarness) waitEvent(ns, name, reason, contains string) corev1.Event {
	h.t.Helper()
	var found corev1.Event
	require.Eventually(h.t, func() bool {
		for _, e := range h.upstreamEvents(ns, name) {
			if e.Reason == reason && strings.Contains(e.Message, contains) && e.Type == corev1.EventTypeWarning {
				found = e
				return true
			}
		}
		return false
	}, eventually, tick, "Warning Event %s mentioning %q on upstream %s/%s", reason, contains, ns, name)
	return found
}

func TestDownstreamCreateUpdateDeleteWithFinalizer(t *testing.T) {
	h := newSyncer(t, "crud", downstream.Options{})
	h.start()
	ns := h.upstreamNamespace("crud")

	h.createUp(configMapsGVR, h.configMap(ns, "web", map[string]any{"color": "blue"}, nil))
	h.waitUp(configMapsGVR, ns, "web", hasFinalizerFor(h), "carries the syncer finalizer")
	down := h.waitDown(configMapsGVR, ns, "web", dataEquals("color", "blue"), "created with upstream data")
	assert.Equal(t, h.target.Key, down.GetLabels()[identity.DownstreamClusterLabel], "downstream cluster label")
	assert.NotContains(t, down.GetLabels(), h.target.StateLabel(), "state label replaced")
	assert.NotEmpty(t, down.GetAnnotations()[applier.HashAnnotation], "applied hash recorded")
	ds, err := h.env.Physical.Kube(t).CoreV1().Namespaces().Get(context.Background(), h.downstreamNamespace(ns), metav1.GetOptions{})
	require.NoError(t, err, "downstream namespace created")
	assert.Equal(t, h.target.Key, ds.Labels[identity.DownstreamClusterLabel])
	assert.Contains(t, ds.Annotations[identity.NamespaceLocatorAnnotation], `"namespace":"`+ns+`"`)
	tenant, err := namespace.TenantID(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: h.target.Cluster, Name: h.target.Name, UID: string(h.target.UID)},
		Cluster:    upstreamCluster,
	})
	require.NoError(t, err)
	assert.Equal(t, tenant, ds.Labels[identity.TenantIDLabel], "kcp's tenant ID")

	h.patchUp(configMapsGVR, ns, "web", map[string]any{"data": map[string]any{"color": "green"}})
	h.waitDown(configMapsGVR, ns, "web", dataEquals("color", "green"), "updated from upstream")

	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), "web", metav1.DeleteOptions{}))
	h.waitDownGone(configMapsGVR, ns, "web", "upstream deleted it")
	h.waitUp(configMapsGVR, ns, "web", isNotFound, "gone once the syncer released its finalizer")
}

func TestDownstreamDeletedIsRecreatedAndEditedIsReverted(t *testing.T) {
	h := newSyncer(t, "drift", downstream.Options{})
	h.start()
	ns := h.upstreamNamespace("drift")
	h.createUp(configMapsGVR, h.configMap(ns, "cfg", map[string]any{"mode": "prod"}, nil))
	first := h.waitDown(configMapsGVR, ns, "cfg", dataEquals("mode", "prod"), "created")

	other := h.env.Physical.Dynamic(t).Resource(configMapsGVR).Namespace(h.downstreamNamespace(ns))
	require.NoError(t, other.Delete(context.Background(), "cfg", metav1.DeleteOptions{}))
	h.waitDown(configMapsGVR, ns, "cfg", func(u *unstructured.Unstructured) bool { return u.GetUID() != first.GetUID() }, "recreated after someone deleted it")

	live, err := other.Get(context.Background(), "cfg", metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, unstructured.SetNestedField(live.Object, "debug", "data", "mode"))
	require.NoError(t, unstructured.SetNestedField(live.Object, "kept", "data", "extra"))
	_, err = other.Update(context.Background(), live, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
	require.NoError(t, err)
	reverted := h.waitDown(configMapsGVR, ns, "cfg", dataEquals("mode", "prod"), "edit of a field we own is reverted")
	v, _, _ := unstructured.NestedString(reverted.Object, "data", "extra")
	assert.Equal(t, "kept", v, "a field only the other manager set is left alone")
}

func TestDownstreamUnassignAndPerTargetDeletion(t *testing.T) {
	h := newSyncer(t, "unassign", downstream.Options{})
	h.start()
	ns := h.upstreamNamespace("unassign")
	h.createUp(configMapsGVR, h.configMap(ns, "relabel", map[string]any{"a": "1"}, nil))
	h.createUp(configMapsGVR, h.configMap(ns, "dropped", map[string]any{"a": "1"}, nil))
	h.createUp(configMapsGVR, h.configMap(ns, "annotated", map[string]any{"a": "1"}, nil))
	for _, n := range []string{"relabel", "dropped", "annotated"} {
		h.waitDown(configMapsGVR, ns, n, nil, "synced")
	}

	h.patchUp(configMapsGVR, ns, "relabel", map[string]any{"metadata": map[string]any{"labels": map[string]any{h.target.StateLabel(): ""}}})
	h.patchUp(configMapsGVR, ns, "dropped", map[string]any{"metadata": map[string]any{"labels": map[string]any{h.target.StateLabel(): nil}}})
	h.patchUp(configMapsGVR, ns, "annotated", map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		h.target.DeletionAnnotation(): time.Now().UTC().Format(time.RFC3339)}}})
	for _, n := range []string{"relabel", "dropped", "annotated"} {
		h.waitDownGone(configMapsGVR, ns, n, "no longer assigned to the target")
		h.waitUp(configMapsGVR, ns, n, func(u *unstructured.Unstructured, err error) bool {
			return err == nil && !hasFinalizerFor(h)(u, err) && u.GetDeletionTimestamp() == nil
		}, "still there, syncer finalizer released")
	}
	// As kcp's syncer does, the release of a per-target deletion also drops the state label
	// and the deletion annotation (in the same write as the finalizer); a pending label is
	// the scheduler's and stays.
	released, err := h.up.Resource(configMapsGVR).Namespace(ns).Get(context.Background(), "annotated", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, released.GetLabels(), h.target.StateLabel(), "state label removed on release")
	assert.NotContains(t, released.GetAnnotations(), h.target.DeletionAnnotation(), "deletion annotation removed on release")
	pending, err := h.up.Resource(configMapsGVR).Namespace(ns).Get(context.Background(), "relabel", metav1.GetOptions{})
	require.NoError(t, err)
	state, ok := pending.GetLabels()[h.target.StateLabel()]
	assert.True(t, ok && state == "", "pending state label kept")
}

func TestDownstreamSoftFinalizersDelayDeletion(t *testing.T) {
	h := newSyncer(t, "soft", downstream.Options{})
	h.start()
	ns := h.upstreamNamespace("soft")
	h.createUp(configMapsGVR, h.configMap(ns, "held", map[string]any{"a": "1"}, map[string]any{
		h.target.SoftFinalizersAnnotation(): "backup.example.com",
	}))
	h.waitDown(configMapsGVR, ns, "held", nil, "synced")
	h.waitUp(configMapsGVR, ns, "held", hasFinalizerFor(h), "finalizer")
	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), "held", metav1.DeleteOptions{}))
	h.waitUp(configMapsGVR, ns, "held", func(u *unstructured.Unstructured, err error) bool {
		return err == nil && u.GetDeletionTimestamp() != nil
	}, "terminating")
	assert.Never(t, func() bool {
		_, err := h.getDown(configMapsGVR, ns, "held")
		return err != nil
	}, 2*time.Second, 100*time.Millisecond, "downstream delete waits while soft finalizers remain")
	// Soft finalizers hold only the delete: the spec keeps syncing meanwhile (kcp's semantics).
	h.patchUp(configMapsGVR, ns, "held", map[string]any{"data": map[string]any{"a": "2"}})
	h.waitDown(configMapsGVR, ns, "held", dataEquals("a", "2"), "updated while held by soft finalizers")

	h.patchUp(configMapsGVR, ns, "held", map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		h.target.SoftFinalizersAnnotation(): nil}}})
	h.waitDownGone(configMapsGVR, ns, "held", "soft finalizers removed")
	h.waitUp(configMapsGVR, ns, "held", isNotFound, "upstream object gone")
}

// TestDownstreamRejectedObjectIsReportedWithoutBlockingOthers: the physical cluster rejects
// one Service (a spec-diff makes its port invalid downstream only); it gets a SyncFailed
// Event and the sync-error annotation upstream, 100 ConfigMaps in the same namespace still
// sync, the rejected object is not retried in a hot loop, and the annotation is cleared
// once it is fixed.
func TestDownstreamRejectedObjectIsReportedWithoutBlockingOthers(t *testing.T) {
	h := newSyncer(t, "reject", downstream.Options{})
	h.start(configMapsGVR, servicesGVR)
	ns := h.upstreamNamespace("reject")

	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{
			"name": "bad", "namespace": ns,
			"labels": map[string]any{h.target.StateLabel(): "Sync"},
			"annotations": map[string]any{
				h.target.SpecDiffAnnotation(): `[{"op":"replace","path":"/ports/0/port","value":70000}]`,
			},
		},
		"spec": map[string]any{"ports": []any{map[string]any{"port": int64(80)}}, "selector": map[string]any{"app": "x"}},
	}}
	h.createUp(servicesGVR, svc)
	for i := range 100 {
		h.createUp(configMapsGVR, h.configMap(ns, fmt.Sprintf("ok-%03d", i), map[string]any{"i": fmt.Sprint(i)}, nil))
	}

	h.waitUp(servicesGVR, ns, "bad", func(u *unstructured.Unstructured, err error) bool {
		return err == nil && strings.Contains(u.GetAnnotations()[spec.SyncErrorAnnotation], "70000")
	}, "sync-error annotation with the physical cluster's message")
	h.waitEvent(ns, "bad", spec.ReasonSyncFailed, "70000")
	require.Eventually(t, func() bool {
		list, err := h.env.Physical.Dynamic(t).Resource(configMapsGVR).Namespace(h.downstreamNamespace(ns)).List(context.Background(),
			metav1.ListOptions{LabelSelector: h.target.DownstreamSelector().String()})
		return err == nil && len(list.Items) == 100
	}, eventually, tick, "the 100 other ConfigMaps sync despite the rejected Service")

	svcPath := "PATCH /api/v1/namespaces/" + h.downstreamNamespace(ns) + "/services/bad"
	before := h.downRequests.count(svcPath)
	assert.LessOrEqual(t, before, 3, "the rejected Service was sent a few times at most, not in a loop")
	assert.Never(t, func() bool { return h.downRequests.count(svcPath) > before }, 3*time.Second, 100*time.Millisecond,
		"no hot loop: the rejected Service is not sent again while unchanged")

	h.patchUp(servicesGVR, ns, "bad", map[string]any{"metadata": map[string]any{"annotations": map[string]any{h.target.SpecDiffAnnotation(): nil}}})
	h.waitDown(servicesGVR, ns, "bad", nil, "synced once fixed")
	h.waitUp(servicesGVR, ns, "bad", func(u *unstructured.Unstructured, err error) bool {
		_, has := u.GetAnnotations()[spec.SyncErrorAnnotation]
		return err == nil && !has
	}, "sync-error annotation cleared after success")
}

func TestDownstreamConflictPolicies(t *testing.T) {
	h := newSyncer(t, "conflict", downstream.Options{})
	h.start()
	ns := h.upstreamNamespace("conflict")
	h.createUp(configMapsGVR, h.configMap(ns, "seed", map[string]any{"a": "1"}, nil))
	h.waitDown(configMapsGVR, ns, "seed", nil, "seed synced, so the downstream namespace exists")

	foreign := h.env.Physical.Kube(t).CoreV1().ConfigMaps(h.downstreamNamespace(ns))
	for name, data := range map[string]string{"abort": "theirs", "adopt-same": "ours", "adopt-diff": "theirs", "overwrite": "theirs"} {
		_, err := foreign.Create(context.Background(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"owner": "someone-else"}},
			Data:       map[string]string{"v": data},
		}, metav1.CreateOptions{FieldManager: "someone-else"})
		require.NoError(t, err)
	}
	abortBefore, err := foreign.Get(context.Background(), "abort", metav1.GetOptions{})
	require.NoError(t, err)

	h.createUp(configMapsGVR, h.configMap(ns, "abort", map[string]any{"v": "ours"}, nil))
	h.createUp(configMapsGVR, h.configMap(ns, "adopt-same", map[string]any{"v": "ours"}, map[string]any{conflict.PolicyAnnotation: "Adopt"}))
	h.createUp(configMapsGVR, h.configMap(ns, "adopt-diff", map[string]any{"v": "ours"}, map[string]any{conflict.PolicyAnnotation: "Adopt"}))
	h.createUp(configMapsGVR, h.configMap(ns, "overwrite", map[string]any{"v": "ours"}, map[string]any{conflict.PolicyAnnotation: "Overwrite"}))

	h.waitEvent(ns, "abort", spec.ReasonSyncConflict, "abort")
	h.waitEvent(ns, "adopt-diff", spec.ReasonSyncConflict, "adopt-diff")
	h.waitDown(configMapsGVR, ns, "adopt-same", func(u *unstructured.Unstructured) bool {
		return u.GetLabels()[identity.DownstreamClusterLabel] == h.target.Key
	}, "adopted: its content already equalled ours")
	h.waitDown(configMapsGVR, ns, "overwrite", func(u *unstructured.Unstructured) bool {
		return u.GetLabels()[identity.DownstreamClusterLabel] == h.target.Key && dataEquals("v", "ours")(u)
	}, "overwritten")

	abortAfter, err := foreign.Get(context.Background(), "abort", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, abortBefore.ResourceVersion, abortAfter.ResourceVersion, "Abort leaves the foreign object untouched")
	assert.Equal(t, abortBefore.Data, abortAfter.Data)
	assert.NotContains(t, abortAfter.Labels, identity.DownstreamClusterLabel)
	diff, err := foreign.Get(context.Background(), "adopt-diff", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "theirs", diff.Data["v"], "Adopt leaves an object whose content differs")
}

func TestDownstreamTwoTargetsOnOneClusterNeverFight(t *testing.T) {
	a := newSyncer(t, "two-a", downstream.Options{})
	b := newSyncer(t, "two-b", downstream.Options{ConflictPolicy: conflict.Overwrite})
	a.start()
	b.start()
	ns := a.upstreamNamespace("two")
	t.Cleanup(func() {
		_ = a.env.Physical.Kube(t).CoreV1().Namespaces().Delete(context.Background(), b.downstreamNamespace(ns), metav1.DeleteOptions{})
	})
	cm := a.configMap(ns, "shared", map[string]any{"v": "1"}, nil)
	cm.SetLabels(map[string]string{a.target.StateLabel(): "Sync", b.target.StateLabel(): "Sync"})
	a.createUp(configMapsGVR, cm)
	da := a.waitDown(configMapsGVR, ns, "shared", nil, "synced by target a")
	db := b.waitDown(configMapsGVR, ns, "shared", nil, "synced by target b")
	assert.NotEqual(t, da.GetNamespace(), db.GetNamespace(), "each target has its own namespace")
	assert.Equal(t, a.target.Key, da.GetLabels()[identity.DownstreamClusterLabel])
	assert.Equal(t, b.target.Key, db.GetLabels()[identity.DownstreamClusterLabel])

	a.patchUp(configMapsGVR, ns, "shared", map[string]any{"metadata": map[string]any{"labels": map[string]any{a.target.StateLabel(): nil}}})
	a.waitDownGone(configMapsGVR, ns, "shared", "unassigned from a")
	assert.Never(t, func() bool {
		_, err := b.getDown(configMapsGVR, ns, "shared")
		return err != nil
	}, time.Second, 100*time.Millisecond, "b's copy is untouched")
}

func TestDownstreamIgnoreFieldsLeftToThePhysicalCluster(t *testing.T) {
	h := newSyncer(t, "ignore", downstream.Options{})
	h.start(deploymentsGVR)
	ns := h.upstreamNamespace("ignore")
	labels := map[string]any{"app": "web"}
	dep := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{
			"name": "web", "namespace": ns,
			"labels":      map[string]any{h.target.StateLabel(): "Sync"},
			"annotations": map[string]any{conflict.IgnoreFieldsAnnotation: "spec.replicas"},
		},
		"spec": map[string]any{
			"replicas": int64(2),
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": "web", "image": "nginx:1"}}},
			},
		},
	}}
	h.createUp(deploymentsGVR, dep)
	replicas := func(n int64) func(*unstructured.Unstructured) bool {
		return func(u *unstructured.Unstructured) bool {
			v, _, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
			return v == n
		}
	}
	h.waitDown(deploymentsGVR, ns, "web", replicas(2), "created with the upstream replicas")

	// A local HPA scales the downstream Deployment.
	deployments := h.env.Physical.Kube(t).AppsV1().Deployments(h.downstreamNamespace(ns))
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale, err := deployments.GetScale(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		scale.Spec.Replicas = 5
		_, err = deployments.UpdateScale(context.Background(), "web", scale, metav1.UpdateOptions{FieldManager: "hpa"})
		return err
	}), "scale the downstream Deployment as an HPA would")

	h.patchUp(deploymentsGVR, ns, "web", map[string]any{"spec": map[string]any{"replicas": 3, "template": map[string]any{"spec": map[string]any{
		"containers": []any{map[string]any{"name": "web", "image": "nginx:2"}}}}}})
	got := h.waitDown(deploymentsGVR, ns, "web", func(u *unstructured.Unstructured) bool {
		c, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		return len(c) == 1 && c[0].(map[string]any)["image"] == "nginx:2"
	}, "the image change goes down")
	assert.True(t, replicas(5)(got), "spec.replicas stays with the physical cluster's HPA")
}

func TestDownstreamRestartConvergesAndCleansOrphans(t *testing.T) {
	h := newSyncer(t, "restart", downstream.Options{})
	h.start()
	ns := h.upstreamNamespace("restart")
	for _, n := range []string{"changed", "terminating", "orphan", "unassigned"} {
		h.createUp(configMapsGVR, h.configMap(ns, n, map[string]any{"v": "1"}, nil))
	}
	for _, n := range []string{"changed", "terminating", "orphan", "unassigned"} {
		h.waitDown(configMapsGVR, ns, n, nil, "synced before the restart")
		h.waitUp(configMapsGVR, ns, n, hasFinalizerFor(h), "finalizer")
	}
	h.stop()

	// While the syncer is down: one object changes, one is deleted (held by our finalizer),
	// one is deleted for good (an admin removed the finalizer), one is created, one loses
	// its state label, and one holds our finalizer without the label and without ever having
	// reached the physical cluster (the finalizer was added, the downstream write failed,
	// then the object was moved to another target: the chaos test found it stranded).
	h.patchUp(configMapsGVR, ns, "changed", map[string]any{"data": map[string]any{"v": "2"}})
	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), "terminating", metav1.DeleteOptions{}))
	h.patchUp(configMapsGVR, ns, "orphan", map[string]any{"metadata": map[string]any{"finalizers": nil}})
	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), "orphan", metav1.DeleteOptions{}))
	h.waitUp(configMapsGVR, ns, "orphan", isNotFound, "deleted upstream while the syncer is down")
	h.createUp(configMapsGVR, h.configMap(ns, "new", map[string]any{"v": "1"}, nil))
	h.patchUp(configMapsGVR, ns, "unassigned", map[string]any{"metadata": map[string]any{"labels": map[string]any{h.target.StateLabel(): nil}}})
	stranded := h.configMap(ns, "stranded", map[string]any{"v": "1"}, nil)
	stranded.SetLabels(map[string]string{"state.workload.kcp.io/elsewhere": "Sync"})
	stranded.SetFinalizers([]string{h.target.SyncerFinalizer()})
	h.createUp(configMapsGVR, stranded)

	h.start()
	h.waitDown(configMapsGVR, ns, "changed", dataEquals("v", "2"), "converged after restart")
	h.waitDown(configMapsGVR, ns, "new", nil, "created after restart")
	h.waitDownGone(configMapsGVR, ns, "terminating", "deleted after restart")
	h.waitUp(configMapsGVR, ns, "terminating", isNotFound, "finalizer released after restart")
	h.waitDownGone(configMapsGVR, ns, "orphan", "orphan cleaned up on start")
	h.waitDownGone(configMapsGVR, ns, "unassigned", "unassigned while down: deleted downstream")
	h.waitUp(configMapsGVR, ns, "unassigned", isUpWithoutFinalizerOf(h), "unassigned while down: finalizer released")
	h.waitUp(configMapsGVR, ns, "stranded", isUpWithoutFinalizerOf(h), "stranded finalizer released by the start-up sweep")
}

// isUpWithoutFinalizerOf is true once the upstream object exists without h's syncer finalizer.
func isUpWithoutFinalizerOf(h *syncerHarness) func(*unstructured.Unstructured, error) bool {
	has := hasFinalizerFor(h)
	return func(u *unstructured.Unstructured, err error) bool { return err == nil && !has(u, nil) }
}

func TestDownstreamNamespaceLifecycle(t *testing.T) {
	h := newSyncer(t, "nslife", downstream.Options{NamespaceCleanDelay: time.Second})
	h.start()
	kube := h.env.Physical.Kube(t)
	ns := h.upstreamNamespace("nslife")
	downNS := h.downstreamNamespace(ns)

	// Namespaces we did not create: one with our label but no locator, one of another target.
	mine := func(name string, annotations map[string]string) {
		_, err := kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: map[string]string{identity.DownstreamClusterLabel: h.target.Key}, Annotations: annotations,
		}}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	noLocator := "nolocator-" + strings.ToLower(h.target.Name)
	otherTarget := "othertarget-" + strings.ToLower(h.target.Name)
	mine(noLocator, nil)
	mine(otherTarget, map[string]string{identity.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"root","name":"someone-else","uid":"x"},"cluster":"root","namespace":"` + ns + `"}`})

	_, err := kube.CoreV1().Namespaces().Get(context.Background(), downNS, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "no downstream namespace before the first object")
	h.createUp(configMapsGVR, h.configMap(ns, "first", map[string]any{"v": "1"}, nil))
	h.waitDown(configMapsGVR, ns, "first", nil, "synced")
	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), "first", metav1.DeleteOptions{}))
	require.NoError(t, h.upKube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}), "delete the upstream namespace")
	require.Eventually(t, func() bool {
		n, err := kube.CoreV1().Namespaces().Get(context.Background(), downNS, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && n.DeletionTimestamp != nil)
	}, eventually, tick, "downstream namespace %s deleted after the clean delay", downNS)
	for _, n := range []string{noLocator, otherTarget} {
		got, err := kube.CoreV1().Namespaces().Get(context.Background(), n, metav1.GetOptions{})
		require.NoError(t, err, "namespace %s we did not create still exists", n)
		assert.Nil(t, got.DeletionTimestamp, "namespace %s we did not create is not deleted", n)
	}
}

// TestDownstreamBenchmark1000ConfigMaps measures the time to sync 1,000 ConfigMaps from a
// started syncer (caches synced to all objects downstream) against writing the same 1,000
// ConfigMaps directly with client-go, with the same number of concurrent writers.
func TestDownstreamBenchmark1000ConfigMaps(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	const n = 1000
	workers := downstream.DefaultWorkers
	h := newSyncer(t, "bench", downstream.Options{Workers: workers})
	ns := h.upstreamNamespace("bench")
	ctx := context.Background()
	unlimited := func(c *rest.Config) *rest.Config {
		c = rest.CopyConfig(c)
		c.QPS, c.Burst = -1, 0
		return c
	}
	upCfg := unlimited(h.env.KCP.Config)
	up, err := dynamic.NewForConfig(upCfg)
	require.NoError(t, err)
	h.up = up
	downCfg := unlimited(h.env.Physical.Config)
	syncerCfg := rest.CopyConfig(downCfg)
	syncerCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return countingTransport{next: rt, counter: h.downRequests}
	})
	down, err := dynamic.NewForConfig(syncerCfg)
	require.NoError(t, err)
	h.down = down

	parallel := func(fn func(i int) error) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					require.NoError(t, fn(i))
				}
			})
		}
		wg.Wait()
	}
	parallel(func(i int) error {
		_, err := up.Resource(configMapsGVR).Namespace(ns).Create(ctx, h.configMap(ns, fmt.Sprintf("cm-%04d", i), map[string]any{"i": fmt.Sprint(i)}, nil), metav1.CreateOptions{})
		return err
	})

	direct := h.env.Physical.CreateNamespace(t, "bench-direct")
	directKube, err := kubernetes.NewForConfig(downCfg)
	require.NoError(t, err)
	start := time.Now()
	parallel(func(i int) error {
		_, err := directKube.CoreV1().ConfigMaps(direct).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%04d", i)}, Data: map[string]string{"i": fmt.Sprint(i)},
		}, metav1.CreateOptions{})
		return err
	})
	directTime := time.Since(start)

	start = time.Now()
	h.start()
	list := h.env.Physical.Dynamic(t).Resource(configMapsGVR).Namespace(h.downstreamNamespace(ns))
	require.Eventually(t, func() bool {
		l, err := list.List(ctx, metav1.ListOptions{LabelSelector: h.target.DownstreamSelector().String()})
		return err == nil && len(l.Items) == n
	}, 5*time.Minute, 100*time.Millisecond, "all %d ConfigMaps synced", n)
	syncTime := time.Since(start)
	ratio := float64(syncTime) / float64(directTime)
	t.Logf("BENCHMARK 1000 ConfigMaps: syncer %s (from start, caches included), direct client-go %s, ratio %.2f (workers %d); downstream requests by the syncer: %d",
		syncTime.Round(time.Millisecond), directTime.Round(time.Millisecond), ratio, workers, h.downRequests.count(""))

	// A restart (a full resync) of the 1,000 unchanged objects writes nothing.
	h.stop()
	writesBefore := h.downRequests.count("PATCH") + h.downRequests.count("POST") + h.downRequests.count("PUT") + h.downRequests.count("DELETE")
	start = time.Now()
	h.start()
	require.Eventually(t, func() bool {
		for _, st := range h.syncer.Stats() {
			if st.GVR == configMapsGVR && st.ReconcilesOK >= n && st.Pending == 0 {
				return true
			}
		}
		return false
	}, 2*time.Minute, 100*time.Millisecond, "all %d keys reconciled after the restart", n)
	writesAfter := h.downRequests.count("PATCH") + h.downRequests.count("POST") + h.downRequests.count("PUT") + h.downRequests.count("DELETE")
	assert.Equal(t, writesBefore, writesAfter, "a resync of unchanged objects issues no downstream write")
	t.Logf("BENCHMARK resync of %d unchanged ConfigMaps after a restart: %s, downstream writes: %d", n, time.Since(start).Round(time.Millisecond), writesAfter-writesBefore)
}

// TestDownstreamImmutableChangeRecreatesOnlyWhenAllowed changes a Deployment's selector
// downstream (through a spec-diff, as the upstream apiserver would refuse the change too):
// the physical cluster rejects it as immutable; with recreate-on-immutable the object is
// deleted and recreated, without it the error is reported upstream.
func TestDownstreamImmutableChangeRecreatesOnlyWhenAllowed(t *testing.T) {
	h := newSyncer(t, "immutable", downstream.Options{})
	h.start(deploymentsGVR)
	ns := h.upstreamNamespace("immutable")
	deployment := func(name string, annotations map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{
				"name": name, "namespace": ns, "annotations": annotations,
				"labels": map[string]any{h.target.StateLabel(): "Sync"},
			},
			"spec": map[string]any{
				"replicas": int64(0),
				"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"app": name, "tier": "web"}},
					"spec":     map[string]any{"containers": []any{map[string]any{"name": "c", "image": "nginx"}}},
				},
			},
		}}
	}
	h.createUp(deploymentsGVR, deployment("recreate", map[string]any{spec.RecreateOnImmutableAnnotation: "true"}))
	h.createUp(deploymentsGVR, deployment("report", nil))
	first := h.waitDown(deploymentsGVR, ns, "recreate", nil, "synced")
	h.waitDown(deploymentsGVR, ns, "report", nil, "synced")

	for _, name := range []string{"recreate", "report"} {
		diff := fmt.Sprintf(`[{"op":"replace","path":"/selector/matchLabels","value":{"app":%q,"tier":"web"}}]`, name)
		h.patchUp(deploymentsGVR, ns, name, map[string]any{"metadata": map[string]any{"annotations": map[string]any{h.target.SpecDiffAnnotation(): diff}}})
	}
	h.waitDown(deploymentsGVR, ns, "recreate", func(u *unstructured.Unstructured) bool {
		tier, _, _ := unstructured.NestedString(u.Object, "spec", "selector", "matchLabels", "tier")
		return u.GetUID() != first.GetUID() && tier == "web"
	}, "recreated with the new selector")
	h.waitEvent(ns, "report", spec.ReasonSyncFailed, "immutable")
	h.waitUp(deploymentsGVR, ns, "report", func(u *unstructured.Unstructured, err error) bool {
		return err == nil && strings.Contains(u.GetAnnotations()[spec.SyncErrorAnnotation], "immutable")
	}, "immutable error reported in the annotation")
}

// startOnEngine runs downstream sync registered on an engine.Engine (the engine's informers
// and resource set) instead of the Syncer's own informers.
func (h *syncerHarness) startOnEngine(resources ...string) {
	h.t.Helper()
	h.startOnEngineLogged(resources...)
}

func TestDownstreamOnEngineSyncsRevertsDeletesAndCleansNamespaces(t *testing.T) {
	h := newSyncer(t, "engine", downstream.Options{NamespaceCleanDelay: time.Second})
	ns := h.upstreamNamespace("engine")
	// An orphan from an earlier run: labelled for this target, its upstream object gone.
	orphanNS := h.env.Physical.CreateNamespace(t, "orphans")
	_, err := h.env.Physical.Kube(t).CoreV1().ConfigMaps(orphanNS).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: "orphan", Labels: map[string]string{identity.DownstreamClusterLabel: h.target.Key},
		Annotations: map[string]string{"syncer.tmc.dev/upstream-cluster": upstreamCluster, "syncer.tmc.dev/upstream-namespace": ns,
			"syncer.tmc.dev/upstream-name": "orphan", "syncer.tmc.dev/upstream-uid": "gone"},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// A stranded upstream object from an earlier run: our finalizer, no longer our state label.
	stranded := h.configMap(ns, "stranded", map[string]any{"v": "1"}, nil)
	stranded.SetLabels(nil)
	stranded.SetFinalizers([]string{h.target.SyncerFinalizer()})
	h.createUp(configMapsGVR, stranded)
	h.startOnEngine("configmaps")
	h.waitUp(configMapsGVR, ns, "stranded", isUpWithoutFinalizerOf(h), "start-up sweep releases the stranded finalizer")

	require.Eventually(t, func() bool {
		_, err := h.env.Physical.Kube(t).CoreV1().ConfigMaps(orphanNS).Get(context.Background(), "orphan", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, eventually, tick, "start-up cleanup deletes the orphan")

	h.createUp(configMapsGVR, h.configMap(ns, "web", map[string]any{"color": "blue"}, nil))
	first := h.waitDown(configMapsGVR, ns, "web", dataEquals("color", "blue"), "created")
	h.waitUp(configMapsGVR, ns, "web", hasFinalizerFor(h), "finalizer")

	other := h.env.Physical.Dynamic(t).Resource(configMapsGVR).Namespace(h.downstreamNamespace(ns))
	live, err := other.Get(context.Background(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, unstructured.SetNestedField(live.Object, "red", "data", "color"))
	_, err = other.Update(context.Background(), live, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
	require.NoError(t, err)
	h.waitDown(configMapsGVR, ns, "web", dataEquals("color", "blue"), "edit reverted")
	require.NoError(t, other.Delete(context.Background(), "web", metav1.DeleteOptions{}))
	h.waitDown(configMapsGVR, ns, "web", func(u *unstructured.Unstructured) bool { return u.GetUID() != first.GetUID() }, "recreated")

	h.patchUp(configMapsGVR, ns, "web", map[string]any{"data": map[string]any{"color": "green"}})
	h.waitDown(configMapsGVR, ns, "web", dataEquals("color", "green"), "updated")
	require.NoError(t, h.up.Resource(configMapsGVR).Namespace(ns).Delete(context.Background(), "web", metav1.DeleteOptions{}))
	h.waitDownGone(configMapsGVR, ns, "web", "upstream deleted it")
	h.waitUp(configMapsGVR, ns, "web", isNotFound, "finalizer released")

	require.NoError(t, h.upKube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		n, err := h.env.Physical.Kube(t).CoreV1().Namespaces().Get(context.Background(), h.downstreamNamespace(ns), metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && n.DeletionTimestamp != nil)
	}, eventually, tick, "unused downstream namespace deleted after the delay")
}
