package events

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRecordReadsBothShapes(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	ref := corev1.ObjectReference{Kind: "Deployment", Name: "web"}
	tests := []struct {
		name        string
		got         record
		count       int32
		first, last time.Time
	}{
		{"core old style", fromCore(&corev1.Event{Count: 3, FirstTimestamp: metav1.NewTime(t0), LastTimestamp: metav1.NewTime(t1), InvolvedObject: ref}), 3, t0, t1},
		{"core without count", fromCore(&corev1.Event{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(t0)}}), 1, t0, t0},
		{"core new style with series", fromCore(&corev1.Event{EventTime: metav1.NewMicroTime(t0),
			Series: &corev1.EventSeries{Count: 4, LastObservedTime: metav1.NewMicroTime(t1)}}), 4, t0, t1},
		{"events.k8s.io single", fromEvents(&eventsv1.Event{EventTime: metav1.NewMicroTime(t0), Regarding: ref, Note: "n"}), 1, t0, t0},
		{"events.k8s.io series", fromEvents(&eventsv1.Event{EventTime: metav1.NewMicroTime(t0),
			Series: &eventsv1.EventSeries{Count: 6, LastObservedTime: metav1.NewMicroTime(t1)}}), 6, t0, t1},
		{"events.k8s.io deprecated count", fromEvents(&eventsv1.Event{DeprecatedCount: 2,
			DeprecatedFirstTimestamp: metav1.NewTime(t0), DeprecatedLastTimestamp: metav1.NewTime(t1)}), 2, t0, t1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.count, tt.got.Count)
			assert.True(t, tt.first.Equal(tt.got.First), "first %s", tt.got.First)
			assert.True(t, tt.last.Equal(tt.got.Last), "last %s", tt.got.Last)
		})
	}
	assert.Equal(t, "n", fromEvents(&eventsv1.Event{Note: "n"}).Message)
	assert.Equal(t, "ns/e", record{Namespace: "ns", Name: "e"}.Key())
}

func TestUpstreamNameIsDeterministicAndBounded(t *testing.T) {
	a := UpstreamName("web", "uid-1")
	assert.Equal(t, a, UpstreamName("web", "uid-1"))
	assert.NotEqual(t, a, UpstreamName("web", "uid-2"))
	assert.True(t, strings.HasPrefix(a, "web."))
	assert.Len(t, a, len("web.")+16)
	long := UpstreamName(strings.Repeat("x", 300), "u")
	assert.Len(t, long, 253)
}
