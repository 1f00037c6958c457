package monitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

const (
	threshold = 40 * time.Second
	period    = 10 * time.Second
)

func cond(t workloadv1alpha1.ConditionType, s corev1.ConditionStatus, ltt time.Time) workloadv1alpha1.Condition {
	return workloadv1alpha1.Condition{Type: t, Status: s, LastTransitionTime: metav1.NewTime(ltt)}
}

func target(hb *time.Time, conds ...workloadv1alpha1.Condition) *workloadv1alpha1.SyncTarget {
	st := &workloadv1alpha1.SyncTarget{ObjectMeta: metav1.ObjectMeta{Name: "st", CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))}}
	if hb != nil {
		t := metav1.NewTime(*hb)
		st.Status.LastSyncerHeartbeatTime = &t
	}
	st.Status.Conditions = conds
	return st
}

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func TestEvaluate(t *testing.T) {
	yes, no := true, false
	syncerReady := cond(workloadv1alpha1.SyncerReady, corev1.ConditionTrue, t0.Add(-time.Hour))
	for _, tc := range []struct {
		name       string
		st         *workloadv1alpha1.SyncTarget
		connected  *bool
		want       map[workloadv1alpha1.ConditionType]corev1.ConditionStatus
		wantReason map[workloadv1alpha1.ConditionType]string
		wantMsg    string
		next       time.Duration
		changed    bool
	}{{
		name: "fresh heartbeat is healthy and requeued for its expiry",
		st:   target(at(-5*time.Second), syncerReady),
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{
			workloadv1alpha1.HeartbeatHealthy: corev1.ConditionTrue, workloadv1alpha1.ReadyCondition: corev1.ConditionTrue},
		next: 35*time.Second + time.Millisecond, changed: true,
	}, {
		name: "heartbeat older than the threshold is unhealthy",
		st: target(at(-41*time.Second), syncerReady,
			cond(workloadv1alpha1.HeartbeatHealthy, corev1.ConditionTrue, t0.Add(-time.Hour))),
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{
			workloadv1alpha1.HeartbeatHealthy: corev1.ConditionFalse, workloadv1alpha1.ReadyCondition: corev1.ConditionFalse},
		wantReason: map[workloadv1alpha1.ConditionType]string{
			workloadv1alpha1.HeartbeatHealthy: "ErrorHeartbeat", workloadv1alpha1.ReadyCondition: "ErrorHeartbeat"},
		wantMsg: "no heartbeat since 2026-11-27T11:59:19Z",
		changed: true,
	}, {
		name: "exactly at the threshold is still healthy",
		st:   target(at(-40*time.Second), syncerReady),
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{workloadv1alpha1.HeartbeatHealthy: corev1.ConditionTrue},
		next: time.Millisecond, changed: true,
	}, {
		name: "a flip within one period of the last transition is damped",
		st: target(at(-41*time.Second), syncerReady,
			cond(workloadv1alpha1.HeartbeatHealthy, corev1.ConditionTrue, t0.Add(-4*time.Second)),
			workloadv1alpha1.Condition{Type: workloadv1alpha1.ReadyCondition, Status: corev1.ConditionTrue, Reason: ReasonReady,
				LastTransitionTime: metav1.NewTime(t0.Add(-4 * time.Second))}),
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{
			workloadv1alpha1.HeartbeatHealthy: corev1.ConditionTrue, workloadv1alpha1.ReadyCondition: corev1.ConditionTrue},
		next: 6 * time.Second, changed: false,
	}, {
		name: "after the damping window the flip happens",
		st: target(at(-41*time.Second), syncerReady,
			cond(workloadv1alpha1.HeartbeatHealthy, corev1.ConditionTrue, t0.Add(-10*time.Second))),
		want:    map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{workloadv1alpha1.HeartbeatHealthy: corev1.ConditionFalse},
		changed: true,
	}, {
		name: "heartbeats resume: back to True",
		st: target(at(-time.Second), syncerReady,
			cond(workloadv1alpha1.HeartbeatHealthy, corev1.ConditionFalse, t0.Add(-time.Minute))),
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{
			workloadv1alpha1.HeartbeatHealthy: corev1.ConditionTrue, workloadv1alpha1.ReadyCondition: corev1.ConditionTrue},
		next: 39*time.Second + time.Millisecond, changed: true,
	}, {
		name: "new target without heartbeat gets a grace period",
		st: func() *workloadv1alpha1.SyncTarget {
			st := target(nil)
			st.CreationTimestamp = metav1.NewTime(t0.Add(-10 * time.Second))
			return st
		}(),
		want:       map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{workloadv1alpha1.ReadyCondition: corev1.ConditionFalse},
		wantReason: map[workloadv1alpha1.ConditionType]string{workloadv1alpha1.ReadyCondition: ReasonHeartbeatPending},
		next:       30*time.Second + time.Millisecond, changed: true,
	}, {
		name:       "target never heard from",
		st:         target(nil),
		want:       map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{workloadv1alpha1.HeartbeatHealthy: corev1.ConditionFalse},
		wantReason: map[workloadv1alpha1.ConditionType]string{workloadv1alpha1.HeartbeatHealthy: "ErrorHeartbeat"},
		wantMsg:    "no heartbeat yet",
		changed:    true,
	}, {
		name:      "tunnel disconnected makes Ready False",
		st:        target(at(-time.Second), syncerReady),
		connected: &no,
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{
			workloadv1alpha1.TunnelConnected: corev1.ConditionFalse, workloadv1alpha1.ReadyCondition: corev1.ConditionFalse},
		wantReason: map[workloadv1alpha1.ConditionType]string{workloadv1alpha1.ReadyCondition: ReasonTunnelDisconnected},
		next:       39*time.Second + time.Millisecond, changed: true,
	}, {
		name:      "tunnel connected",
		st:        target(at(-time.Second), syncerReady),
		connected: &yes,
		want: map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{
			workloadv1alpha1.TunnelConnected: corev1.ConditionTrue, workloadv1alpha1.ReadyCondition: corev1.ConditionTrue},
		next: 39*time.Second + time.Millisecond, changed: true,
	}, {
		name: "SyncerReady False makes Ready False",
		st: target(at(-time.Second), workloadv1alpha1.Condition{Type: workloadv1alpha1.SyncerReady, Status: corev1.ConditionFalse,
			Reason: "InformersNotSynced", Message: "waiting"}),
		want:       map[workloadv1alpha1.ConditionType]corev1.ConditionStatus{workloadv1alpha1.ReadyCondition: corev1.ConditionFalse},
		wantReason: map[workloadv1alpha1.ConditionType]string{workloadv1alpha1.ReadyCondition: "InformersNotSynced"},
		next:       39*time.Second + time.Millisecond, changed: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ev := evaluate(tc.st, tc.connected, t0, threshold, period)
			for typ, status := range tc.want {
				c := ev.conditions.Get(typ)
				require.NotNil(t, c, "condition %s", typ)
				assert.Equal(t, status, c.Status, "status of %s", typ)
				if r, ok := tc.wantReason[typ]; ok {
					assert.Equal(t, r, c.Reason, "reason of %s", typ)
				}
			}
			if tc.wantMsg != "" {
				assert.Equal(t, tc.wantMsg, ev.conditions.Get(workloadv1alpha1.HeartbeatHealthy).Message)
			}
			assert.Equal(t, tc.next, ev.next, "requeue after")
			assert.Equal(t, tc.changed, ev.changed, "changed")
		})
	}
}

func TestEvaluateKeepsTransitionTimeAndIsStable(t *testing.T) {
	st := target(at(-5*time.Second), cond(workloadv1alpha1.SyncerReady, corev1.ConditionTrue, t0.Add(-time.Hour)))
	ev := evaluate(st, nil, t0, threshold, period)
	require.True(t, ev.changed)
	st.Status.Conditions = ev.conditions
	st.Status.LastSyncerHeartbeatTime = &metav1.Time{Time: t0.Add(5 * time.Second)}
	ev = evaluate(st, nil, t0.Add(6*time.Second), threshold, period)
	assert.False(t, ev.changed, "a new heartbeat alone changes no condition")
	assert.True(t, ev.conditions.Get(workloadv1alpha1.HeartbeatHealthy).LastTransitionTime.Time.Equal(t0))
}
