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
//
// A key is hashed once (maphash, a per-cache random seed): the hash picks
// the shard and is the shard map's key, and a hit is the slot whose key
// equals the one asked for, byte for byte. Two keys with one hash share a
// slot: the later put replaces the earlier (a miss for it, never a wrong
// value).
type clockCache[V any] struct {
	seed   maphash.Seed
	shards []cacheShard[V]
	mask   uint64
	per    int // capacity of each shard
}

type cacheShard[V any] struct {
	mu   sync.RWMutex
	m    map[uint64]*cacheSlot[V] // by the key's hash
	ring []*cacheSlot[V]
	hand int
	_    [40]byte // keep shards on separate cache lines
}

type cacheSlot[V any] struct {
	key string
	h   uint64
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
		c.shards[i].m = make(map[uint64]*cacheSlot[V], per)
		c.shards[i].ring = make([]*cacheSlot[V], 0, per)
	}
	return c
}

// shard returns key's hash and shard.
func (c *clockCache[V]) shard(key string) (uint64, *cacheShard[V]) {
	h := maphash.String(c.seed, key)
	return h, &c.shards[h&c.mask]
}

// get returns the value cached for key.
func (c *clockCache[V]) get(key string) (V, bool) {
	h, s := c.shard(key)
	s.mu.RLock()
	e := s.m[h]
	s.mu.RUnlock()
	if e == nil || e.key != key {
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
	h, s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &cacheSlot[V]{key: key, h: h, val: val}
	if old := s.m[h]; old != nil { // key's, or another key's with its hash
		e.idx = old.idx
		s.ring[e.idx] = e
		s.m[h] = e
		return
	}
	if len(s.ring) < c.per {
		e.idx = len(s.ring)
		s.ring = append(s.ring, e)
		s.m[h] = e
		return
	}
	for {
		old := s.ring[s.hand]
		if old.ref.Load() {
			old.ref.Store(false)
			s.hand = (s.hand + 1) % len(s.ring)
			continue
		}
		delete(s.m, old.h)
		e.idx = s.hand
		s.ring[s.hand] = e
		s.m[h] = e
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
