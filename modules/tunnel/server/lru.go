package server

import (
	"container/list"
	"sync"
	"time"
)

// lru is a bounded least-recently-used map whose entries may expire. It is safe for
// concurrent use. The bound is what keeps hostile input from growing the server's memory.
type lru[K comparable, V any] struct {
	max int

	mu    sync.Mutex
	order *list.List // front = most recently used; values are *lruEntry[K, V]
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key     K
	value   V
	expires time.Time // zero = never
}

func newLRU[K comparable, V any](maxEntries int) *lru[K, V] {
	if maxEntries <= 0 {
		maxEntries = 1
	}
	return &lru[K, V]{max: maxEntries, order: list.New(), items: map[K]*list.Element{}}
}

// get returns the live value of k at now; an expired entry is dropped.
func (c *lru[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[k]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[K, V])
	if !e.expires.IsZero() && !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, k)
		return zero, false
	}
	c.order.MoveToFront(el)
	return e.value, true
}

// add stores v under k until expires (zero: until evicted), evicting the least recently
// used entry when full.
func (c *lru[K, V]) add(k K, v V, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*lruEntry[K, V])
		e.value, e.expires = v, expires
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[K, V]).key)
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, value: v, expires: expires})
}

// len returns the number of entries, expired ones not yet dropped included.
func (c *lru[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
