package statuspage

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// ErrorEntry is one recent error of a target.
type ErrorEntry struct {
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

// ErrorLog keeps the last few errors of each target. It is a tunnel.Observer
// that records failed connection attempts and abnormal disconnects, and
// callers can Record their own. Safe for concurrent use.
type ErrorLog struct {
	tunnel.NopObserver
	clock clock.PassiveClock
	keep  int

	mu     sync.Mutex
	errors map[tunnel.Target][]ErrorEntry // oldest first
}

var (
	_ tunnel.Observer = (*ErrorLog)(nil)
	_ Errors          = (*ErrorLog)(nil)
)

// NewErrorLog keeps the last keep (default 5) errors per target; clk nil means real time.
func NewErrorLog(keep int, clk clock.PassiveClock) *ErrorLog {
	if keep <= 0 {
		keep = 5
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &ErrorLog{clock: clk, keep: keep, errors: map[tunnel.Target][]ErrorEntry{}}
}

// Record adds an error of t.
func (l *ErrorLog) Record(t tunnel.Target, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := append(l.errors[t], ErrorEntry{Time: l.clock.Now().UTC(), Message: msg})
	if len(list) > l.keep {
		list = list[len(list)-l.keep:]
	}
	l.errors[t] = list
}

// RecentErrors implements Errors, newest first.
func (l *ErrorLog) RecentErrors(t tunnel.Target) []ErrorEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.errors[t]
	out := make([]ErrorEntry, len(list))
	for i, e := range list {
		out[len(list)-1-i] = e
	}
	return out
}

// ConnectFailed implements tunnel.Observer.
func (l *ErrorLog) ConnectFailed(t tunnel.Target, reason tunnel.Reason) {
	l.Record(t, fmt.Sprintf("tunnel connection attempt failed: %s", reason))
}

// Disconnected implements tunnel.Observer: shutdowns (this side's, or announced
// by the peer) and replacements are normal.
func (l *ErrorLog) Disconnected(t tunnel.Target, reason tunnel.Reason) {
	if reason == tunnel.ReasonShutdown || reason == tunnel.ReasonGoingAway || reason == tunnel.ReasonReplaced {
		return
	}
	l.Record(t, fmt.Sprintf("tunnel disconnected: %s", reason))
}

// humanSeconds renders an age like "4s", "3m 20s", "2h 5m".
func humanSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func trimFloat(f float64) string {
	s := strconv.FormatFloat(f, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0")
}
