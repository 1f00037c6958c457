package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMetricsCountAndShareRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	require.NoError(t, err)
	again, err := New(reg)
	require.NoError(t, err, "a second syncer in one process reuses the collectors")

	m.Conflict("Abort", "configmaps")
	again.Conflict("Abort", "configmaps")
	m.DriftReverted("configmaps")
	m.PermanentError("services", "permanent")
	m.Applied("configmaps", "unchanged")
	m.Deleted("configmaps")
	m.OrphanDeleted()
	m.NamespaceDeleted()
	assert.InDelta(t, 2, testutil.ToFloat64(m.conflicts.WithLabelValues("Abort", "configmaps")), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.driftReverts.WithLabelValues("configmaps")), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.orphans), 0)

	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		assert.Regexp(t, `^tmc_syncer_downstream_`, f.GetName())
	}
	assert.Len(t, families, 7)

	var none *Metrics
	none.Conflict("Abort", "x")
	none.DriftReverted("x")
	none.PermanentError("x", "y")
	none.Applied("x", "y")
	none.Deleted("x")
	none.OrphanDeleted()
	none.NamespaceDeleted()
	unregistered, err := New(nil)
	require.NoError(t, err)
	unregistered.Conflict("Abort", "x")
}

func TestMetricsNameClash(t *testing.T) {
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "tmc_syncer_downstream_conflicts_total", Help: "x"})))
	_, err := New(reg)
	require.Error(t, err)
}
