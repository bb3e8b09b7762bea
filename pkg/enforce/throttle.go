package enforce

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// throttle keeps, per source, a bounded record of recent failed
// verifications. A token never seen before costs an Ed25519 verification
// (tens of microseconds) while a cached one costs a map hit, so a flood of
// forged tokens is a cheap CPU lever; once a source has failed burst
// verifications within window, its further first-seen tokens are refused
// (ReasonThrottled) without verification until cooldown has passed. Tokens
// already verified keep working, so a legitimate client sharing the
// attacker's address (NAT) keeps the tokens it already uses.
type throttle struct {
	burst    int
	window   int64 // nanoseconds
	cooldown int64 // nanoseconds
	max      int

	mu sync.Mutex
	m  map[netip.Addr]*sourceFailures

	refused atomic.Uint64 // decisions refused as throttled
	evicted atomic.Uint64 // records dropped to stay within max
}

// sourceFailures is one source's record, guarded by throttle.mu.
type sourceFailures struct {
	start int64 // Unix nanoseconds: the current window began
	n     int   // failures in the current window
	until int64 // Unix nanoseconds: throttled while now < until
}

// sweepLimit bounds how many records one insertion into a full table looks
// at: eviction costs O(1), however many sources an attacker controls.
const sweepLimit = 16

func newThrottle(burst int, window, cooldown time.Duration, max int) *throttle {
	return &throttle{burst: burst, window: int64(window), cooldown: int64(cooldown), max: max,
		m: make(map[netip.Addr]*sourceFailures)}
}

// sourceKey is what one source is: an IPv4 address, or the /64 of an IPv6
// address (a single host commonly holds a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// blocked reports whether src is throttled at now, and counts the refusal.
// A request without a source address (a Check caller that has none) is
// never throttled: it would share one record with every other such caller.
func (t *throttle) blocked(src netip.Addr, now time.Time) bool {
	if t == nil || !src.IsValid() {
		return false
	}
	k := sourceKey(src)
	n := now.UnixNano()
	t.mu.Lock()
	f := t.m[k]
	hit := f != nil && n < f.until
	t.mu.Unlock()
	if hit {
		t.refused.Add(1)
	}
	return hit
}

// fail records a failed verification from src at now.
func (t *throttle) fail(src netip.Addr, now time.Time) {
	if t == nil || !src.IsValid() {
		return
	}
	k := sourceKey(src)
	n := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.m[k]
	if f == nil {
		if len(t.m) >= t.max {
			t.evict(n)
		}
		f = &sourceFailures{start: n}
		t.m[k] = f
	}
	if n-f.start > t.window {
		f.start, f.n = n, 0
	}
	f.n++
	if f.n >= t.burst {
		f.until = n + t.cooldown
		f.start, f.n = n, 0
	}
}

// evict drops at least one record: among up to sweepLimit of them, every
// stale one (no failure within the window, not throttled), else the first
// that is not throttled, else the first. Called with t.mu held.
func (t *throttle) evict(now int64) {
	var victim, spare netip.Addr
	dropped, seen := 0, 0
	for k, f := range t.m {
		if seen++; seen > sweepLimit {
			break
		}
		switch {
		case now >= f.until && now-f.start > t.window:
			delete(t.m, k)
			dropped++
		case now >= f.until && !victim.IsValid():
			victim = k
		case !spare.IsValid():
			spare = k
		}
	}
	if dropped == 0 {
		if !victim.IsValid() {
			victim = spare
		}
		delete(t.m, victim)
		dropped = 1
	}
	t.evicted.Add(uint64(dropped))
}

// len is the number of sources recorded.
func (t *throttle) len() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
