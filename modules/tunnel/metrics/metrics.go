// Package metrics exports the tunnel, the heartbeat and the tunnel server as
// Prometheus metrics (prefix tmc_syncer_) on a caller-provided registry.
// Registering again on the same registry (a component restart) reuses the
// collectors already there instead of panicking.
package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	enginemetrics "github.com/tmc-syncer/syncer/modules/engine/metrics"
	"github.com/tmc-syncer/syncer/modules/tunnel"
	"github.com/tmc-syncer/syncer/modules/tunnel/server"
)

// Namespace prefixes every metric name.
const Namespace = "tmc_syncer"

// Metric names, for dashboards and tests.
const (
	TunnelState          = Namespace + "_tunnel_state"
	TunnelConnects       = Namespace + "_tunnel_connects_total"
	TunnelConnectFailed  = Namespace + "_tunnel_connect_failures_total"
	TunnelDisconnects    = Namespace + "_tunnel_disconnects_total"
	TunnelReconnect      = Namespace + "_tunnel_reconnect_seconds"
	TunnelPingRTT        = Namespace + "_tunnel_ping_rtt_seconds"
	TunnelBytes          = Namespace + "_tunnel_bytes_total"
	TunnelStreams        = Namespace + "_tunnel_streams_total"
	TunnelOpenStreams    = Namespace + "_tunnel_open_streams"
	HeartbeatAge         = Namespace + "_heartbeat_age_seconds"
	HeartbeatFailures    = Namespace + "_heartbeat_failures_total"
	TunnelSessions       = Namespace + "_tunnel_sessions"
	TargetLastHeartbeat  = Namespace + "_synctarget_last_heartbeat_timestamp_seconds"
	TunnelProxiedRequest = Namespace + "_tunnel_proxied_requests_total"
)

// Handler serves the registry's metrics (/metrics).
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ---- tunnel ----

// Tunnel is a tunnel.Observer (client and server side) that counts in
// Prometheus, and a server.RequestObserver. Labels carry the target as
// "cluster/name".
type Tunnel struct {
	state         *prometheus.GaugeVec
	connects      *prometheus.CounterVec
	connectFailed *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	reconnect     *prometheus.HistogramVec
	rtt           *prometheus.HistogramVec
	bytes         *prometheus.CounterVec
	streams       *prometheus.CounterVec
	open          *prometheus.GaugeVec
	proxied       *prometheus.CounterVec
}

var (
	_ tunnel.Observer        = (*Tunnel)(nil)
	_ server.RequestObserver = (*Tunnel)(nil)
)

var states = []tunnel.State{tunnel.StateDisconnected, tunnel.StateConnecting, tunnel.StateConnected, tunnel.StateBackoff}

// NewTunnel creates the tunnel collectors on reg.
func NewTunnel(reg prometheus.Registerer) (*Tunnel, error) {
	t := &Tunnel{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: TunnelState,
			Help: "1 for the current state of the tunnel client (Disconnected, Connecting, Connected, Backoff), 0 for the others."},
			[]string{"target", "state"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TunnelConnects,
			Help: "Tunnels established."}, []string{"target"}),
		connectFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TunnelConnectFailed,
			Help: "Failed tunnel connection attempts by reason (dial, unauthorized, forbidden, handshake, breaker_open)."},
			[]string{"target", "reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TunnelDisconnects,
			Help: "Ended tunnels by reason (shutdown, going_away: the peer announced its shutdown, replaced, revoked, ping_timeout, closed)."}, []string{"target", "reason"}),
		reconnect: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: TunnelReconnect,
			Help:    "Time from losing a tunnel to the next one being established.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 12)}, []string{"target"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: TunnelPingRTT,
			Help:    "Round trip time of WebSocket pings.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"target"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TunnelBytes,
			Help: "Bytes moved through the tunnel WebSocket by direction (sent, received)."}, []string{"target", "direction"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TunnelStreams,
			Help: "Streams opened by kind (upstream: syncer → control plane, downstream: control plane → cluster)."},
			[]string{"target", "kind"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: TunnelOpenStreams,
			Help: "Streams open now by kind."}, []string{"target", "kind"}),
		proxied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TunnelProxiedRequest,
			Help: "Control plane → cluster requests through the tunnel server by status code (101 = upgrade)."},
			[]string{"target", "code"}),
	}
	var err error
	for _, step := range []func() error{
		func() error { t.state, err = enginemetrics.Register(reg, t.state); return err },
		func() error { t.connects, err = enginemetrics.Register(reg, t.connects); return err },
		func() error { t.connectFailed, err = enginemetrics.Register(reg, t.connectFailed); return err },
		func() error { t.disconnects, err = enginemetrics.Register(reg, t.disconnects); return err },
		func() error { t.reconnect, err = enginemetrics.Register(reg, t.reconnect); return err },
		func() error { t.rtt, err = enginemetrics.Register(reg, t.rtt); return err },
		func() error { t.bytes, err = enginemetrics.Register(reg, t.bytes); return err },
		func() error { t.streams, err = enginemetrics.Register(reg, t.streams); return err },
		func() error { t.open, err = enginemetrics.Register(reg, t.open); return err },
		func() error { t.proxied, err = enginemetrics.Register(reg, t.proxied); return err },
	} {
		if err := step(); err != nil {
			return nil, fmt.Errorf("tunnel metrics: %w", err)
		}
	}
	return t, nil
}

func kindLabel(k tunnel.StreamKind) string {
	if k == tunnel.StreamDownstream {
		return "downstream"
	}
	return "upstream"
}

// StateChanged implements tunnel.Observer.
func (t *Tunnel) StateChanged(tg tunnel.Target, _, to tunnel.State) {
	for _, s := range states {
		v := 0.0
		if s == to {
			v = 1
		}
		t.state.WithLabelValues(tg.String(), s.String()).Set(v)
	}
}

// Connected implements tunnel.Observer.
func (t *Tunnel) Connected(tg tunnel.Target, reconnect time.Duration) {
	t.connects.WithLabelValues(tg.String()).Inc()
	if reconnect > 0 {
		t.reconnect.WithLabelValues(tg.String()).Observe(reconnect.Seconds())
	}
}

// ConnectFailed implements tunnel.Observer.
func (t *Tunnel) ConnectFailed(tg tunnel.Target, reason tunnel.Reason) {
	t.connectFailed.WithLabelValues(tg.String(), string(reason)).Inc()
}

// Disconnected implements tunnel.Observer.
func (t *Tunnel) Disconnected(tg tunnel.Target, reason tunnel.Reason) {
	t.disconnects.WithLabelValues(tg.String(), string(reason)).Inc()
}

// PingRTT implements tunnel.Observer.
func (t *Tunnel) PingRTT(tg tunnel.Target, rtt time.Duration) {
	t.rtt.WithLabelValues(tg.String()).Observe(rtt.Seconds())
}

// Bytes implements tunnel.Observer.
func (t *Tunnel) Bytes(tg tunnel.Target, dir tunnel.Direction, n int) {
	d := "sent"
	if dir == tunnel.Received {
		d = "received"
	}
	t.bytes.WithLabelValues(tg.String(), d).Add(float64(n))
}

// StreamOpened implements tunnel.Observer.
func (t *Tunnel) StreamOpened(tg tunnel.Target, kind tunnel.StreamKind) {
	t.streams.WithLabelValues(tg.String(), kindLabel(kind)).Inc()
	t.open.WithLabelValues(tg.String(), kindLabel(kind)).Inc()
}

// StreamClosed implements tunnel.Observer.
func (t *Tunnel) StreamClosed(tg tunnel.Target, kind tunnel.StreamKind) {
	t.open.WithLabelValues(tg.String(), kindLabel(kind)).Dec()
}

// ProxiedRequest implements server.RequestObserver.
func (t *Tunnel) ProxiedRequest(tg tunnel.Target, code int) {
	t.proxied.WithLabelValues(tg.String(), strconv.Itoa(code)).Inc()
}

// ---- heartbeat (syncer side) ----

// Heartbeat implements heartbeat.Observer: tmc_syncer_heartbeat_age_seconds
// (seconds since the last successful heartbeat, computed at scrape time; absent
// before the first) and tmc_syncer_heartbeat_failures_total.
type Heartbeat struct {
	age      *ageCollector
	failures prometheus.Counter
}

type ageCollector struct {
	desc  *prometheus.Desc
	clock clock.PassiveClock
	last  atomic.Int64 // unix nanoseconds, 0 = never
}

func (c *ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *ageCollector) Collect(ch chan<- prometheus.Metric) {
	last := c.last.Load()
	if last == 0 {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, c.clock.Since(time.Unix(0, last)).Seconds())
}

// NewHeartbeat creates the heartbeat collectors on reg; clk nil means real time.
func NewHeartbeat(reg prometheus.Registerer, clk clock.PassiveClock) (*Heartbeat, error) {
	if clk == nil {
		clk = clock.RealClock{}
	}
	age, err := enginemetrics.Register(reg, &ageCollector{clock: clk,
		desc: prometheus.NewDesc(HeartbeatAge, "Seconds since the last successful SyncTarget heartbeat.", nil, nil)})
	if err != nil {
		return nil, fmt.Errorf("heartbeat metrics: %w", err)
	}
	failures, err := enginemetrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: HeartbeatFailures,
		Help: "Failed SyncTarget heartbeat patches."}))
	if err != nil {
		return nil, fmt.Errorf("heartbeat metrics: %w", err)
	}
	return &Heartbeat{age: age, failures: failures}, nil
}

// HeartbeatSucceeded implements heartbeat.Observer.
func (h *Heartbeat) HeartbeatSucceeded(at time.Time) { h.age.last.Store(at.UnixNano()) }

// HeartbeatFailed implements heartbeat.Observer.
func (h *Heartbeat) HeartbeatFailed(error) { h.failures.Inc() }

// ---- tunnel server ----

// SessionLister lists live tunnel sessions; *server.Registry implements it.
type SessionLister interface {
	List() []server.SessionInfo
}

// Server holds the tunnel server's own metrics: tmc_syncer_tunnel_sessions
// (from the registry at scrape time) and the last heartbeat of each
// SyncTarget (monitor.Observer). Proxied requests are counted by Tunnel.
type Server struct {
	lastHeartbeat *prometheus.GaugeVec
}

type sessionsCollector struct {
	desc     *prometheus.Desc
	sessions SessionLister
}

func (c *sessionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sessionsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(len(c.sessions.List())))
}

// NewServer creates the tunnel server collectors on reg. A sessions
// collector registered before (a restarted server) is replaced, so the
// scrape reads the current registry.
func NewServer(reg prometheus.Registerer, sessions SessionLister) (*Server, error) {
	sc := &sessionsCollector{sessions: sessions,
		desc: prometheus.NewDesc(TunnelSessions, "Live tunnel sessions on the tunnel server.", nil, nil)}
	err := reg.Register(sc)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		reg.Unregister(are.ExistingCollector)
		err = reg.Register(sc)
	}
	if err != nil {
		return nil, fmt.Errorf("tunnel server metrics: register sessions: %w", err)
	}
	last, err := enginemetrics.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: TargetLastHeartbeat,
		Help: "Unix time of the last syncer heartbeat seen on each SyncTarget."}, []string{"target"}))
	if err != nil {
		return nil, fmt.Errorf("tunnel server metrics: %w", err)
	}
	return &Server{lastHeartbeat: last}, nil
}

// TargetHeartbeat implements monitor.Observer.
func (s *Server) TargetHeartbeat(t tunnel.Target, last time.Time) {
	s.lastHeartbeat.WithLabelValues(t.String()).Set(float64(last.UnixNano()) / 1e9)
}

// TargetDeleted implements monitor.Observer.
func (s *Server) TargetDeleted(t tunnel.Target) {
	s.lastHeartbeat.DeleteLabelValues(t.String())
}
