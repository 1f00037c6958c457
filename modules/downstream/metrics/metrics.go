// Package metrics holds the Prometheus collectors of downstream sync. Every method is safe
// on a nil *Metrics, so controllers need not check whether metrics are wanted.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	enginemetrics "github.com/tmc-syncer/syncer/modules/engine/metrics"
)

// Metrics are the downstream sync collectors, all prefixed tmc_syncer_downstream_.
type Metrics struct {
	conflicts       *prometheus.CounterVec
	driftReverts    *prometheus.CounterVec
	permanentErrors *prometheus.CounterVec
	applies         *prometheus.CounterVec
	deletes         *prometheus.CounterVec
	orphans         prometheus.Counter
	namespaces      prometheus.Counter
}

// New creates the collectors and registers them on reg (none when reg is nil). A collector
// already registered (a second syncer in one process) is reused.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_conflicts_total",
			Help: "Downstream objects of the same name that are not ours, by conflict policy and resource.",
		}, []string{"policy", "resource"}),
		driftReverts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_drift_reverts_total",
			Help: "Downstream objects changed by another field manager and re-applied, by resource.",
		}, []string{"resource"}),
		permanentErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_permanent_errors_total",
			Help: "Downstream writes rejected permanently (invalid, forbidden, immutable), by resource and class.",
		}, []string{"resource", "class"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_applies_total",
			Help: "Apply decisions by resource and outcome (unchanged means no request was sent).",
		}, []string{"resource", "outcome"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_deletes_total",
			Help: "Downstream objects deleted because upstream deleted or unassigned them, by resource.",
		}, []string{"resource"}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_orphans_deleted_total",
			Help: "Downstream objects deleted on start because their upstream object was gone.",
		}),
		namespaces: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tmc_syncer_downstream_namespaces_deleted_total",
			Help: "Downstream namespaces the syncer created and deleted once unused.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.conflicts, err = enginemetrics.Register(reg, m.conflicts); err != nil {
		return nil, err
	}
	if m.driftReverts, err = enginemetrics.Register(reg, m.driftReverts); err != nil {
		return nil, err
	}
	if m.permanentErrors, err = enginemetrics.Register(reg, m.permanentErrors); err != nil {
		return nil, err
	}
	if m.applies, err = enginemetrics.Register(reg, m.applies); err != nil {
		return nil, err
	}
	if m.deletes, err = enginemetrics.Register(reg, m.deletes); err != nil {
		return nil, err
	}
	if m.orphans, err = enginemetrics.Register(reg, m.orphans); err != nil {
		return nil, err
	}
	if m.namespaces, err = enginemetrics.Register(reg, m.namespaces); err != nil {
		return nil, err
	}
	return m, nil
}

// Conflict counts a foreign object met under policy.
func (m *Metrics) Conflict(policy, resource string) {
	if m != nil {
		m.conflicts.WithLabelValues(policy, resource).Inc()
	}
}

// DriftReverted counts a drifted object put back.
func (m *Metrics) DriftReverted(resource string) {
	if m != nil {
		m.driftReverts.WithLabelValues(resource).Inc()
	}
}

// PermanentError counts a permanently rejected write of class.
func (m *Metrics) PermanentError(resource, class string) {
	if m != nil {
		m.permanentErrors.WithLabelValues(resource, class).Inc()
	}
}

// Applied counts an apply decision.
func (m *Metrics) Applied(resource, outcome string) {
	if m != nil {
		m.applies.WithLabelValues(resource, outcome).Inc()
	}
}

// Deleted counts a downstream delete.
func (m *Metrics) Deleted(resource string) {
	if m != nil {
		m.deletes.WithLabelValues(resource).Inc()
	}
}

// OrphanDeleted counts an orphan removed on start.
func (m *Metrics) OrphanDeleted() {
	if m != nil {
		m.orphans.Inc()
	}
}

// NamespaceDeleted counts a downstream namespace deleted.
func (m *Metrics) NamespaceDeleted() {
	if m != nil {
		m.namespaces.Inc()
	}
}
