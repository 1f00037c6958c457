package monitor

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// Reasons the monitor sets.
const (
	ReasonHeartbeat          = "Heartbeat"
	ReasonTunnelConnected    = "TunnelConnected"
	ReasonTunnelDisconnected = "TunnelDisconnected"
	ReasonReady              = "Ready"
	ReasonSyncerReadyMissing = "SyncerReadyUnknown"
	ReasonHeartbeatPending   = "HeartbeatPending"
)

// evaluation is the decision of one look at a SyncTarget.
type evaluation struct {
	conditions workloadv1alpha1.Conditions
	changed    bool
	// next is how long until the target must be looked at again; 0 = no need.
	next time.Duration
}

// evaluate decides HeartbeatHealthy, TunnelConnected (connected non-nil) and
// Ready of st at now. threshold is the heartbeat age limit, period the
// damping window: a condition's status flips at most once per period.
func evaluate(st *workloadv1alpha1.SyncTarget, connected *bool, now time.Time, threshold, period time.Duration) evaluation {
	conds := append(workloadv1alpha1.Conditions(nil), st.Status.Conditions...)
	ev := evaluation{}
	later := func(d time.Duration) {
		if d > 0 && (ev.next == 0 || d < ev.next) {
			ev.next = d
		}
	}
	set := func(c workloadv1alpha1.Condition) {
		if old := conds.Get(c.Type); old != nil && old.Status != c.Status {
			if since := now.Sub(old.LastTransitionTime.Time); since < period {
				later(period - since) // damped: flip once the window is over
				return
			}
		}
		conds.Set(c, metav1.NewTime(now))
	}

	hb := st.Status.LastSyncerHeartbeatTime
	switch {
	case hb == nil && now.Sub(st.CreationTimestamp.Time) < threshold:
		later(threshold - now.Sub(st.CreationTimestamp.Time) + time.Millisecond) // grace for a new target
	case hb == nil:
		set(workloadv1alpha1.Condition{Type: workloadv1alpha1.HeartbeatHealthy, Status: corev1.ConditionFalse,
			Severity: workloadv1alpha1.ConditionSeverityError, Reason: workloadv1alpha1.ErrorHeartbeatReason,
			Message: "no heartbeat yet"})
	case now.Sub(hb.Time) > threshold:
		set(workloadv1alpha1.Condition{Type: workloadv1alpha1.HeartbeatHealthy, Status: corev1.ConditionFalse,
			Severity: workloadv1alpha1.ConditionSeverityError, Reason: workloadv1alpha1.ErrorHeartbeatReason,
			Message: "no heartbeat since " + hb.UTC().Format(time.RFC3339)})
	default:
		set(workloadv1alpha1.Condition{Type: workloadv1alpha1.HeartbeatHealthy, Status: corev1.ConditionTrue, Reason: ReasonHeartbeat})
		later(threshold - now.Sub(hb.Time) + time.Millisecond) // the moment it expires
	}
	if connected != nil {
		if *connected {
			set(workloadv1alpha1.Condition{Type: workloadv1alpha1.TunnelConnected, Status: corev1.ConditionTrue, Reason: ReasonTunnelConnected})
		} else {
			set(workloadv1alpha1.Condition{Type: workloadv1alpha1.TunnelConnected, Status: corev1.ConditionFalse,
				Severity: workloadv1alpha1.ConditionSeverityError, Reason: ReasonTunnelDisconnected,
				Message: "the syncer has no tunnel session to the tunnel server"})
		}
	}
	set(summary(conds))
	ev.conditions = conds
	ev.changed = !equal(st.Status.Conditions, conds)
	return ev
}

// summary is Ready: True when SyncerReady and HeartbeatHealthy are True and
// TunnelConnected is True or absent. When False, the reason is the first
// failing one in the order HeartbeatHealthy, TunnelConnected, SyncerReady (a
// silent syncer's own SyncerReady is stale, so the heartbeat says more).
func summary(conds workloadv1alpha1.Conditions) workloadv1alpha1.Condition {
	var reasons, messages []string
	for _, t := range []workloadv1alpha1.ConditionType{workloadv1alpha1.HeartbeatHealthy, workloadv1alpha1.TunnelConnected, workloadv1alpha1.SyncerReady} {
		c := conds.Get(t)
		switch {
		case c == nil && t == workloadv1alpha1.TunnelConnected:
		case c == nil && t == workloadv1alpha1.SyncerReady:
			reasons = append(reasons, ReasonSyncerReadyMissing)
			messages = append(messages, "SyncerReady: not reported by the syncer yet")
		case c == nil:
			reasons = append(reasons, ReasonHeartbeatPending)
			messages = append(messages, "HeartbeatHealthy: waiting for the first heartbeat")
		case c.Status != corev1.ConditionTrue:
			reasons = append(reasons, c.Reason)
			messages = append(messages, fmt.Sprintf("%s: %s", t, c.Message))
		}
	}
	if len(reasons) == 0 {
		return workloadv1alpha1.Condition{Type: workloadv1alpha1.ReadyCondition, Status: corev1.ConditionTrue, Reason: ReasonReady}
	}
	return workloadv1alpha1.Condition{Type: workloadv1alpha1.ReadyCondition, Status: corev1.ConditionFalse,
		Severity: workloadv1alpha1.ConditionSeverityError, Reason: reasons[0], Message: strings.Join(messages, "; ")}
}

func equal(a, b workloadv1alpha1.Conditions) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Severity != y.Severity || x.Reason != y.Reason ||
			x.Message != y.Message || !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
	}
	return true
}
