package tunnel

import (
	"sync"
	"sync/atomic"
	"time"
)

// State is the state of the client's connection manager.
type State int32

const (
	// StateDisconnected means no connection and none being attempted (initial and final state).
	StateDisconnected State = iota
	// StateConnecting means a WebSocket handshake is in progress.
	StateConnecting
	// StateConnected means the tunnel is up.
	StateConnected
	// StateBackoff means the client waits before the next attempt.
	StateBackoff
)

// String returns the state name.
func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "Disconnected"
	case StateConnecting:
		return "Connecting"
	case StateConnected:
		return "Connected"
	case StateBackoff:
		return "Backoff"
	}
	return "Unknown"
}

// Reason classifies why a connection attempt failed or a connection ended.
type Reason string

const (
	// ReasonShutdown is a local, context-driven close.
	ReasonShutdown Reason = "shutdown"
	// ReasonReplaced is a session replaced by a newer one for the same SyncTarget.
	ReasonReplaced Reason = "replaced"
	// ReasonRevoked is a session closed by the server because its token or its RBAC no
	// longer allows it.
	ReasonRevoked Reason = "revoked"
	// ReasonConflict is a session refused because another identity holds the SyncTarget.
	ReasonConflict Reason = "conflict"
	// ReasonPingTimeout is a peer that missed too many pongs.
	ReasonPingTimeout Reason = "ping_timeout"
	// ReasonGoingAway is a session whose peer announced that it is going away (WebSocket
	// close status 1001 Going Away, sent after yamux's GoAway): on the syncer, a tunnel
	// server shutting down or restarting; on the server, a syncer stopping. A deliberate
	// end, not a failure: the client retries at once (see client.Backoff.RestartWindow).
	ReasonGoingAway Reason = "going_away"
	// ReasonClosed is a connection closed or broken by the peer or the network without
	// announcing that it is going away.
	ReasonClosed Reason = "closed"
	// ReasonDial is a failure to reach the server (TCP, TLS).
	ReasonDial Reason = "dial"
	// ReasonUnauthorized is a handshake refused with 401.
	ReasonUnauthorized Reason = "unauthorized"
	// ReasonForbidden is a handshake refused with 403.
	ReasonForbidden Reason = "forbidden"
	// ReasonHandshake is any other handshake failure.
	ReasonHandshake Reason = "handshake"
	// ReasonBreakerOpen is an attempt skipped because the circuit breaker is open.
	ReasonBreakerOpen Reason = "breaker_open"
)

// Direction is the direction of bytes relative to the observing side.
type Direction int

const (
	// Sent counts bytes written to the WebSocket by the observing side.
	Sent Direction = iota
	// Received counts bytes read from the WebSocket by the observing side.
	Received
)

// StreamKind tells what a yamux stream carries.
type StreamKind int

const (
	// StreamUpstream is a syncer → control plane stream (upstream API traffic), opened by the client.
	StreamUpstream StreamKind = iota
	// StreamDownstream is a control plane → physical cluster request, opened by the server.
	StreamDownstream
)

// Observer receives tunnel events. Implementations must be safe for
// concurrent use and fast: some methods are called on every read or write.
// Embed NopObserver to implement only part of it.
type Observer interface {
	// StateChanged reports a client state transition.
	StateChanged(t Target, from, to State)
	// Connected reports an established tunnel; reconnect is the time from
	// losing the previous connection to this one (0 for the first).
	Connected(t Target, reconnect time.Duration)
	// ConnectFailed reports a failed connection attempt.
	ConnectFailed(t Target, reason Reason)
	// Disconnected reports the end of an established tunnel.
	Disconnected(t Target, reason Reason)
	// PingRTT reports the round trip time of one WebSocket ping.
	PingRTT(t Target, rtt time.Duration)
	// Bytes reports n bytes moved through the WebSocket.
	Bytes(t Target, dir Direction, n int)
	// StreamOpened reports a new stream of the given kind.
	StreamOpened(t Target, kind StreamKind)
	// StreamClosed reports the end of a stream of the given kind.
	StreamClosed(t Target, kind StreamKind)
}

// NopObserver ignores every event; it is the default Observer.
type NopObserver struct{}

var _ Observer = NopObserver{}

// StateChanged implements Observer.
func (NopObserver) StateChanged(Target, State, State) {}

// Connected implements Observer.
func (NopObserver) Connected(Target, time.Duration) {}

// ConnectFailed implements Observer.
func (NopObserver) ConnectFailed(Target, Reason) {}

// Disconnected implements Observer.
func (NopObserver) Disconnected(Target, Reason) {}

// PingRTT implements Observer.
func (NopObserver) PingRTT(Target, time.Duration) {}

// Bytes implements Observer.
func (NopObserver) Bytes(Target, Direction, int) {}

// StreamOpened implements Observer.
func (NopObserver) StreamOpened(Target, StreamKind) {}

// StreamClosed implements Observer.
func (NopObserver) StreamClosed(Target, StreamKind) {}

// Stats is an Observer that keeps counters in memory, for tests, status pages
// and as the source a metrics collector can read. Targets are not told apart.
type Stats struct {
	state        atomic.Int32
	connects     atomic.Int64
	bytesSent    atomic.Int64
	bytesRecv    atomic.Int64
	lastRTT      atomic.Int64
	lastReconn   atomic.Int64
	streamsOpen  [2]atomic.Int64
	streamsTotal [2]atomic.Int64

	mu           sync.Mutex
	failures     map[Reason]int64
	disconnects  map[Reason]int64
	stateHistory []State
}

var _ Observer = (*Stats)(nil)

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	State            State
	Connects         int64
	ConnectFailures  map[Reason]int64
	Disconnects      map[Reason]int64
	BytesSent        int64
	BytesReceived    int64
	LastPingRTT      time.Duration
	LastReconnect    time.Duration
	OpenStreams      map[StreamKind]int64
	TotalStreams     map[StreamKind]int64
	StateTransitions []State
}

// StateChanged implements Observer.
func (s *Stats) StateChanged(_ Target, _, to State) {
	s.state.Store(int32(to))
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stateHistory) < 1024 {
		s.stateHistory = append(s.stateHistory, to)
	}
}

// Connected implements Observer.
func (s *Stats) Connected(_ Target, reconnect time.Duration) {
	s.connects.Add(1)
	s.lastReconn.Store(int64(reconnect))
}

// ConnectFailed implements Observer.
func (s *Stats) ConnectFailed(_ Target, reason Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures == nil {
		s.failures = map[Reason]int64{}
	}
	s.failures[reason]++
}

// Disconnected implements Observer.
func (s *Stats) Disconnected(_ Target, reason Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disconnects == nil {
		s.disconnects = map[Reason]int64{}
	}
	s.disconnects[reason]++
}

// PingRTT implements Observer.
func (s *Stats) PingRTT(_ Target, rtt time.Duration) { s.lastRTT.Store(int64(rtt)) }

// Bytes implements Observer.
func (s *Stats) Bytes(_ Target, dir Direction, n int) {
	if dir == Sent {
		s.bytesSent.Add(int64(n))
	} else {
		s.bytesRecv.Add(int64(n))
	}
}

// StreamOpened implements Observer.
func (s *Stats) StreamOpened(_ Target, kind StreamKind) {
	s.streamsOpen[kind&1].Add(1)
	s.streamsTotal[kind&1].Add(1)
}

// StreamClosed implements Observer.
func (s *Stats) StreamClosed(_ Target, kind StreamKind) { s.streamsOpen[kind&1].Add(-1) }

// Snapshot copies the current counters.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		State:           State(s.state.Load()),
		Connects:        s.connects.Load(),
		BytesSent:       s.bytesSent.Load(),
		BytesReceived:   s.bytesRecv.Load(),
		LastPingRTT:     time.Duration(s.lastRTT.Load()),
		LastReconnect:   time.Duration(s.lastReconn.Load()),
		ConnectFailures: map[Reason]int64{},
		Disconnects:     map[Reason]int64{},
		OpenStreams:     map[StreamKind]int64{},
		TotalStreams:    map[StreamKind]int64{},
	}
	for _, k := range []StreamKind{StreamUpstream, StreamDownstream} {
		snap.OpenStreams[k] = s.streamsOpen[k].Load()
		snap.TotalStreams[k] = s.streamsTotal[k].Load()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.failures {
		snap.ConnectFailures[k] = v
	}
	for k, v := range s.disconnects {
		snap.Disconnects[k] = v
	}
	snap.StateTransitions = append([]State(nil), s.stateHistory...)
	return snap
}

// Observers fans every event out to each of obs in order. Members that also
// have a ProxiedRequest(Target, int) method (server.RequestObserver) receive
// those calls too.
func Observers(obs ...Observer) Observer { return multiObserver(obs) }

type multiObserver []Observer

// StateChanged implements Observer.
func (m multiObserver) StateChanged(t Target, from, to State) {
	for _, o := range m {
		o.StateChanged(t, from, to)
	}
}

// Connected implements Observer.
func (m multiObserver) Connected(t Target, reconnect time.Duration) {
	for _, o := range m {
		o.Connected(t, reconnect)
	}
}

// ConnectFailed implements Observer.
func (m multiObserver) ConnectFailed(t Target, reason Reason) {
	for _, o := range m {
		o.ConnectFailed(t, reason)
	}
}

// Disconnected implements Observer.
func (m multiObserver) Disconnected(t Target, reason Reason) {
	for _, o := range m {
		o.Disconnected(t, reason)
	}
}

// PingRTT implements Observer.
func (m multiObserver) PingRTT(t Target, rtt time.Duration) {
	for _, o := range m {
		o.PingRTT(t, rtt)
	}
}

// Bytes implements Observer.
func (m multiObserver) Bytes(t Target, dir Direction, n int) {
	for _, o := range m {
		o.Bytes(t, dir, n)
	}
}

// StreamOpened implements Observer.
func (m multiObserver) StreamOpened(t Target, kind StreamKind) {
	for _, o := range m {
		o.StreamOpened(t, kind)
	}
}

// StreamClosed implements Observer.
func (m multiObserver) StreamClosed(t Target, kind StreamKind) {
	for _, o := range m {
		o.StreamClosed(t, kind)
	}
}

// ProxiedRequest forwards to the members that count proxied requests.
func (m multiObserver) ProxiedRequest(t Target, code int) {
	for _, o := range m {
		if ro, ok := o.(interface{ ProxiedRequest(Target, int) }); ok {
			ro.ProxiedRequest(t, code)
		}
	}
}
