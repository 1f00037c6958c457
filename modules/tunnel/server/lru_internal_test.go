package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLRUEvictsTheLeastRecentlyUsedAndDropsExpiredEntries(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := newLRU[string, int](2)
	c.add("a", 1, time.Time{})
	c.add("b", 2, t0.Add(time.Second))
	_, _ = c.get("a", t0) // a is now the most recent
	c.add("c", 3, time.Time{})
	_, ok := c.get("b", t0)
	assert.False(t, ok, "b was the least recently used")
	v, ok := c.get("a", t0)
	assert.True(t, ok)
	assert.Equal(t, 1, v)
	assert.Equal(t, 2, c.len())

	c.add("c", 4, t0.Add(time.Second))
	v, ok = c.get("c", t0)
	assert.True(t, ok)
	assert.Equal(t, 4, v, "add replaces")
	_, ok = c.get("c", t0.Add(time.Second))
	assert.False(t, ok, "expired at its deadline")
	assert.Equal(t, 1, c.len(), "the expired entry is dropped")
}
