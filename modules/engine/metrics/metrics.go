// Package metrics exposes the engine as Prometheus metrics on a caller-provided
// registry: client-go work-queue metrics (through workqueue.MetricsProvider),
// reconcile outcomes, and informer state from status snapshots. Every name is
// prefixed tmc_syncer_.
package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"

	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/status"
)

// Namespace prefixes every metric name.
const Namespace = "tmc_syncer"

// Metrics holds the engine's collectors. It implements workqueue.MetricsProvider
// and queue.Observer.
type Metrics struct {
	depth          *prometheus.GaugeVec
	adds           *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	workDuration   *prometheus.HistogramVec
	unfinished     *prometheus.GaugeVec
	longestRunning *prometheus.GaugeVec
	retries        *prometheus.CounterVec
	reconciles     *prometheus.CounterVec
	reconcileTime  *prometheus.HistogramVec
	syncLatency    *prometheus.HistogramVec
}

var (
	_ workqueue.MetricsProvider = (*Metrics)(nil)
	_ queue.Observer            = (*Metrics)(nil)
	_ queue.LatencyObserver     = (*Metrics)(nil)
)

// New creates the collectors and registers them on reg. Registering again on
// the same registry (a component restart) reuses the collectors already there.
func New(reg prometheus.Registerer) (*Metrics, error) {
	buckets := prometheus.ExponentialBuckets(0.001, 4, 10) // 1 ms … ~4.4 min
	m := &Metrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "depth",
			Help: "Current depth of the work queue."}, []string{"name"}),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "adds_total",
			Help: "Number of adds handled by the work queue."}, []string{"name"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "queue_duration_seconds",
			Help: "How long an item stays in the work queue before being requested.", Buckets: buckets}, []string{"name"}),
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "work_duration_seconds",
			Help: "How long processing an item from the work queue takes.", Buckets: buckets}, []string{"name"}),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "unfinished_work_seconds",
			Help: "Seconds of work in progress not yet observed by work_duration."}, []string{"name"}),
		longestRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "longest_running_processor_seconds",
			Help: "Seconds the longest running processor of the queue has been running."}, []string{"name"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "workqueue", Name: "retries_total",
			Help: "Number of retries handled by the work queue."}, []string{"name"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "reconciles_total",
			Help: "Reconciles by controller and result (success, error, requeue, panic)."}, []string{"controller", "result"}),
		reconcileTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "reconcile_duration_seconds",
			Help: "Duration of Reconcile calls by controller.", Buckets: buckets}, []string{"controller"}),
		syncLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "sync_latency_seconds",
			Help:    "From a change observed (first enqueue) to the reconcile that converged it, by controller, resource and direction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"controller", "resource", "direction"}),
	}
	var err error
	if m.depth, err = Register(reg, m.depth); err != nil {
		return nil, err
	}
	if m.adds, err = Register(reg, m.adds); err != nil {
		return nil, err
	}
	if m.latency, err = Register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.workDuration, err = Register(reg, m.workDuration); err != nil {
		return nil, err
	}
	if m.unfinished, err = Register(reg, m.unfinished); err != nil {
		return nil, err
	}
	if m.longestRunning, err = Register(reg, m.longestRunning); err != nil {
		return nil, err
	}
	if m.retries, err = Register(reg, m.retries); err != nil {
		return nil, err
	}
	if m.reconciles, err = Register(reg, m.reconciles); err != nil {
		return nil, err
	}
	if m.reconcileTime, err = Register(reg, m.reconcileTime); err != nil {
		return nil, err
	}
	if m.syncLatency, err = Register(reg, m.syncLatency); err != nil {
		return nil, err
	}
	return m, nil
}

// Register registers c on reg, or returns the collector of the same type already
// registered with the same descriptors, so that a component restarted in the same
// process reuses its metrics instead of panicking on a duplicate registration.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register metric: %w", err)
}

// NewDepthMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return m.depth.WithLabelValues(name)
}

// NewAddsMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return m.adds.WithLabelValues(name)
}

// NewLatencyMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return m.latency.WithLabelValues(name)
}

// NewWorkDurationMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return m.workDuration.WithLabelValues(name)
}

// NewUnfinishedWorkSecondsMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.unfinished.WithLabelValues(name)
}

// NewLongestRunningProcessorSecondsMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.longestRunning.WithLabelValues(name)
}

// NewRetriesMetric implements workqueue.MetricsProvider.
func (m *Metrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return m.retries.WithLabelValues(name)
}

// ObserveReconcile implements queue.Observer.
func (m *Metrics) ObserveReconcile(controller string, _ queue.Key, result queue.Result, d time.Duration) {
	m.reconciles.WithLabelValues(controller, string(result)).Inc()
	m.reconcileTime.WithLabelValues(controller).Observe(d.Seconds())
}

// ObserveSyncLatency implements queue.LatencyObserver.
func (m *Metrics) ObserveSyncLatency(controller string, key queue.Key, d time.Duration) {
	m.syncLatency.WithLabelValues(controller, key.GVR.GroupResource().String(), string(key.Direction)).Observe(d.Seconds())
}

// SnapshotFunc returns the current engine status.
type SnapshotFunc func() status.Snapshot

// StatusCollector turns status snapshots into gauges at scrape time.
type StatusCollector struct {
	snapshot SnapshotFunc

	synced  *prometheus.Desc
	objects *prometheus.Desc
	pending *prometheus.Desc
	state   *prometheus.Desc
}

// NewStatusCollector returns a collector reading snapshot at every scrape.
func NewStatusCollector(snapshot SnapshotFunc) *StatusCollector {
	return &StatusCollector{
		snapshot: snapshot,
		synced: prometheus.NewDesc(Namespace+"_informer_synced", "1 when the informer of the resource has synced.",
			[]string{"side", "resource"}, nil),
		objects: prometheus.NewDesc(Namespace+"_informer_objects", "Objects in the informer cache of the resource.",
			[]string{"side", "resource"}, nil),
		pending: prometheus.NewDesc(Namespace+"_resource_queue_depth", "Keys of the resource queued or waiting for retry, over all controllers.",
			[]string{"resource"}, nil),
		state: prometheus.NewDesc(Namespace+"_resource_compatible", "1 when the resource is Accepted, 0 when Incompatible.",
			[]string{"resource"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *StatusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.synced
	ch <- c.objects
	ch <- c.pending
	ch <- c.state
}

// Collect implements prometheus.Collector.
func (c *StatusCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.snapshot()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, r := range snap.Resources {
		res := r.GVR.GroupResource().String()
		if r.GVR.Version != "" {
			ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, b(r.UpstreamSynced), "upstream", res)
			ch <- prometheus.MustNewConstMetric(c.synced, prometheus.GaugeValue, b(r.DownstreamSynced), "downstream", res)
			ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(r.UpstreamObjects), "upstream", res)
			ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(r.DownstreamObjects), "downstream", res)
			ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(r.QueueDepth), res)
		}
		if r.State != "" {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, b(r.State == "Accepted"), res)
		}
	}
}

// RegisterStatus registers a StatusCollector for snapshot on reg, replacing one
// registered before (a restarted engine must not report its predecessor's state).
func RegisterStatus(reg prometheus.Registerer, snapshot SnapshotFunc) error {
	c := NewStatusCollector(snapshot)
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		reg.Unregister(are.ExistingCollector)
		err = reg.Register(c)
	}
	if err != nil {
		return fmt.Errorf("register status metrics: %w", err)
	}
	return nil
}
