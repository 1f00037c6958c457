package events

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type drops struct{ keys, reasons []string }

func (d *drops) record(k, r string) { d.keys = append(d.keys, k); d.reasons = append(d.reasons, r) }

func testOutbox(l Limits) (*outbox, *drops, *time.Time) {
	d := &drops{}
	o := newOutbox(l, d.record)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.now = func() time.Time { return now }
	return o, d, &now
}

func takeAll(o *outbox) []string {
	var out []string
	for {
		_, k, ok := o.take()
		if !ok {
			return out
		}
		out = append(out, k)
	}
}

func TestOutboxPerObjectBucket(t *testing.T) {
	o, _, now := testOutbox(Limits{QPS: 1000, Burst: 1000, PerObjectQPS: 1, PerObjectBurst: 2})
	for _, k := range []string{"a1", "a2", "a3", "b1"} {
		o.Offer(k, k[:1])
	}
	assert.Equal(t, []string{"a1", "a2", "b1"}, takeAll(o), "object a has two tokens; b is not held up by a")
	wait, _, ok := o.take()
	assert.False(t, ok)
	assert.InDelta(t, time.Second, wait, float64(5*time.Millisecond), "a's next token comes in a second")
	*now = now.Add(time.Second)
	assert.Equal(t, []string{"a3"}, takeAll(o))
}

func TestOutboxGlobalBucket(t *testing.T) {
	o, _, now := testOutbox(Limits{QPS: 2, Burst: 2, PerObjectQPS: 100, PerObjectBurst: 100})
	for _, k := range []string{"a", "b", "c"} {
		o.Offer(k, k)
	}
	assert.Equal(t, []string{"a", "b"}, takeAll(o))
	wait, _, _ := o.take()
	assert.InDelta(t, 500*time.Millisecond, wait, float64(5*time.Millisecond))
	*now = now.Add(500 * time.Millisecond)
	assert.Equal(t, []string{"c"}, takeAll(o))
}

func TestOutboxDropsOldestWhenOver(t *testing.T) {
	o, d, _ := testOutbox(Limits{QPS: 1, Burst: 1, PerObjectQPS: 1, PerObjectBurst: 1, Pending: 3, PerObjectPending: 2})
	o.Offer("a1", "a")
	o.Offer("a2", "a")
	o.Offer("a3", "a") // a over its bound: a1 goes
	o.Offer("b1", "b")
	o.Offer("c1", "c") // over the global bound: a2 goes
	assert.Equal(t, []string{"a1", "a2"}, d.keys)
	assert.Equal(t, []string{dropObject, dropGlobal}, d.reasons)
	assert.Equal(t, 3, o.Len())
	assert.Equal(t, []string{"a3"}, takeAll(o), "then the global bucket is empty")
}

func TestOutboxCoalescesWaitingKey(t *testing.T) {
	o, d, _ := testOutbox(Limits{})
	o.Offer("a", "x")
	o.Offer("a", "x")
	assert.Equal(t, 1, o.Len())
	assert.Empty(t, d.keys)
}

func TestOutboxNextBlocksUntilOfferOrCancel(t *testing.T) {
	o := newOutbox(Limits{}, nil)
	got := make(chan string, 1)
	go func() {
		k, _ := o.Next(context.Background())
		got <- k
	}()
	o.Offer("k", "obj")
	select {
	case k := <-got:
		assert.Equal(t, "k", k)
	case <-time.After(5 * time.Second):
		require.Fail(t, "Next did not return the offered key")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, ok := o.Next(ctx)
	assert.False(t, ok)
}

func TestOutboxNextWaitsForToken(t *testing.T) {
	o := newOutbox(Limits{QPS: 1000, Burst: 1000, PerObjectQPS: 50, PerObjectBurst: 1}, nil)
	o.Offer("a1", "a")
	o.Offer("a2", "a")
	start := time.Now()
	for _, want := range []string{"a1", "a2"} {
		k, ok := o.Next(context.Background())
		require.True(t, ok)
		assert.Equal(t, want, k)
	}
	assert.GreaterOrEqual(t, time.Since(start), 15*time.Millisecond, "the second waits ~20ms for a token")
}

func TestOutboxForgetsIdleObjects(t *testing.T) {
	o, _, now := testOutbox(Limits{QPS: 1e6, Burst: 1e6})
	for i := range 1100 {
		k := string(rune('a'+i%26)) + string(rune(i))
		o.Offer(k, k)
		takeAll(o)
	}
	assert.Len(t, o.objects, 1100, "buckets still refilling are kept: a noisy object stays limited")
	*now = now.Add(time.Hour)
	o.Offer("new", "new")
	assert.Len(t, o.objects, 1, "idle buckets with all their tokens are forgotten")
}

func TestLimitsDefaults(t *testing.T) {
	l := Limits{}.WithDefaults()
	assert.Equal(t, Limits{QPS: DefaultQPS, Burst: DefaultBurst, PerObjectQPS: DefaultPerObjectQPS, PerObjectBurst: DefaultPerObjectBurst,
		Pending: DefaultPending, PerObjectPending: DefaultPerObjectPending}, l)
}
