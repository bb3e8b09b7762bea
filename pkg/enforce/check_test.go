package enforce

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// local returns an enforcer with s's key added directly (no NATS).
func local(t testing.TB, s token.Signer, mod func(*Options)) *Enforcer {
	t.Helper()
	o := Options{ID: "local", Service: "invoices", Environment: "prod", DisableUsage: true}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.AddKey(s.KeyID, s.Public()); err != nil {
		t.Fatal(err)
	}
	return e
}

func readReq(tok string) *Request {
	return &Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("192.0.2.1")}
}

func TestCheckOrder(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, nil)
	// A token wrong in several ways is denied for the first failing check.
	cases := []struct {
		name   string
		claims func(*token.Claims)
		want   Reason
	}{
		{"expired beats audience", func(c *token.Claims) {
			c.NotBefore, c.Expiry = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			c.Audience = []string{"payments"}
		}, ReasonExpired},
		{"audience beats scope", func(c *token.Claims) { c.Audience = []string{"payments"}; c.Scopes = []string{"x:y"} }, ReasonWrongAudience},
		{"scope beats network", func(c *token.Claims) {
			c.Scopes = []string{"x:y"}
			c.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}, ReasonScopeMissing},
		{"network beats environment", func(c *token.Claims) {
			c.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			c.Environment = "dev"
		}, ReasonSourceNetwork},
		{"environment beats window", func(c *token.Claims) { c.Environment = "dev"; c.Windows = []token.Window{notToday()} }, ReasonEnvironment},
		{"window beats device", func(c *token.Claims) {
			c.Windows = []token.Window{notToday()}
			c.Device = token.Thumbprint([]byte("x"))
		}, ReasonTimeWindow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, c := mint(t, s, tc.claims)
			for _, when := range []string{"first use", "from the cache"} {
				d := e.Check(readReq(tok))
				if d.Allow || d.Reason != tc.want {
					t.Fatalf("%s: got %+v, want %s", when, d, tc.want)
				}
				if d.TokenID != c.ID || d.Tenant != c.Tenant || d.Holder != c.Holder || d.KeyID != s.KeyID {
					t.Fatalf("%s: identity not reported: %+v", when, d)
				}
			}
		})
	}
	t.Run("audience of a cached token", func(t *testing.T) {
		for _, tc := range []struct {
			aud  []string
			want Reason
		}{
			{[]string{"payments"}, ReasonWrongAudience},
			{[]string{"payments", "invoices"}, ReasonOK},
			{[]string{"*"}, ReasonOK},
		} {
			tok, _ := mint(t, s, func(c *token.Claims) { c.Audience = tc.aud })
			for i := range 3 { // verified, then cached
				if d := e.Check(readReq(tok)); d.Reason != tc.want {
					t.Fatalf("audience %q, check %d: got %+v, want %s", tc.aud, i, d, tc.want)
				}
			}
		}
	})
	t.Run("empty route scope is never covered", func(t *testing.T) {
		tok, _ := mint(t, s, func(c *token.Claims) { c.Scopes = []string{"invoices:*"} })
		r := readReq(tok)
		r.Scope = ""
		if d := e.Check(r); d.Reason != ReasonScopeMissing {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("request time decides validity", func(t *testing.T) {
		tok, c := mint(t, s, nil)
		r := readReq(tok)
		r.Time = time.Unix(c.Expiry, 0)
		if d := e.Check(r); d.Reason != ReasonExpired {
			t.Fatalf("at expiry: %+v", d)
		}
		r.Time = time.Unix(c.NotBefore-1, 0)
		if d := e.Check(r); d.Reason != ReasonNotYetValid {
			t.Fatalf("before nbf: %+v", d)
		}
	})
	t.Run("leeway", func(t *testing.T) {
		el := local(t, s, func(o *Options) { o.Leeway = 30 * time.Second })
		tok, c := mint(t, s, nil)
		r := readReq(tok)
		r.Time = time.Unix(c.Expiry+10, 0)
		if d := el.Check(r); !d.Allow {
			t.Fatalf("within leeway: %+v", d)
		}
	})
}

func TestCacheBoundsAndNegativeCache(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, func(o *Options) { o.CacheSize = 64; o.NegativeCacheSize = 16 })
	tok, _ := mint(t, s, nil)
	for range 10 {
		if d := e.Check(readReq(tok)); !d.Allow {
			t.Fatalf("got %+v", d)
		}
	}
	if m := e.Stats().CacheMisses; m != 1 {
		t.Fatalf("10 checks of one token verified it %d times, want 1", m)
	}
	for range 500 {
		tk, _ := mint(t, s, nil)
		e.Check(readReq(tk))
	}
	st := e.Stats()
	if st.CacheEntries > st.CacheCapacity || st.CacheCapacity < 64 || st.CacheCapacity > 128 {
		t.Fatalf("cache holds %d of %d", st.CacheEntries, st.CacheCapacity)
	}
	// A flood of one forged token is verified once.
	forger := newSigner(t)
	forger.KeyID = s.KeyID
	forged, _ := mint(t, forger, nil)
	before := e.Stats().CacheMisses
	for range 100 {
		if d := e.Check(readReq(forged)); d.Reason != ReasonBadSignature || d.KeyID != s.KeyID || d.TokenID != "" {
			t.Fatalf("got %+v", d)
		}
	}
	if got := e.Stats().CacheMisses - before; got != 1 {
		t.Fatalf("forged token verified %d times, want 1", got)
	}
	for i := range 100 {
		e.Check(readReq(fmt.Sprintf("cordon_junk%d", i)))
	}
	if st := e.Stats(); st.NegativeEntries > st.NegativeCapacity {
		t.Fatalf("negative cache holds %d of %d", st.NegativeEntries, st.NegativeCapacity)
	}
}

func TestKeyChangesReachCachedTokens(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, nil)
	tok, _ := mint(t, s, nil)
	if d := e.Check(readReq(tok)); !d.Allow {
		t.Fatalf("got %+v", d)
	}
	e.RetireKey(s.KeyID)
	if d := e.Check(readReq(tok)); d.Reason != ReasonUnknownKey || d.TokenID == "" {
		t.Fatalf("cached token of a retired key: %+v", d)
	}
	// The key id now names another key: the cached token must not survive.
	other := newSigner(t)
	if err := e.AddKey(s.KeyID, other.Public()); err != nil {
		t.Fatal(err)
	}
	if d := e.Check(readReq(tok)); d.Reason != ReasonBadSignature {
		t.Fatalf("cached token after its key id was re-keyed: %+v", d)
	}
	// An unknown key that gets published later is accepted (the negative
	// cache does not outlive a keyring change).
	late := newSigner(t)
	lt, _ := mint(t, late, nil)
	if d := e.Check(readReq(lt)); d.Reason != ReasonUnknownKey {
		t.Fatalf("got %+v", d)
	}
	if err := e.AddKey(late.KeyID, late.Public()); err != nil {
		t.Fatal(err)
	}
	if d := e.Check(readReq(lt)); !d.Allow {
		t.Fatalf("after publishing the key: %+v", d)
	}
}

func TestDenylistStaleness(t *testing.T) {
	t.Run("fail closed before the first sync", func(t *testing.T) {
		s := newSigner(t)
		e := local(t, s, func(o *Options) { o.MaxStaleness = time.Second; o.FailClosed = true })
		tok, _ := mint(t, s, nil)
		if d := e.Check(readReq(tok)); d.Reason != ReasonDenylistStale {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		s := newSigner(t)
		e := local(t, s, nil)
		tok, _ := mint(t, s, nil)
		if d := e.Check(readReq(tok)); !d.Allow {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("quiet bucket stays current, lost nats goes stale", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-stale", func(o *Options) {
			o.MaxStaleness = 2 * time.Second // a loaded machine may delay a probe
			o.FailClosed = true
			o.ProbeInterval = 50 * time.Millisecond
		})
		f.revoke(t, events.DenyKeyToken("some-other-token"), events.DenyRecord{Kind: events.RevokeToken})
		tok, _ := mint(t, f.signer, nil)
		r := readReq(tok)
		if d := e.Check(r); !d.Allow {
			t.Fatalf("fresh enforcer: %+v", d)
		}
		// With no denylist traffic, the probe keeps the view current.
		mark := time.Now()
		natstest.WaitFor(t, 5*time.Second, func() error {
			if at := e.DenylistCurrentAt(); !at.After(mark.Add(500 * time.Millisecond)) {
				return errorf("current at %v, want after %v", at, mark.Add(500*time.Millisecond))
			}
			return nil
		})
		if d := e.Check(r); !d.Allow {
			t.Fatalf("quiet but current: %+v", d)
		}
		f.env.Stop()
		natstest.WaitFor(t, 5*time.Second, func() error {
			if d := e.Check(r); d.Reason != ReasonDenylistStale {
				return errorf("with nats gone: %+v", d)
			}
			return nil
		})
		if s := e.DenylistStaleness(); s < 2*time.Second {
			t.Fatalf("staleness %v", s)
		}
	})
}

func TestOptionsValidation(t *testing.T) {
	cases := []struct {
		name string
		o    Options
	}{
		{"no id", Options{Service: "x"}},
		{"bad id", Options{ID: "a.b", Service: "x"}},
		{"no service", Options{ID: "e1"}},
		{"bad routes", Options{ID: "e1", Service: "x", Routes: &Routes{Routes: []Route{{Method: "GET", Path: "/a", Scope: "nope"}}}}},
		{"negative leeway", Options{ID: "e1", Service: "x", Leeway: -time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestSeenTokenAllocations holds the hot path to its allocation budget:
// a seen token's decision, usage enqueue included, allocates nothing.
func TestSeenTokenAllocations(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, func(o *Options) { o.DisableUsage = false; o.UsageBuffer = 1 << 20 })
	tok, _ := mint(t, s, nil)
	req := readReq(tok)
	e.Check(req)
	if n := testing.AllocsPerRun(1000, func() { e.Check(req) }); n > 0 {
		t.Fatalf("%v allocations per seen-token decision, want 0", n)
	}
}

// TestConcurrentChecks runs decisions while keys and revocations change
// (run with -race).
func TestConcurrentChecks(t *testing.T) {
	s := newSigner(t)
	e := local(t, s, func(o *Options) { o.CacheSize = 32; o.DisableUsage = false; o.UsageBuffer = 64 })
	toks := make([]string, 64)
	ids := make([]string, 64)
	for i := range toks {
		var c token.Claims
		toks[i], c = mint(t, s, nil)
		ids[i] = c.ID
	}
	stop := make(chan struct{})
	done := make(chan int)
	for g := range 4 {
		go func() {
			n := 0
			for i := g; ; i++ {
				select {
				case <-stop:
					done <- n
					return
				default:
				}
				d := e.Check(readReq(toks[i%len(toks)]))
				// While the key is retired, first-seen tokens fail with
				// unknown_key, which counts against the (single) source
				// until it is throttled: all three are expected here.
				if d.Allow || d.Reason == ReasonRevoked || d.Reason == ReasonUnknownKey || d.Reason == ReasonThrottled {
					n++
				} else {
					t.Errorf("unexpected %+v", d)
				}
			}
		}()
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	i := 0
	for ; i < 200 || time.Now().Before(deadline); i++ {
		key := events.DenyKeyToken(ids[i%len(ids)])
		_ = e.dl.apply(key, nil, i%2 == 1, uint64(i+1), time.Now())
		if i%20 == 0 {
			e.RetireKey(s.KeyID)
			_ = e.AddKey(s.KeyID, s.Public())
		}
	}
	close(stop)
	total := 0
	for range 4 {
		total += <-done
	}
	if total == 0 {
		t.Fatal("no decisions made")
	}
	if got := e.DenylistRevision(); got != uint64(i) {
		t.Fatalf("revision %d, want %d", got, i)
	}
}
