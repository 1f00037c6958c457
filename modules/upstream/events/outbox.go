package events

import (
	"container/list"
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits configure the outbox. Zero fields take the defaults.
type Limits struct {
	// QPS and Burst size the token bucket shared by all upstream Event writes.
	QPS   float64
	Burst int
	// PerObjectQPS and PerObjectBurst size the token bucket of each upstream object.
	PerObjectQPS   float64
	PerObjectBurst int
	// Pending bounds the Events waiting for a token, in all; PerObjectPending per object.
	// When over, the oldest waiting Event is dropped.
	Pending          int
	PerObjectPending int
}

// Default limits: a noisy object gets 25 Events at once then one every 5 s; the control
// plane gets at most 20 Event writes per second with a burst of 100.
const (
	DefaultQPS              = 20
	DefaultBurst            = 100
	DefaultPerObjectQPS     = 0.2
	DefaultPerObjectBurst   = 25
	DefaultPending          = 1000
	DefaultPerObjectPending = 50
)

// WithDefaults fills zero fields.
func (l Limits) WithDefaults() Limits {
	if l.QPS <= 0 {
		l.QPS = DefaultQPS
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	if l.PerObjectQPS <= 0 {
		l.PerObjectQPS = DefaultPerObjectQPS
	}
	if l.PerObjectBurst <= 0 {
		l.PerObjectBurst = DefaultPerObjectBurst
	}
	if l.Pending <= 0 {
		l.Pending = DefaultPending
	}
	if l.PerObjectPending <= 0 {
		l.PerObjectPending = DefaultPerObjectPending
	}
	return l
}

// Drop reasons reported by the outbox.
const (
	dropObject = "object"
	dropGlobal = "global"
)

type entry struct {
	key    string
	object *objectState
	global *list.Element // in outbox.order
	local  *list.Element // in objectState.pending
}

type objectState struct {
	id      string
	limiter *rate.Limiter
	pending *list.List // of *entry, oldest first
}

// outbox holds Events waiting for tokens of two buckets, the global one and their upstream
// object's. Offering a key already waiting does nothing (the sender re-reads the Event, so
// the latest count goes up). Over a bound, the oldest waiting Event is dropped: fresh Events
// say more about the present than old ones.
type outbox struct {
	limits Limits
	now    func() time.Time
	onDrop func(key, reason string)

	mu      sync.Mutex
	global  *rate.Limiter
	objects map[string]*objectState
	order   *list.List // of *entry, oldest first
	byKey   map[string]*entry
	wake    chan struct{}
}

func newOutbox(l Limits, onDrop func(key, reason string)) *outbox {
	l = l.WithDefaults()
	return &outbox{
		limits:  l,
		now:     time.Now,
		onDrop:  onDrop,
		global:  rate.NewLimiter(rate.Limit(l.QPS), l.Burst),
		objects: map[string]*objectState{},
		order:   list.New(),
		byKey:   map[string]*entry{},
		wake:    make(chan struct{}, 1),
	}
}

// Len returns the number of waiting Events.
func (o *outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.order.Len()
}

// Offer queues the Event key for the upstream object objectID.
func (o *outbox) Offer(key, objectID string) {
	var dropped []*entry
	var reasons []string
	o.mu.Lock()
	if _, ok := o.byKey[key]; ok {
		o.mu.Unlock()
		return
	}
	obj := o.objects[objectID]
	if obj == nil {
		o.forgetIdleLocked()
		obj = &objectState{id: objectID, limiter: rate.NewLimiter(rate.Limit(o.limits.PerObjectQPS), o.limits.PerObjectBurst), pending: list.New()}
		o.objects[objectID] = obj
	}
	e := &entry{key: key, object: obj}
	e.global = o.order.PushBack(e)
	e.local = obj.pending.PushBack(e)
	o.byKey[key] = e
	if obj.pending.Len() > o.limits.PerObjectPending {
		dropped = append(dropped, o.removeLocked(obj.pending.Front().Value.(*entry)))
		reasons = append(reasons, dropObject)
	}
	if o.order.Len() > o.limits.Pending {
		dropped = append(dropped, o.removeLocked(o.order.Front().Value.(*entry)))
		reasons = append(reasons, dropGlobal)
	}
	o.mu.Unlock()
	for i, d := range dropped {
		if o.onDrop != nil {
			o.onDrop(d.key, reasons[i])
		}
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) removeLocked(e *entry) *entry {
	o.order.Remove(e.global)
	e.object.pending.Remove(e.local)
	delete(o.byKey, e.key)
	return e
}

// forgetIdleLocked drops the buckets of objects with nothing waiting and a full bucket, so
// the map stays as small as the set of recently noisy objects.
func (o *outbox) forgetIdleLocked() {
	if len(o.objects) < 1024 {
		return
	}
	now := o.now()
	for id, s := range o.objects {
		if s.pending.Len() == 0 && s.limiter.TokensAt(now) >= float64(o.limits.PerObjectBurst) {
			delete(o.objects, id)
		}
	}
}

// Next blocks until the oldest Event whose object has a token can go and a global token is
// available, and returns its key; ok is false when ctx ends.
func (o *outbox) Next(ctx context.Context) (key string, ok bool) {
	for {
		wait, key, found := o.take()
		if found {
			return key, true
		}
		var t *time.Timer
		var timer <-chan time.Time
		if wait > 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-o.wake:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return "", false
		}
	}
}

// take removes and returns the first sendable Event, or says how long to wait (0: until
// something is offered).
func (o *outbox) take() (time.Duration, string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.order.Len() == 0 {
		return 0, "", false
	}
	now := o.now()
	if g := o.global.TokensAt(now); g < 1 {
		return untilToken(g, o.limits.QPS), "", false
	}
	wait := time.Duration(-1)
	for el := o.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*entry)
		tokens := e.object.limiter.TokensAt(now)
		if tokens >= 1 {
			e.object.limiter.AllowN(now, 1)
			o.global.AllowN(now, 1)
			o.removeLocked(e)
			return 0, e.key, true
		}
		if w := untilToken(tokens, o.limits.PerObjectQPS); wait < 0 || w < wait {
			wait = w
		}
	}
	return max(wait, time.Millisecond), "", false
}

func untilToken(tokens, qps float64) time.Duration {
	return time.Duration((1-tokens)/qps*float64(time.Second)) + time.Millisecond
}
