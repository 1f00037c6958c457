package events

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
)

// record is a downstream Event reduced to what forwarding needs. Both Event APIs store the
// same objects but spell repeats differently (core/v1 count and lastTimestamp,
// events.k8s.io/v1 series), so each shape is read into a record first.
type record struct {
	UID       types.UID
	Namespace string
	Name      string
	Regarding corev1.ObjectReference
	Type      string
	Reason    string
	Message   string
	Count     int32
	First     time.Time
	Last      time.Time
}

// Key is the cache key of the downstream Event.
func (r record) Key() string { return r.Namespace + "/" + r.Name }

// fromCore reads a core/v1 Event, written by either an old-style recorder (count,
// lastTimestamp) or a new one (eventTime, series).
func fromCore(e *corev1.Event) record {
	r := record{
		UID: e.UID, Namespace: e.Namespace, Name: e.Name, Regarding: e.InvolvedObject,
		Type: e.Type, Reason: e.Reason, Message: e.Message, Count: max(e.Count, 1),
		First: firstNonZero(e.FirstTimestamp.Time, e.EventTime.Time, e.CreationTimestamp.Time),
		Last:  firstNonZero(e.LastTimestamp.Time, e.EventTime.Time, e.FirstTimestamp.Time, e.CreationTimestamp.Time),
	}
	if s := e.Series; s != nil {
		r.Count = max(r.Count, s.Count)
		r.Last = latest(r.Last, s.LastObservedTime.Time)
	}
	return r
}

// fromEvents reads an events.k8s.io/v1 Event.
func fromEvents(e *eventsv1.Event) record {
	r := record{
		UID: e.UID, Namespace: e.Namespace, Name: e.Name, Regarding: e.Regarding,
		Type: e.Type, Reason: e.Reason, Message: e.Note, Count: max(e.DeprecatedCount, 1),
		First: firstNonZero(e.DeprecatedFirstTimestamp.Time, e.EventTime.Time, e.CreationTimestamp.Time),
		Last:  firstNonZero(e.DeprecatedLastTimestamp.Time, e.EventTime.Time, e.DeprecatedFirstTimestamp.Time, e.CreationTimestamp.Time),
	}
	if s := e.Series; s != nil {
		r.Count = max(r.Count, s.Count)
		r.Last = latest(r.Last, s.LastObservedTime.Time)
	}
	return r
}

func firstNonZero(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// UpstreamName is the deterministic name of the upstream copy of the downstream Event uid
// attached to the upstream object objectName: a re-listing syncer finds its earlier copy
// instead of creating another. It reads like kubectl's "<object>.<hex>" names.
func UpstreamName(objectName string, uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	suffix := "." + hex.EncodeToString(sum[:8])
	const maxLen = 253
	if len(objectName) > maxLen-len(suffix) {
		objectName = objectName[:maxLen-len(suffix)]
	}
	return objectName + suffix
}
