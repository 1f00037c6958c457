package metrics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/status"
)

type okController struct{ done chan struct{} }

func (c okController) Name() string { return "spec" }
func (c okController) Workers() int { return 1 }
func (c okController) Reconcile(context.Context, queue.Key) error {
	c.done <- struct{}{}
	return nil
}

func TestQueueAndReconcileMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg)
	require.NoError(t, err)

	c := okController{done: make(chan struct{}, 1)}
	r := queue.NewRunner(c, queue.Options{MetricsProvider: m, Observer: m})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = r.Run(ctx); close(stopped) }()
	r.Enqueue(queue.Key{Name: "a"})
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("reconcile not called")
	}
	cancel()
	<-stopped

	assert.InDelta(t, 1.0, testutil.ToFloat64(m.adds.WithLabelValues("spec")), 0)
	assert.InDelta(t, 0.0, testutil.ToFloat64(m.depth.WithLabelValues("spec")), 0)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(m.reconciles.WithLabelValues("spec", "success")) == 1
	}, 5*time.Second, time.Millisecond)

	names := map[string]bool{}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{
		"tmc_syncer_workqueue_depth", "tmc_syncer_workqueue_adds_total", "tmc_syncer_workqueue_queue_duration_seconds",
		"tmc_syncer_workqueue_work_duration_seconds", "tmc_syncer_reconciles_total", "tmc_syncer_reconcile_duration_seconds",
	} {
		assert.True(t, names[want], "metric %s missing", want)
	}
	m.NewRetriesMetric("spec").Inc()
	m.NewUnfinishedWorkSecondsMetric("spec").Set(1)
	m.NewLongestRunningProcessorSecondsMetric("spec").Set(1)
	assert.InDelta(t, 1.0, testutil.ToFloat64(m.retries.WithLabelValues("spec")), 0)
}

func TestRegisteringTwiceReusesCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := New(reg)
	require.NoError(t, err)
	b, err := New(reg)
	require.NoError(t, err, "a component restart must not fail or panic")
	b.NewAddsMetric("q").Inc()
	assert.InDelta(t, 1.0, testutil.ToFloat64(a.adds.WithLabelValues("q")), 0)
}

func TestRegisterConflictingCollectorFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tmc_syncer_workqueue_depth", Help: "x"})))
	_, err := New(reg)
	require.Error(t, err)
}

func TestStatusCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cm := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	snap := status.Snapshot{Resources: []status.Resource{
		{GVR: cm, State: "Accepted", UpstreamSynced: true, UpstreamObjects: 4, DownstreamObjects: 2, QueueDepth: 1},
		{GVR: schema.GroupVersionResource{Group: "w", Resource: "widgets"}, State: "Incompatible"},
	}}
	require.NoError(t, RegisterStatus(reg, func() status.Snapshot { return status.Snapshot{} }))
	require.NoError(t, RegisterStatus(reg, func() status.Snapshot { return snap }), "re-registering replaces the old source")

	expected := `
# HELP tmc_syncer_informer_objects Objects in the informer cache of the resource.
# TYPE tmc_syncer_informer_objects gauge
tmc_syncer_informer_objects{resource="configmaps",side="downstream"} 2
tmc_syncer_informer_objects{resource="configmaps",side="upstream"} 4
# HELP tmc_syncer_resource_compatible 1 when the resource is Accepted, 0 when Incompatible.
# TYPE tmc_syncer_resource_compatible gauge
tmc_syncer_resource_compatible{resource="configmaps"} 1
tmc_syncer_resource_compatible{resource="widgets.w"} 0
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"tmc_syncer_informer_objects", "tmc_syncer_resource_compatible"))
	n, err := testutil.GatherAndCount(reg, "tmc_syncer_informer_synced", "tmc_syncer_resource_queue_depth")
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}
