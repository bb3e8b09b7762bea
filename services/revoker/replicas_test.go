package revoker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/revoker"
)

// replica starts another revoker on f's server, with its own connection
// and source, sharing f's durables as a second replica of a deployment
// does; tune adjusts its options (f.o otherwise).
func (f *fixture) replica(source string, tune func(*revoker.Options)) *revoker.Revoker {
	f.t.Helper()
	nc, err := nats.Connect(f.env.Server.ClientURL(), nats.Name(source), nats.MaxReconnects(-1))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	o := f.o
	o.NC, o.JS, o.Source = nc, js, source
	if tune != nil {
		tune(&o)
	}
	r, err := revoker.New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := r.Start(f.ctx()); err != nil {
		r.Close()
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { r.Close() })
	return r
}

// publishRevoked publishes a TokenRevoked as every publisher of one must
// (events.RevokedOnce) and returns the publish error.
func (f *fixture) publishRevoked(id, tenant string) (*jetstream.PubAck, error) {
	f.t.Helper()
	e, err := events.New("test", time.Now(), &events.TokenRevoked{TokenID: id, Tenant: tenant, Holder: "billing",
		Kind: events.RevokeToken, Actor: "test", Reason: "test", Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.env.JS.Publish(f.ctx(), events.Subject(e), b, events.RevokedOnce(id)...)
}

// TestLedgerRefusesASecondRevocation: the server honours an expected last
// subject sequence of 0 on cordon.token.revoked.*.<id>: the first
// TokenRevoked of a token is stored, any later one — same tenant, or
// another tenant as a blind revocation may name — is refused, and the
// refusal is told apart from other publish errors.
func TestLedgerRefusesASecondRevocation(t *testing.T) {
	f := setup(t, nil)
	first, other := newID(t), newID(t)
	if _, err := f.publishRevoked(first, "acme"); err != nil {
		t.Fatalf("first revocation: %v", err)
	}
	for _, c := range []struct{ name, tenant string }{{"same tenant", "acme"}, {"another tenant", "globex"}} {
		t.Run(c.name, func(t *testing.T) {
			ack, err := f.publishRevoked(first, c.tenant)
			if err == nil && !ack.Duplicate {
				t.Fatalf("second revocation of %s stored at %d", first, ack.Sequence)
			}
			if err != nil && !events.LedgerRefused(err) {
				t.Fatalf("refusal %v is not recognised by events.LedgerRefused", err)
			}
		})
	}
	if got := len(f.revocations()[first]); got != 1 {
		t.Fatalf("%d ledger events for %s, want 1", got, first)
	}
	for _, c := range []struct {
		id   string
		want bool
	}{{first, true}, {other, false}} {
		held, err := events.LedgerHoldsRevoked(f.ctx(), f.env.JS, c.id)
		if err != nil || held != c.want {
			t.Fatalf("LedgerHoldsRevoked(%s) = %v, %v; want %v", c.id, held, err, c.want)
		}
	}
	for _, err := range []error{nil, errors.New("nats: timeout"), context.DeadlineExceeded,
		&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}} {
		if events.LedgerRefused(err) {
			t.Errorf("LedgerRefused(%v) = true", err)
		}
	}
	// Out of the de-duplication window a repeat is refused, not acknowledged
	// as a duplicate: a message id of its own shows the subject check.
	e, _ := events.New("test", time.Now(), &events.TokenRevoked{TokenID: first, Tenant: "acme", Holder: "billing",
		Kind: events.RevokeToken, Actor: "test", Reason: "test", Expiry: time.Now().Add(time.Hour)})
	b, _ := events.Encode(e)
	_, err := f.env.JS.Publish(f.ctx(), events.Subject(e), b, append(events.RevokedOnce(first), jetstream.WithMsgID(e.MsgID()))...)
	if !events.LedgerRefused(err) {
		t.Fatalf("a revocation with a fresh message id: %v, want a wrong-last-sequence refusal", err)
	}
}

// TestReplicasRevokeEachTokenOnce: two replicas revoking the same tokens at
// the same moment, in the same order, never write two ledger events for
// one token: for every token one of them reports it revoked and the other
// already revoked, and every token has its denylist entry.
func TestReplicasRevokeEachTokenOnce(t *testing.T) {
	f := setup(t, nil)
	b := f.replica("revoker/test-2", nil)
	const n = 150
	toks := make([]tok, n)
	for i := range toks {
		toks[i] = f.issue("acme", fmt.Sprintf("svc-%d", i%7), "kid1", time.Minute, time.Hour, false)
	}
	f.waitKnown(toks...)
	waitKnownBy(t, b, toks)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		revoked = map[string]int{}
		already = map[string]int{}
		errs    []error
	)
	for _, r := range []*revoker.Revoker{f.r, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for _, tk := range toks {
				res, err := r.Revoke(ctx, revoker.Request{Kind: events.RevokeToken, TokenID: tk.id, Actor: "test", Reason: "race"})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for _, id := range res.Revoked {
					revoked[id]++
				}
				for _, id := range res.Already {
					already[id]++
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d revocations failed, first: %v", len(errs), errs[0])
	}
	led := f.revocations()
	for _, tk := range toks {
		if got := len(led[tk.id]); got != 1 {
			t.Errorf("token %s: %d ledger events, want 1", tk.id, got)
		}
		if revoked[tk.id] != 1 || already[tk.id] != 1 {
			t.Errorf("token %s: reported revoked %d times and already revoked %d times, want once each", tk.id, revoked[tk.id], already[tk.id])
		}
		if _, _, ok := f.deny(events.DenyKeyToken(tk.id)); !ok {
			t.Errorf("token %s has no denylist entry", tk.id)
		}
	}
}

// TestReplicasNeverLoseAWidening: two replicas writing the same broad
// rules at once — one configured with a longer token life than the other,
// and "before" rules moving forward from both — end with the widest rule
// every time: a replica never overwrites a wider rule with its narrower
// one (writeRule's compare-and-set).
func TestReplicasNeverLoseAWidening(t *testing.T) {
	const short, long = time.Hour, 3 * time.Hour
	f := setup(t, func(o *revoker.Options) { o.MaxTokenTTL = short })
	b := f.replica("revoker/test-2", func(o *revoker.Options) { o.MaxTokenTTL = long })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const holders, steps = 30, 40
	tenants := []string{"initech", "hooli", "umbrella", "cyberdyne", "tyrell", "soylent"}
	narrowed := watchNarrowing(t, f)
	base := time.Now().Add(-40 * time.Minute).Truncate(time.Second)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		errs  []error
	)
	for i, r := range []*revoker.Revoker{f.r, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fail := func(err error) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			for h := range holders {
				if _, err := r.Revoke(ctx, revoker.Request{Kind: events.RevokeHolder, Tenant: "initech", Holder: fmt.Sprintf("h%d", h),
					Actor: "test", Reason: "widen"}); err != nil {
					fail(err)
				}
			}
			// Replica i moves each tenant's "before" rule to base+k
			// minutes for every k of its parity, forward.
			for _, tenant := range tenants {
				for k := i; k < steps; k += 2 {
					if _, err := r.Revoke(ctx, revoker.Request{Kind: events.RevokeBefore, Tenant: tenant,
						Before: base.Add(time.Duration(k) * time.Minute), Actor: "test", Reason: "widen"}); err != nil {
						fail(err)
					}
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d revocations failed, first: %v", len(errs), errs[0])
	}
	// Every revision of a rule reaches at least as far as the one before.
	for _, msg := range narrowed() {
		t.Error(msg)
	}
	// The long-lived replica's rule reaches 3h from its write; the short
	// one's 1h: anything under 2h means the long one was overwritten.
	for h := range holders {
		key := events.DenyKeyHolder("initech", fmt.Sprintf("h%d", h))
		rec, ttl, ok := f.deny(key)
		if !ok {
			t.Fatalf("no rule %s", key)
		}
		if left := time.Until(rec.Expiry); left < long-time.Hour || ttl < long-time.Hour {
			t.Errorf("rule %s expires in %v (TTL %v): the %v replica's widening was lost", key, left.Round(time.Second), ttl, long)
		}
	}
	last := base.Add((steps - 1) * time.Minute) // odd: written by the long-lived replica
	for _, tenant := range tenants {
		key := events.DenyKeyBefore(tenant)
		rec, _, ok := f.deny(key)
		if !ok {
			t.Fatalf("no rule %s", key)
		}
		if !rec.Before.Equal(last) || !rec.Expiry.Equal(last.Add(long)) {
			t.Errorf("rule %s: before %v until %v; want before %v until %v", key, rec.Before, rec.Expiry, last, last.Add(long))
		}
	}
}

// watchNarrowing watches the denylist's rules from now on; the function
// it returns stops the watch once it has seen the bucket's last revision
// and says where a revision of a rule reached less far (an earlier expiry
// or "before" time) than the previous revision of that rule: a narrowing
// any enforcer would have applied. A watch may skip a revision the
// bucket already replaced (history 1); what it sees is in order.
func watchNarrowing(t *testing.T, f *fixture) func() []string {
	t.Helper()
	kv, err := f.env.JS.KeyValue(f.ctx(), events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		last     = map[string]events.DenyRecord{}
		seen     uint64
		narrowed []string
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var rec events.DenyRecord
			mu.Lock()
			seen = e.Revision()
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				narrowed = append(narrowed, fmt.Sprintf("%s revision %d: %v", e.Key(), e.Revision(), err))
			} else if prev, ok := last[e.Key()]; ok && (rec.Expiry.Before(prev.Expiry) || rec.Before.Before(prev.Before)) {
				narrowed = append(narrowed, fmt.Sprintf("%s revision %d narrowed the rule: before %v until %v, after before %v until %v",
					e.Key(), e.Revision(), rec.Before, rec.Expiry, prev.Before, prev.Expiry))
			}
			last[e.Key()] = rec
			mu.Unlock()
		}
	}()
	return func() []string {
		t.Helper()
		s, err := f.env.JS.Stream(f.ctx(), "KV_"+events.BucketDenylist)
		if err != nil {
			t.Fatal(err)
		}
		end := s.CachedInfo().State.LastSeq
		natstest.WaitFor(t, 30*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if seen < end {
				return fmt.Errorf("the watch saw revision %d of %d", seen, end)
			}
			return nil
		})
		_ = w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(narrowed)
	}
}

// waitKnownBy waits until r's token index holds the tokens.
func waitKnownBy(t *testing.T, r *revoker.Revoker, toks []tok) {
	t.Helper()
	natstest.WaitFor(t, 30*time.Second, func() error {
		for _, tk := range toks {
			if _, ok := r.Token(tk.id); !ok {
				return fmt.Errorf("token %s not indexed by the second replica", tk.id)
			}
		}
		return nil
	})
}
