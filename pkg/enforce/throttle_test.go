package enforce

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/token"
)

// TestThrottle is the forged-token flood of issue 8, counted: after the
// burst, a source's forged tokens are refused as throttled without being
// verified (CacheMisses stops), its already verified token still passes,
// and another source is unaffected.
func TestThrottle(t *testing.T) {
	const burst = 5
	s := newSigner(t)
	e := local(t, s, func(o *Options) {
		o.ThrottleBurst, o.ThrottleWindow, o.ThrottleCooldown = burst, time.Hour, time.Hour
	})
	forger := newSigner(t)
	forger.KeyID = s.KeyID // a valid key id: every forgery costs a signature check
	forged := func() string { tok, _ := mint(t, forger, nil); return tok }
	attacker, neighbour := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")
	from := func(tok string, src netip.Addr) Decision {
		r := readReq(tok)
		r.RemoteAddr = src
		return e.Check(r)
	}

	good, _ := mint(t, s, nil)
	if d := from(good, attacker); !d.Allow {
		t.Fatalf("valid token: %+v", d)
	}
	misses := e.Stats().CacheMisses
	for i := range burst {
		if d := from(forged(), attacker); d.Reason != ReasonBadSignature {
			t.Fatalf("forgery %d within the burst: %+v", i, d)
		}
	}
	if got := e.Stats().CacheMisses - misses; got != burst {
		t.Fatalf("%d verifications for %d forgeries", got, burst)
	}
	misses = e.Stats().CacheMisses
	for i := range 50 {
		if d := from(forged(), attacker); d.Reason != ReasonThrottled || d.Allow {
			t.Fatalf("forgery %d past the burst: %+v", i, d)
		}
	}
	st := e.Stats()
	if st.CacheMisses != misses {
		t.Fatalf("throttled forgeries were verified: %d verifications", st.CacheMisses-misses)
	}
	if st.Throttled != 50 {
		t.Fatalf("Stats.Throttled = %d, want 50", st.Throttled)
	}
	if d := from(good, attacker); !d.Allow {
		t.Fatalf("the throttled source's verified token: %+v", d)
	}
	fresh, _ := mint(t, s, nil)
	if d := from(fresh, attacker); d.Reason != ReasonThrottled {
		t.Fatalf("a first-seen token from the throttled source: %+v", d)
	}
	if d := from(forged(), neighbour); d.Reason != ReasonBadSignature {
		t.Fatalf("another source's forgery: %+v", d)
	}
	if d := from(fresh, neighbour); !d.Allow {
		t.Fatalf("another source's valid token: %+v", d)
	}

	t.Run("malformed and unknown keys count too", func(t *testing.T) {
		stranger := newSigner(t)
		cases := map[string]func(i int) string{
			"malformed":   func(i int) string { return fmt.Sprintf("cordon_junk%d", i) },
			"unknown key": func(int) string { tok, _ := mint(t, stranger, nil); return tok },
		}
		n := 0
		for name, tok := range cases {
			src := netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + n)})
			n++
			for i := range burst {
				if d := from(tok(i), src); d.Reason == ReasonThrottled {
					t.Fatalf("%s %d throttled within the burst", name, i)
				}
			}
			if d := from(tok(burst), src); d.Reason != ReasonThrottled {
				t.Fatalf("%s past the burst: %+v", name, d)
			}
		}
	})
	t.Run("an IPv6 source is its /64", func(t *testing.T) {
		for i := range burst {
			src := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1))
			if d := from(forged(), src); d.Reason != ReasonBadSignature {
				t.Fatalf("forgery %d: %+v", i, d)
			}
		}
		if d := from(forged(), netip.MustParseAddr("2001:db8:1:2:ffff::1")); d.Reason != ReasonThrottled {
			t.Fatalf("same /64: %+v", d)
		}
		if d := from(forged(), netip.MustParseAddr("2001:db8:1:3::1")); d.Reason != ReasonBadSignature {
			t.Fatalf("next /64: %+v", d)
		}
	})
	t.Run("no source address, no throttling", func(t *testing.T) {
		for i := range 3 * burst {
			if d := from(forged(), netip.Addr{}); d.Reason != ReasonBadSignature {
				t.Fatalf("forgery %d without a source: %+v", i, d)
			}
		}
		if d := from(fresh, netip.Addr{}); !d.Allow {
			t.Fatalf("valid token without a source: %+v", d)
		}
	})
	t.Run("off", func(t *testing.T) {
		off := local(t, s, func(o *Options) { o.ThrottleBurst = -1 })
		for i := range 3 * DefaultThrottleBurst {
			r := readReq(forged())
			if d := off.Check(r); d.Reason != ReasonBadSignature {
				t.Fatalf("forgery %d with throttling off: %+v", i, d)
			}
		}
	})
}

// TestThrottleClock drives the throttle with its own clock: a window
// without failures forgets them, the cool-down ends, and the table stays
// within its bound however many sources fail.
func TestThrottleClock(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	src := netip.MustParseAddr("192.0.2.1")
	th := newThrottle(3, 10*time.Second, 30*time.Second, 8)
	th.fail(src, base)
	th.fail(src, base.Add(time.Second))
	th.fail(src, base.Add(12*time.Second)) // the window restarted: 1 failure
	if th.blocked(src, base.Add(12*time.Second)) {
		t.Fatal("throttled by failures spread over two windows")
	}
	th.fail(src, base.Add(13*time.Second))
	th.fail(src, base.Add(14*time.Second))
	at := base.Add(14 * time.Second)
	for _, c := range []struct {
		after time.Duration
		want  bool
	}{{0, true}, {29 * time.Second, true}, {30 * time.Second, false}} {
		if got := th.blocked(src, at.Add(c.after)); got != c.want {
			t.Errorf("%v after the third failure: blocked %v, want %v", c.after, got, c.want)
		}
	}
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		th.fail(a, base.Add(time.Duration(i)*time.Millisecond))
		if n := th.len(); n > 8 {
			t.Fatalf("%d sources recorded, bound 8", n)
		}
	}
	if th.evicted.Load() < 1000-8 {
		t.Fatalf("%d evictions", th.evicted.Load())
	}
	// A throttled source survives a flood of new sources: eviction drops
	// stale and unthrottled records first.
	th = newThrottle(2, time.Minute, time.Hour, 4)
	th.fail(src, base)
	th.fail(src, base)
	for i := range 100 {
		th.fail(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), base.Add(2*time.Minute))
	}
	if !th.blocked(src, base.Add(3*time.Minute)) {
		t.Fatal("a flood of new sources evicted the throttled one")
	}
}

// TestProxyThrottle: a throttled request gets 429 with Retry-After.
func TestProxyThrottle(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-throttle", func(o *Options) {
		o.ThrottleBurst, o.ThrottleCooldown = 3, time.Minute
	})
	srv := f.proxy(t, e)
	good, _ := mint(t, f.signer, nil)
	if r := do(t, nil, "GET", srv.URL+"/invoices/1", good, nil); r.status != 200 {
		t.Fatalf("got %d", r.status)
	}
	var r reply
	for i := range 4 {
		r = do(t, nil, "GET", srv.URL+"/invoices/1", token.Seal(fmt.Sprintf("junk%d.x.y", i)), nil)
	}
	if r.status != http.StatusTooManyRequests || r.reason != string(ReasonThrottled) {
		t.Fatalf("got %d %q", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra != 60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if r := do(t, nil, "GET", srv.URL+"/invoices/1", good, nil); r.status != 200 {
		t.Fatalf("verified token from the throttled source: %d %s", r.status, r.body)
	}
}
