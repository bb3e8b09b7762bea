package enforce

import (
	"fmt"
	"testing"
)

// TestClockCacheHashCollision: the cache finds a slot by the key's hash,
// but a hit needs the key itself. A token string whose hash is another's
// must never get the other's verified token: it misses, and its own put
// replaces the other's slot.
func TestClockCacheHashCollision(t *testing.T) {
	c := newClockCache[string](64)
	c.put("token-a", "verified a")
	ha, sa := c.shard("token-a")
	hb, sb := c.shard("token-b")
	// Make token-b collide with token-a: its hash now leads to a's slot.
	sb.mu.Lock()
	sb.m[hb] = sa.m[ha]
	sb.mu.Unlock()
	if v, ok := c.get("token-b"); ok {
		t.Fatalf("token-b got %q, the value of another key with its hash", v)
	}
	if v, ok := c.get("token-a"); !ok || v != "verified a" {
		t.Fatalf("token-a = %q, %v", v, ok)
	}
	c.put("token-b", "verified b")
	if v, ok := c.get("token-b"); !ok || v != "verified b" {
		t.Fatalf("token-b after its put = %q, %v", v, ok)
	}
}

// TestClockCacheBound: the cache holds at most its capacity, evicting
// unreferenced entries, and a replaced key keeps one slot.
func TestClockCacheBound(t *testing.T) {
	for _, capacity := range []int{1, 64, 1000} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			c := newClockCache[int](capacity)
			for i := range 5 * capacity {
				c.put(fmt.Sprintf("token-%d", i), i)
				c.put(fmt.Sprintf("token-%d", i), i+1) // replaced, not added
			}
			if n := c.len(); n > c.capacity() || n == 0 {
				t.Fatalf("%d entries, capacity %d", n, c.capacity())
			}
			last := fmt.Sprintf("token-%d", 5*capacity-1)
			if v, ok := c.get(last); !ok || v != 5*capacity {
				t.Fatalf("the last put %s = %d, %v", last, v, ok)
			}
			for i := range c.shards {
				s := &c.shards[i]
				if len(s.m) != len(s.ring) {
					t.Fatalf("shard %d: %d map entries, %d ring slots", i, len(s.m), len(s.ring))
				}
				for h, e := range s.m {
					if e.h != h || s.ring[e.idx] != e {
						t.Fatalf("shard %d: slot of %q out of place", i, e.key)
					}
				}
			}
		})
	}
}
