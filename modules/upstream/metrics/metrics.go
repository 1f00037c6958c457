// Package metrics holds the upstream syncer's Prometheus collectors, registered on a
// caller-provided registry. Every name is prefixed tmc_syncer_.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime/schema"

	enginemetrics "github.com/tmc-syncer/syncer/modules/engine/metrics"
)

// Namespace prefixes every metric name.
const Namespace = "tmc_syncer"

// Reasons an Event is not forwarded, the values of the dropped counter's reason label.
const (
	DropFilteredType     = "filtered_type"
	DropFilteredReason   = "filtered_reason"
	DropTooOld           = "too_old"
	DropNotSynced        = "not_synced"
	DropObjectRateLimit  = "object_rate_limited"
	DropGlobalRateLimit  = "global_rate_limited"
	DropUpstreamRejected = "upstream_rejected"
)

// Metrics holds the collectors. A nil *Metrics is valid and records nothing, so tests and
// callers without a registry need no special case.
type Metrics struct {
	statusLatency *prometheus.HistogramVec
	statusWrites  *prometheus.CounterVec
	forwarded     prometheus.Counter
	deduplicated  prometheus.Counter
	dropped       *prometheus.CounterVec
	pending       prometheus.Gauge
}

// New creates the collectors and registers them on reg. Registering on a registry that
// already holds them (a restarted syncer) reuses the registered collectors.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		statusLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "status", Name: "sync_latency_seconds",
			Help:    "Time from a downstream status change seen by the informer to the upstream write, per resource.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms … ~16 s
		}, []string{"resource"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "status", Name: "writes_total",
			Help: "Upstream status writes by resource and kind of write (status, annotation, conflict, no_subresource).",
		}, []string{"resource", "write"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "events", Name: "forwarded_total",
			Help: "Downstream Events created upstream.",
		}),
		deduplicated: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "events", Name: "deduplicated_total",
			Help: "Repeats of downstream Events folded into an existing upstream Event (count and lastTimestamp updated).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "events", Name: "dropped_total",
			Help: "Downstream Events not forwarded, by reason.",
		}, []string{"reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "events", Name: "pending",
			Help: "Events waiting for a rate-limit token.",
		}),
	}
	var err error
	if m.statusLatency, err = enginemetrics.Register(reg, m.statusLatency); err != nil {
		return nil, err
	}
	if m.statusWrites, err = enginemetrics.Register(reg, m.statusWrites); err != nil {
		return nil, err
	}
	if m.forwarded, err = enginemetrics.Register(reg, m.forwarded); err != nil {
		return nil, err
	}
	if m.deduplicated, err = enginemetrics.Register(reg, m.deduplicated); err != nil {
		return nil, err
	}
	if m.dropped, err = enginemetrics.Register(reg, m.dropped); err != nil {
		return nil, err
	}
	if m.pending, err = enginemetrics.Register(reg, m.pending); err != nil {
		return nil, err
	}
	return m, nil
}

func resource(gvr schema.GroupVersionResource) string { return gvr.GroupResource().String() }

// ObserveStatusLatency records the time a status change took to reach upstream.
func (m *Metrics) ObserveStatusLatency(gvr schema.GroupVersionResource, d time.Duration) {
	if m == nil {
		return
	}
	m.statusLatency.WithLabelValues(resource(gvr)).Observe(d.Seconds())
}

// StatusWrite counts one upstream write of the given kind.
func (m *Metrics) StatusWrite(gvr schema.GroupVersionResource, write string) {
	if m == nil {
		return
	}
	m.statusWrites.WithLabelValues(resource(gvr), write).Inc()
}

// EventForwarded counts an Event created upstream.
func (m *Metrics) EventForwarded() {
	if m == nil {
		return
	}
	m.forwarded.Inc()
}

// EventDeduplicated counts a repeat folded into an existing upstream Event.
func (m *Metrics) EventDeduplicated() {
	if m == nil {
		return
	}
	m.deduplicated.Inc()
}

// EventDropped counts an Event not forwarded for reason.
func (m *Metrics) EventDropped(reason string) {
	if m == nil {
		return
	}
	m.dropped.WithLabelValues(reason).Inc()
}

// SetEventsPending sets the number of Events waiting for a token.
func (m *Metrics) SetEventsPending(n int) {
	if m == nil {
		return
	}
	m.pending.Set(float64(n))
}
