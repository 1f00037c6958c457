package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestMetricsRegisterOnceAndCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	require.NoError(t, err)
	again, err := New(reg)
	require.NoError(t, err, "a restarted syncer reuses the registered collectors")

	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	m.ObserveStatusLatency(gvr, 3*time.Millisecond)
	m.StatusWrite(gvr, "status")
	again.EventForwarded()
	m.EventDeduplicated()
	m.EventDropped(DropTooOld)
	m.SetEventsPending(7)

	assert.Equal(t, 1, testutil.CollectAndCount(m.statusLatency, "tmc_syncer_status_sync_latency_seconds"))
	assert.InDelta(t, 1, testutil.ToFloat64(m.statusWrites.WithLabelValues("deployments.apps", "status")), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.forwarded), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.deduplicated), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.dropped.WithLabelValues(DropTooOld)), 0)
	assert.InDelta(t, 7, testutil.ToFloat64(m.pending), 0)
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	gvr := schema.GroupVersionResource{Resource: "x"}
	assert.NotPanics(t, func() {
		m.ObserveStatusLatency(gvr, time.Second)
		m.StatusWrite(gvr, "status")
		m.EventForwarded()
		m.EventDeduplicated()
		m.EventDropped("x")
		m.SetEventsPending(1)
	})
}

func TestRegisterConflictIsAnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Another collector with the same name but other labels.
	require.NoError(t, reg.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "tmc_syncer_events_forwarded_total", Help: "other"})))
	_, err := New(reg)
	require.Error(t, err)
}
