package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConditionType names a condition of a SyncTarget.
type ConditionType string

// The condition types kcp and this syncer set on a SyncTarget.
const (
	ReadyCondition           ConditionType     = "Ready"
	SyncerReady              ConditionType     = "SyncerReady"
	APIImporterReady         ConditionType     = "APIImporterReady"
	HeartbeatHealthy         ConditionType     = "HeartbeatHealthy"
	SyncerAuthorized         ConditionType     = "SyncerAuthorized"
	TunnelConnected          ConditionType     = "TunnelConnected"
	ErrorHeartbeatReason                       = "ErrorHeartbeat"
	ConditionSeverityError   ConditionSeverity = "Error"
	ConditionSeverityWarning ConditionSeverity = "Warning"
	ConditionSeverityInfo    ConditionSeverity = "Info"
	ConditionSeverityNone    ConditionSeverity = ""
)

// ConditionSeverity says how bad a False condition is.
type ConditionSeverity string

// Condition is kcp's condition type: a metav1-like condition with a severity.
type Condition struct {
	Type               ConditionType          `json:"type"`
	Status             corev1.ConditionStatus `json:"status"`
	Severity           ConditionSeverity      `json:"severity,omitempty"`
	LastTransitionTime metav1.Time            `json:"lastTransitionTime,omitempty"`
	Reason             string                 `json:"reason,omitempty"`
	Message            string                 `json:"message,omitempty"`
}

// Conditions is a list of conditions.
type Conditions []Condition

// Get returns the condition of the given type, or nil.
func (c Conditions) Get(t ConditionType) *Condition {
	for i := range c {
		if c[i].Type == t {
			return &c[i]
		}
	}
	return nil
}
