package enforce

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// clockCache is a bounded map from token string to V, sharded to keep lock
// contention low, with CLOCK (second chance) eviction per shard. A hit takes
// a shard read lock and sets the entry's reference bit; an insert into a
// full shard evicts the first entry whose bit is clear.
type clockCache[V any] struct {
	seed   maphash.Seed
	shards []cacheShard[V]
	mask   uint64
	per    int // capacity of each shard
}

type cacheShard[V any] struct {
	mu   sync.RWMutex
	m    map[string]*cacheSlot[V]
	ring []*cacheSlot[V]
	hand int
	_    [40]byte // keep shards on separate cache lines
}

type cacheSlot[V any] struct {
	key string
	val V   // immutable once published; a replacement is a new slot
	idx int // position in ring, guarded by the shard lock
	ref atomic.Bool
}

// newClockCache returns a cache holding at most about capacity entries
// (rounded up to a multiple of the shard count).
func newClockCache[V any](capacity int) *clockCache[V] {
	n := 1
	for n < 16 && n*64 < capacity {
		n *= 2
	}
	per := (capacity + n - 1) / n
	c := &clockCache[V]{seed: maphash.MakeSeed(), shards: make([]cacheShard[V], n), mask: uint64(n - 1), per: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*cacheSlot[V], per)
		c.shards[i].ring = make([]*cacheSlot[V], 0, per)
	}
	return c
}

func (c *clockCache[V]) shard(key string) *cacheShard[V] {
	return &c.shards[maphash.String(c.seed, key)&c.mask]
}

// get returns the value cached for key.
func (c *clockCache[V]) get(key string) (V, bool) {
	s := c.shard(key)
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e == nil {
		var zero V
		return zero, false
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	return e.val, true
}

// put caches val under key, replacing an existing value or evicting an
// entry when the shard is full. The caller owns key (clone it first if it
// points into a larger buffer).
func (c *clockCache[V]) put(key string, val V) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &cacheSlot[V]{key: key, val: val}
	if old := s.m[key]; old != nil {
		e.idx = old.idx
		s.ring[e.idx] = e
		s.m[key] = e
		return
	}
	if len(s.ring) < c.per {
		e.idx = len(s.ring)
		s.ring = append(s.ring, e)
		s.m[key] = e
		return
	}
	for {
		old := s.ring[s.hand]
		if old.ref.Load() {
			old.ref.Store(false)
			s.hand = (s.hand + 1) % len(s.ring)
			continue
		}
		delete(s.m, old.key)
		e.idx = s.hand
		s.ring[s.hand] = e
		s.m[key] = e
		s.hand = (s.hand + 1) % len(s.ring)
		return
	}
}

// len is the number of cached entries.
func (c *clockCache[V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// capacity is the most entries the cache holds.
func (c *clockCache[V]) capacity() int { return c.per * len(c.shards) }
