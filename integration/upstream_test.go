package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/upstream"
	"github.com/tmc-syncer/syncer/modules/upstream/events"
)

var (
	// widgets has a status subresource and no controller in either cluster, so every
	// status change upstream is the syncer's.
	widgetsGVR = schema.GroupVersionResource{Group: "test.tmc.dev", Version: "v1", Resource: "widgets"}
	// gadgets has no status subresource.
	gadgetsGVR = schema.GroupVersionResource{Group: "test.tmc.dev", Version: "v1", Resource: "gadgets"}
)

// upstreamBed is one test's sync target, its clients and helpers to create downstream
// objects as the downstream syncer would.
type upstreamBed struct {
	t        *testing.T
	env      *framework.Environment
	target   identity.Target
	tctx     transformation.Context
	pipeline *transformation.Pipeline
	up, down struct {
		kube kubernetes.Interface
		dyn  dynamic.Interface
		meta metadata.Interface
	}
}

var crdOnce sync.Once

func newUpstreamBed(t *testing.T) *upstreamBed {
	t.Helper()
	env := framework.Shared(t)
	name := fmt.Sprintf("phys-%d", rand.Uint32())
	target := identity.NewTarget("root:test", name, types.UID("uid-"+name))
	b := &upstreamBed{
		t: t, env: env, target: target, pipeline: transformation.NewPipeline(),
		tctx: transformation.Context{
			SyncTargetKey: target.Key, SyncTargetName: target.Name, SyncTargetUID: string(target.UID),
			SyncTargetCluster: target.Cluster, LogicalCluster: target.Cluster,
		},
	}
	b.up.kube, b.up.dyn, b.up.meta = clientsFor(t, env.KCP.Config)
	b.down.kube, b.down.dyn, b.down.meta = clientsFor(t, env.Physical.Config)
	crdOnce.Do(func() {
		for _, c := range []*framework.Cluster{env.KCP, env.Physical} {
			for _, crd := range []*unstructured.Unstructured{testCRD("Widget", "widgets", true), testCRD("Gadget", "gadgets", false)} {
				require.NoError(t, framework.ApplyCRD(context.Background(), c.Dynamic(t), crd), "install %s in %s", crd.GetName(), c.Name)
			}
		}
	})
	return b
}

func clientsFor(t *testing.T, cfg *rest.Config) (kubernetes.Interface, dynamic.Interface, metadata.Interface) {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 1000, 2000
	k, err := kubernetes.NewForConfig(c)
	require.NoError(t, err)
	d, err := dynamic.NewForConfig(c)
	require.NoError(t, err)
	m, err := metadata.NewForConfig(c)
	require.NoError(t, err)
	return k, d, m
}

func testCRD(kind, plural string, statusSubresource bool) *unstructured.Unstructured {
	version := map[string]any{
		"name": "v1", "served": true, "storage": true,
		"schema": map[string]any{"openAPIV3Schema": map[string]any{
			"type": "object", "x-kubernetes-preserve-unknown-fields": true,
		}},
	}
	if statusSubresource {
		version["subresources"] = map[string]any{"status": map[string]any{}}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": plural + ".test.tmc.dev"},
		"spec": map[string]any{
			"group": "test.tmc.dev", "scope": "Namespaced",
			"names":    map[string]any{"kind": kind, "listKind": kind + "List", "plural": plural, "singular": strings.ToLower(kind)},
			"versions": []any{version},
		},
	}}
}

// start runs an upstream syncer for the bed's target until the test ends or stop is called.
func (b *upstreamBed) start(opts upstream.Options, gvrs ...schema.GroupVersionResource) (*upstream.Syncer, *prometheus.Registry, func()) {
	b.t.Helper()
	reg := prometheus.NewRegistry()
	s, err := upstream.New(upstream.Config{
		Target:     b.target,
		Resources:  gvrs,
		Upstream:   upstream.Clients{Dynamic: b.up.dyn, Kube: b.up.kube, Metadata: b.up.meta},
		Downstream: upstream.Clients{Dynamic: b.down.dyn, Kube: b.down.kube, Metadata: b.down.meta},
		Registry:   reg,
		Options:    opts,
	})
	require.NoError(b.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					b.t.Errorf("upstream syncer did not stop cleanly: %v", err)
				}
			case <-time.After(60 * time.Second):
				b.t.Error("upstream syncer did not stop within 60s")
			}
		})
	}
	b.t.Cleanup(stop)
	return s, reg, stop
}

// upstreamObject creates obj upstream in ns, labelled Sync for the bed's target (and any
// extra targets), and returns it as stored.
func (b *upstreamBed) upstreamObject(gvr schema.GroupVersionResource, ns string, obj *unstructured.Unstructured, extraTargets ...string) *unstructured.Unstructured {
	b.t.Helper()
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[kcp.StateLabel(b.target.Key)] = kcp.StateSync
	for _, k := range extraTargets {
		labels[kcp.StateLabel(k)] = kcp.StateSync
	}
	obj.SetLabels(labels)
	obj.SetNamespace(ns)
	created, err := b.up.dyn.Resource(gvr).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{})
	require.NoError(b.t, err, "create upstream %s %s/%s", gvr.Resource, ns, obj.GetName())
	return created
}

// syncDown creates the downstream namespace and object exactly as the downstream syncer
// would (namespace mapping with locator and cluster label, Pipeline.ToDownstream).
func (b *upstreamBed) syncDown(gvr schema.GroupVersionResource, up *unstructured.Unstructured) *unstructured.Unstructured {
	b.t.Helper()
	ctx := context.Background()
	ns, err := namespace.DownstreamNamespace(b.tctx.Locator(up), b.target.Key)
	require.NoError(b.t, err)
	nsClient := b.down.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"})
	if _, err := nsClient.Create(ctx, ns, metav1.CreateOptions{}); err == nil {
		b.t.Cleanup(func() { _ = nsClient.Delete(context.Background(), ns.GetName(), metav1.DeleteOptions{}) })
	} else {
		require.True(b.t, apierrors.IsAlreadyExists(err), "create downstream namespace %s: %v", ns.GetName(), err)
	}
	down, err := b.pipeline.ToDownstream(b.tctx, up)
	require.NoError(b.t, err)
	created, err := b.down.dyn.Resource(gvr).Namespace(down.GetNamespace()).Create(ctx, down, metav1.CreateOptions{})
	require.NoError(b.t, err, "create downstream %s %s/%s", gvr.Resource, down.GetNamespace(), down.GetName())
	return created
}

func (b *upstreamBed) syncedEvents(ns string) []corev1.Event {
	b.t.Helper()
	list, err := b.up.kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(b.t, err)
	var out []corev1.Event
	for _, e := range list.Items {
		if e.ReportingController == "tmc-syncer/"+b.target.Name {
			out = append(out, e)
		}
	}
	return out
}

func deployment(name string, replicas int64) *unstructured.Unstructured {
	labels := map[string]any{"app": name}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": "web", "image": "nginx"}}},
			},
		},
	}}
}

func widget(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "test.tmc.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"size": int64(1)},
	}}
}

func setWidgetStatus(t *testing.T, c dynamic.Interface, ns, name string, n int64) {
	t.Helper()
	w, err := c.Resource(widgetsGVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, unstructured.SetNestedField(w.Object, n, "status", "n"))
	_, err = c.Resource(widgetsGVR).Namespace(ns).UpdateStatus(context.Background(), w, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func statusField(obj *unstructured.Unstructured, fields ...string) int64 {
	v, _, _ := unstructured.NestedInt64(obj.Object, append([]string{"status"}, fields...)...)
	return v
}

// metricSum adds up every series of the metric name (labels matching match, when given).
func metricSum(t *testing.T, reg *prometheus.Registry, name string, match map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range match {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func hasStatusManager(obj *unstructured.Unstructured, manager string) bool {
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager == manager && mf.Subresource == "status" {
			return true
		}
	}
	return false
}

// TestUpstreamDeploymentStatusFollowsDownstream: the deployment controller of the physical
// cluster gives the downstream Deployment status; it appears upstream, written by the
// syncer through the status subresource, and again after a scale.
//
// The bed's control plane runs a deployment controller too, which writes the upstream
// Deployment's status from its own ReplicaSets. A spec-diff gives the downstream pod
// template an extra annotation, so the downstream ReplicaSet has another name and the
// downstream status (its Progressing message) is told apart from the upstream
// controller's; the syncer re-asserts the downstream status over the other writer.
func TestUpstreamDeploymentStatusFollowsDownstream(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "status")
	dep := deployment("web", 2)
	dep.SetAnnotations(map[string]string{kcp.SpecDiffAnnotation(b.target.Key): `[{"op":"add","path":"/template/metadata/annotations","value":{"tmc.dev/side":"downstream"}}]`})
	up := b.upstreamObject(deploymentsGVR, ns, dep)
	down := b.syncDown(deploymentsGVR, up)
	b.start(upstream.Options{DisableEvents: true}, deploymentsGVR)

	downDeps := b.down.dyn.Resource(deploymentsGVR).Namespace(down.GetNamespace())
	upDeps := b.up.dyn.Resource(deploymentsGVR).Namespace(ns)
	var lastDown, lastUp *unstructured.Unstructured
	converged := func(replicas int64) func() bool {
		return func() bool {
			d, err := downDeps.Get(ctx, "web", metav1.GetOptions{})
			if err != nil || statusField(d, "replicas") != replicas || statusField(d, "observedGeneration") != d.GetGeneration() {
				return false
			}
			u, err := upDeps.Get(ctx, "web", metav1.GetOptions{})
			lastDown, lastUp = d, u
			return err == nil && reflect.DeepEqual(d.Object["status"], u.Object["status"]) && hasStatusManager(u, "tmc-syncer")
		}
	}
	explain := func() string {
		if lastDown == nil || lastUp == nil {
			return "no downstream status yet"
		}
		return fmt.Sprintf("downstream status %v\nupstream status %v", lastDown.Object["status"], lastUp.Object["status"])
	}
	if !assert.Eventually(t, converged(2), 30*time.Second, 50*time.Millisecond,
		"downstream Deployment status (2 replicas) written upstream by tmc-syncer") {
		t.Fatal(explain())
	}
	progressing := func(obj *unstructured.Unstructured) string {
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Progressing" {
				msg, _ := m["message"].(string)
				return msg
			}
		}
		return ""
	}
	t.Logf("upstream Progressing: %q", progressing(lastUp))

	// Scale: upstream first, then downstream as the downstream syncer would. Two writers
	// (the control plane's deployment controller and the syncer) keep changing the upstream
	// status, so the read-modify-write retries on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := upDeps.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := unstructured.SetNestedField(u.Object, int64(3), "spec", "replicas"); err != nil {
			return err
		}
		_, err = upDeps.Update(ctx, u, metav1.UpdateOptions{})
		return err
	})
	require.NoError(t, err)
	_, err = downDeps.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":3}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	if !assert.Eventually(t, converged(3), 30*time.Second, 50*time.Millisecond,
		"status after the scale (3 replicas, generation 2) written upstream") {
		t.Fatal(explain())
	}
	assert.Equal(t, int64(2), statusField(lastUp, "observedGeneration"))
}

// TestUpstreamMultiTargetWritesAnnotationNotStatus: an object synced to two targets gets
// this target's status in its annotation; .status stays untouched.
func TestUpstreamMultiTargetWritesAnnotationNotStatus(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "multi")
	other := identity.NewTarget("root:test", "other", "other-uid")
	up := b.upstreamObject(widgetsGVR, ns, widget("shared"), other.Key)
	down := b.syncDown(widgetsGVR, up)
	b.start(upstream.Options{DisableEvents: true}, widgetsGVR)

	setWidgetStatus(t, b.down.dyn, down.GetNamespace(), down.GetName(), 7)
	require.Eventually(t, func() bool {
		u, err := b.up.dyn.Resource(widgetsGVR).Namespace(ns).Get(ctx, "shared", metav1.GetOptions{})
		return err == nil && u.GetAnnotations()[kcp.StatusAnnotation(b.target.Key)] == `{"n":7}`
	}, 30*time.Second, 50*time.Millisecond, "status annotation of this target written upstream")
	u, err := b.up.dyn.Resource(widgetsGVR).Namespace(ns).Get(ctx, "shared", metav1.GetOptions{})
	require.NoError(t, err)
	_, hasStatus := u.Object["status"]
	assert.False(t, hasStatus, ".status is left to the aggregator with two targets")
}

// TestUpstreamNoStatusSubresourceIsSkipped: a resource without a status subresource
// upstream is skipped after one 404, not retried in a loop.
func TestUpstreamNoStatusSubresourceIsSkipped(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "nostatus")
	g := widget("g")
	g.SetKind("Gadget")
	up := b.upstreamObject(gadgetsGVR, ns, g)
	down := b.syncDown(gadgetsGVR, up)
	// Without a status subresource, status is written with the object.
	require.NoError(t, unstructured.SetNestedField(down.Object, int64(1), "status", "n"))
	_, err := b.down.dyn.Resource(gadgetsGVR).Namespace(down.GetNamespace()).Update(ctx, down, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, reg, _ := b.start(upstream.Options{DisableEvents: true}, gadgetsGVR)
	require.Eventually(t, func() bool {
		return metricSum(t, reg, "tmc_syncer_status_writes_total", map[string]string{"write": "no_subresource"}) == 1
	}, 30*time.Second, 50*time.Millisecond, "the missing status subresource is detected once")
	for i := int64(2); i <= 5; i++ {
		d, err := b.down.dyn.Resource(gadgetsGVR).Namespace(down.GetNamespace()).Get(ctx, "g", metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedField(d.Object, i, "status", "n"))
		_, err = b.down.dyn.Resource(gadgetsGVR).Namespace(down.GetNamespace()).Update(ctx, d, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return metricSum(t, reg, "tmc_syncer_reconciles_total", nil) >= 0 &&
			metricSum(t, reg, "tmc_syncer_status_writes_total", map[string]string{"write": "no_subresource"}) == 1
	}, 5*time.Second, 50*time.Millisecond)
	u, err := b.up.dyn.Resource(gadgetsGVR).Namespace(ns).Get(ctx, "g", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Zero(t, statusField(u, "n"), "nothing written upstream")
}

// TestUpstreamStatusLatency measures downstream status write → upstream visible (through a
// watch) over 200 updates and logs p50/p99.
func TestUpstreamStatusLatency(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "latency")
	up := b.upstreamObject(widgetsGVR, ns, widget("fast"))
	down := b.syncDown(widgetsGVR, up)
	_, reg, _ := b.start(upstream.Options{DisableEvents: true}, widgetsGVR)

	setWidgetStatus(t, b.down.dyn, down.GetNamespace(), down.GetName(), 0)
	w, err := b.up.dyn.Resource(widgetsGVR).Namespace(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=fast"})
	require.NoError(t, err)
	defer w.Stop()
	waitFor := func(n int64) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				require.True(t, ok, "upstream watch closed")
				if u, isU := ev.Object.(*unstructured.Unstructured); isU && ev.Type != watch.Error && statusField(u, "n") == n {
					return
				}
			case <-timeout:
				require.Failf(t, "status did not reach upstream", "status.n=%d not seen upstream within 10s", n)
			}
		}
	}
	downW, err := b.down.dyn.Resource(widgetsGVR).Namespace(down.GetNamespace()).Get(ctx, down.GetName(), metav1.GetOptions{})
	require.NoError(t, err)
	const updates = 200
	lat := make([]time.Duration, 0, updates)
	for i := int64(1); i <= updates; i++ {
		require.NoError(t, unstructured.SetNestedField(downW.Object, i, "status", "n"))
		start := time.Now()
		downW, err = b.down.dyn.Resource(widgetsGVR).Namespace(down.GetNamespace()).UpdateStatus(ctx, downW, metav1.UpdateOptions{})
		require.NoError(t, err)
		waitFor(i)
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("status latency over %d updates (downstream UpdateStatus call → upstream watch event): p50=%s p99=%s max=%s",
		updates, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	assert.Less(t, p50, 500*time.Millisecond, "status flows event-driven, not by polling")
	q50, q99 := histogramQuantile(t, reg, "tmc_syncer_status_sync_latency_seconds", 0.5), histogramQuantile(t, reg, "tmc_syncer_status_sync_latency_seconds", 0.99)
	t.Logf("of which inside the syncer (informer event → upstream write acknowledged, histogram bucket bounds): p50 ≤ %s, p99 ≤ %s", q50, q99)
}

// TestUpstreamRealEventsOfDeployment: the physical cluster's controllers' Events (the
// Deployment's ScalingReplicaSet, its ReplicaSet's SuccessfulCreate) appear upstream on
// the upstream Deployment; a restarted syncer does not duplicate them.
func TestUpstreamRealEventsOfDeployment(t *testing.T) {
	b := newUpstreamBed(t)
	ns := b.env.KCP.CreateNamespace(t, "events")
	up := b.upstreamObject(deploymentsGVR, ns, deployment("web", 2))
	b.syncDown(deploymentsGVR, up)
	_, reg, stop := b.start(upstream.Options{}, deploymentsGVR)

	var forwarded []corev1.Event
	require.Eventually(t, func() bool {
		forwarded = b.syncedEvents(ns)
		var scaling, created bool
		for _, e := range forwarded {
			if e.InvolvedObject.Kind != "Deployment" || e.InvolvedObject.Name != "web" || e.InvolvedObject.UID != up.GetUID() {
				continue
			}
			scaling = scaling || (e.Reason == "ScalingReplicaSet" && strings.HasPrefix(e.Message, "Scaled up replica set web-"))
			created = created || (e.Reason == "SuccessfulCreate" && strings.HasPrefix(e.Message, "ReplicaSet web-") && strings.Contains(e.Message, ": Created pod: web-"))
		}
		return scaling && created
	}, 30*time.Second, 100*time.Millisecond, "ScalingReplicaSet and the ReplicaSet's SuccessfulCreate appear on the upstream Deployment")
	for _, e := range forwarded {
		assert.Equal(t, "tmc-syncer/"+b.target.Name, e.Source.Component)
		assert.Equal(t, ns, e.Namespace)
	}
	require.Eventually(t, func() bool {
		return int(metricSum(t, reg, "tmc_syncer_events_forwarded_total", nil)) == len(b.syncedEvents(ns))
	}, 10*time.Second, 50*time.Millisecond)
	before := b.syncedEvents(ns)
	stop()

	// The Deployment is at rest: the restarted syncer re-lists the same Events.
	_, reg2, _ := b.start(upstream.Options{}, deploymentsGVR)
	require.Eventually(t, func() bool {
		return int(metricSum(t, reg2, "tmc_syncer_events_deduplicated_total", nil)) >= len(before)
	}, 30*time.Second, 50*time.Millisecond, "the restarted syncer finds its earlier copies")
	after := b.syncedEvents(ns)
	assert.Len(t, after, len(before), "no duplicates after a restart")
	assert.Zero(t, metricSum(t, reg2, "tmc_syncer_events_forwarded_total", nil), "nothing created again")
}

func downstreamEvent(name string, regarding *unstructured.Unstructured, reason string) *corev1.Event {
	now := metav1.Now()
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: regarding.GetNamespace()},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: regarding.GetAPIVersion(), Kind: regarding.GetKind(),
			Namespace: regarding.GetNamespace(), Name: regarding.GetName(), UID: regarding.GetUID(),
		},
		Reason: reason, Message: "widget " + reason, Type: corev1.EventTypeNormal,
		Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "widget-controller"},
	}
}

// TestUpstreamRepeatedEventIsOneUpstreamEvent: a downstream Event repeated 5 times is one
// upstream Event with count 5.
func TestUpstreamRepeatedEventIsOneUpstreamEvent(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "repeat")
	up := b.upstreamObject(widgetsGVR, ns, widget("w"))
	down := b.syncDown(widgetsGVR, up)
	b.start(upstream.Options{}, widgetsGVR)

	evs := b.down.kube.CoreV1().Events(down.GetNamespace())
	ev, err := evs.Create(ctx, downstreamEvent("w.repeat", down, "Polished"), metav1.CreateOptions{})
	require.NoError(t, err)
	for i := int32(2); i <= 5; i++ {
		require.Eventually(t, func() bool {
			got := b.syncedEvents(ns)
			return len(got) == 1 && got[0].Count == i-1
		}, 10*time.Second, 20*time.Millisecond, "occurrence %d reaches upstream before the next", i-1)
		ev.Count = i
		ev.LastTimestamp = metav1.Now()
		ev, err = evs.Update(ctx, ev, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		got := b.syncedEvents(ns)
		return len(got) == 1 && got[0].Count == 5
	}, 10*time.Second, 20*time.Millisecond, "one upstream Event with count 5")
	got := b.syncedEvents(ns)
	assert.Equal(t, events.UpstreamName("w", ev.UID), got[0].Name, "name derived from the downstream Event UID")
	assert.Equal(t, up.GetUID(), got[0].InvolvedObject.UID)
	assert.Equal(t, "widget Polished", got[0].Message)
}

// TestUpstreamEventFloodIsRateLimited: 5,000 Events in one namespace; upstream receives at
// most what the buckets allow, drops are counted, and status of another object still flows.
func TestUpstreamEventFloodIsRateLimited(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "flood")
	const noisyObjects, total = 5, 5000
	var noisy []*unstructured.Unstructured
	for i := range noisyObjects {
		noisy = append(noisy, b.syncDown(widgetsGVR, b.upstreamObject(widgetsGVR, ns, widget(fmt.Sprintf("noisy-%d", i)))))
	}
	quiet := b.syncDown(widgetsGVR, b.upstreamObject(widgetsGVR, ns, widget("quiet")))
	limits := events.Limits{QPS: 10, Burst: 20, PerObjectQPS: 1, PerObjectBurst: 10, Pending: 100, PerObjectPending: 20}
	s, reg, _ := b.start(upstream.Options{Events: events.Options{Limits: limits, Workers: 2}}, widgetsGVR)
	start := time.Now()

	var next atomic.Int64
	var wg sync.WaitGroup
	evs := b.down.kube.CoreV1().Events(quiet.GetNamespace())
	for range 16 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				_, err := evs.Create(ctx, downstreamEvent(fmt.Sprintf("flood-%d", i), noisy[i%noisyObjects], "Flood"), metav1.CreateOptions{})
				assert.NoError(t, err)
			}
		})
	}
	// Status of another object flows during the flood.
	for n := int64(1); n <= 3; n++ {
		setWidgetStatus(t, b.down.dyn, quiet.GetNamespace(), "quiet", n)
		require.Eventually(t, func() bool {
			u, err := b.up.dyn.Resource(widgetsGVR).Namespace(ns).Get(ctx, "quiet", metav1.GetOptions{})
			return err == nil && statusField(u, "n") == n
		}, 5*time.Second, 20*time.Millisecond, "status of another object flows during the flood (update %d)", n)
	}
	wg.Wait()
	t.Logf("created %d downstream Events in %s", total, time.Since(start).Round(time.Millisecond))

	// Every Event meets one fate: forwarded, dropped by a bucket, or still waiting.
	require.Eventually(t, func() bool {
		fates := metricSum(t, reg, "tmc_syncer_events_forwarded_total", nil) +
			metricSum(t, reg, "tmc_syncer_events_dropped_total", nil) + float64(s.Events().Pending())
		return fates >= total
	}, 60*time.Second, 100*time.Millisecond, "all %d Events processed", total)
	elapsed := time.Since(start).Seconds()
	got := len(b.syncedEvents(ns))
	globalBound := float64(limits.Burst) + limits.QPS*elapsed
	objectBound := float64(noisyObjects) * (float64(limits.PerObjectBurst) + limits.PerObjectQPS*elapsed)
	dropped := metricSum(t, reg, "tmc_syncer_events_dropped_total", nil)
	t.Logf("flood: %d forwarded upstream in %.1fs (bounds: global %.0f, per-object %.0f), dropped %.0f (object %.0f, global %.0f), pending %d",
		got, elapsed, globalBound, objectBound, dropped,
		metricSum(t, reg, "tmc_syncer_events_dropped_total", map[string]string{"reason": "object_rate_limited"}),
		metricSum(t, reg, "tmc_syncer_events_dropped_total", map[string]string{"reason": "global_rate_limited"}), s.Events().Pending())
	assert.LessOrEqual(t, float64(got), min(globalBound, objectBound)+1, "upstream receives at most what the buckets allow")
	assert.Greater(t, dropped, float64(total/2), "the excess is dropped and counted")
}

// histogramQuantile returns the upper bound of the bucket holding quantile q.
func histogramQuantile(t *testing.T, reg *prometheus.Registry, name string, q float64) time.Duration {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			want := q * float64(h.GetSampleCount())
			for _, b := range h.GetBucket() {
				if float64(b.GetCumulativeCount()) >= want {
					return time.Duration(b.GetUpperBound() * float64(time.Second))
				}
			}
		}
	}
	return 0
}

// TestUpstreamEventShapesAndMaxAge: an events.k8s.io/v1 Event with a series goes up with the
// series count; an Event older than MaxAge when the syncer starts is not replayed.
func TestUpstreamEventShapesAndMaxAge(t *testing.T) {
	b := newUpstreamBed(t)
	ctx := context.Background()
	ns := b.env.KCP.CreateNamespace(t, "shapes")
	up := b.upstreamObject(widgetsGVR, ns, widget("w"))
	down := b.syncDown(widgetsGVR, up)

	old := downstreamEvent("w.old", down, "Ancient")
	old.FirstTimestamp = metav1.NewTime(time.Now().Add(-3 * time.Hour))
	old.LastTimestamp = metav1.NewTime(time.Now().Add(-2 * time.Hour))
	_, err := b.down.kube.CoreV1().Events(down.GetNamespace()).Create(ctx, old, metav1.CreateOptions{})
	require.NoError(t, err)
	_, reg, _ := b.start(upstream.Options{Events: events.Options{MaxAge: time.Hour}}, widgetsGVR)

	series := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "w.series", Namespace: down.GetNamespace()},
		EventTime:  metav1.NewMicroTime(time.Now()),
		Series:     &eventsv1.EventSeries{Count: 3, LastObservedTime: metav1.NewMicroTime(time.Now())},
		Regarding: corev1.ObjectReference{APIVersion: down.GetAPIVersion(), Kind: down.GetKind(),
			Namespace: down.GetNamespace(), Name: down.GetName(), UID: down.GetUID()},
		ReportingController: "example.com/widget-controller", ReportingInstance: "widget-controller-1",
		Action: "Polish", Reason: "Polished", Note: "polished thrice", Type: corev1.EventTypeNormal,
	}
	_, err = b.down.kube.EventsV1().Events(down.GetNamespace()).Create(ctx, series, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		got := b.syncedEvents(ns)
		return len(got) == 1 && got[0].Count == 3 && got[0].Message == "polished thrice" && got[0].Reason == "Polished"
	}, 10*time.Second, 20*time.Millisecond, "the events.k8s.io/v1 Event goes up with its series count")
	require.Eventually(t, func() bool {
		return metricSum(t, reg, "tmc_syncer_events_dropped_total", map[string]string{"reason": "too_old"}) == 1
	}, 10*time.Second, 20*time.Millisecond, "the 2 h old Event is counted as too old")
	assert.Len(t, b.syncedEvents(ns), 1, "and not forwarded")
}
