package enforce

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// wait is the polling bound of these tests: generous, for a loaded machine.
const wait = 10 * time.Second

// fakeRevoker publishes the denylist broadcast by hand, as a revoker
// replica would.
type fakeRevoker struct {
	t      *testing.T
	nc     *nats.Conn
	origin string
}

func newFakeRevoker(t *testing.T, nc *nats.Conn) *fakeRevoker {
	return &fakeRevoker{t: t, nc: nc, origin: events.NewOrigin("test-revoker")}
}

// tokenChange is change seq of r revoking token id (KVRev kvRev).
func (r *fakeRevoker) tokenChange(seq uint64, id string, kvRev uint64) events.DenyChange {
	r.t.Helper()
	return events.DenyChange{Origin: r.origin, Seq: seq, Key: events.DenyKeyToken(id),
		Value: denyValue(r.t, events.DenyRecord{Kind: events.RevokeToken, TokenID: id}), KVRev: kvRev, At: time.Now()}
}

func denyValue(t testing.TB, rec events.DenyRecord) json.RawMessage {
	t.Helper()
	rec.Reason, rec.Actor, rec.RevokedAt = "test", "test", time.Now().UTC()
	if rec.Expiry.IsZero() {
		rec.Expiry = time.Now().Add(time.Hour).UTC()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *fakeRevoker) publish(subject string, v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.nc.Publish(subject, b); err != nil {
		r.t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *fakeRevoker) change(c events.DenyChange) { r.publish(events.SubjectDenyChange, c) }

func (r *fakeRevoker) heartbeat(seq, kvRev uint64, pending ...events.DenyChange) {
	r.publish(events.SubjectDenyHeartbeat, events.DenyHeartbeat{Origin: r.origin, Seq: seq, KVRev: kvRev,
		Pending: pending, Interval: 100 * time.Millisecond, At: time.Now()})
}

// beat sends a heartbeat every 100ms from what state returns, until the
// returned stop is called.
func (r *fakeRevoker) beat(state func() (seq, kvRev uint64)) (stop func()) {
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			seq, kvRev := state()
			b, _ := json.Marshal(events.DenyHeartbeat{Origin: r.origin, Seq: seq, KVRev: kvRev, Interval: 100 * time.Millisecond, At: time.Now()})
			_ = r.nc.Publish(events.SubjectDenyHeartbeat, b)
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) }
}

// serveResync answers origin's resync requests with reply(from).
func (r *fakeRevoker) serveResync(reply func(from uint64) any) {
	r.t.Helper()
	sub, err := r.nc.Subscribe(events.SubjectDenyResyncPrefix+r.origin, func(m *nats.Msg) {
		var req events.DenyResyncRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			return
		}
		var b []byte
		switch v := reply(req.From).(type) {
		case []byte:
			b = v
		default:
			b, _ = json.Marshal(v)
		}
		_ = m.Respond(b)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := r.nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

// frontier is the enforcer's frontier and announced sequence of origin.
func frontier(e *Enforcer, origin string) (f, seq uint64) {
	b := e.bcast.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	if o := b.origins[origin]; o != nil {
		return o.f, o.seq
	}
	return 0, 0
}

func waitReason(t *testing.T, e *Enforcer, tok string, want Reason) {
	t.Helper()
	natstest.WaitFor(t, wait, func() error {
		if d := e.Check(readReq(tok)); d.Reason != want {
			return fmt.Errorf("decision %s, want %s", d.Reason, want)
		}
		return nil
	})
}

// TestBroadcastRevokesWithoutBucket: a change the bucket never received
// (JetStream refusing writes, or gone) is applied from the broadcast.
func TestBroadcastRevokesWithoutBucket(t *testing.T) {
	cases := []struct {
		name    string
		disable bool // JetStream switched off on the server
	}{
		{"bucket not written", false},
		{"jetstream disabled", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			e := f.enforcer(t, "edge-bc", nil)
			tok, c := mint(t, f.signer, nil)
			if d := e.Check(readReq(tok)); !d.Allow {
				t.Fatalf("before: %+v", d)
			}
			if tc.disable {
				natstest.SkipJetStreamToggleUnderRace(t)
				if err := f.env.Server.DisableJetStream(); err != nil {
					t.Fatal(err)
				}
			}
			r := newFakeRevoker(t, f.env.NC)
			r.change(r.tokenChange(1, c.ID, 0)) // pending: not written
			waitReason(t, e, tok, ReasonRevoked)
			if s := e.Stats(); s.BroadcastChanges != 1 || s.DenyUnconfirmed != 1 || s.BroadcastBad != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestBroadcastSequence: out of order, duplicates, gaps filled by a resync
// or, when the origin cannot answer, by the bucket.
func TestBroadcastSequence(t *testing.T) {
	t.Run("out of order and duplicates", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-seq", nil)
		r := newFakeRevoker(t, f.env.NC)
		var toks, ids [4]string
		for i := 1; i <= 3; i++ {
			tok, c := mint(t, f.signer, nil)
			toks[i], ids[i] = tok, c.ID
		}
		r.change(r.tokenChange(1, ids[1], 0))
		r.change(r.tokenChange(3, ids[3], 0))
		waitReason(t, e, toks[3], ReasonRevoked)
		if fr, seq := frontier(e, r.origin); fr != 1 || seq != 3 {
			t.Fatalf("frontier %d of %d, want 1 of 3", fr, seq)
		}
		r.change(r.tokenChange(2, ids[2], 0))
		r.change(r.tokenChange(2, ids[2], 0))
		r.change(r.tokenChange(1, ids[1], 0))
		waitStats(t, e, "two duplicates", func(s Stats) bool { return s.BroadcastDuplicates == 2 })
		for i := 1; i <= 3; i++ {
			if d := e.Check(readReq(toks[i])); d.Reason != ReasonRevoked {
				t.Fatalf("token %d: %+v", i, d)
			}
		}
		if fr, _ := frontier(e, r.origin); fr != 3 {
			t.Fatalf("frontier %d, want 3", fr)
		}
		if s := e.Stats(); s.BroadcastChanges != 3 || s.BroadcastGaps != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("gap filled by a resync", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-resync", nil)
		r := newFakeRevoker(t, f.env.NC)
		tok2, c2 := mint(t, f.signer, nil)
		tok3, c3 := mint(t, f.signer, nil)
		_, c1 := mint(t, f.signer, nil)
		_, c4 := mint(t, f.signer, nil)
		missed := []events.DenyChange{r.tokenChange(2, c2.ID, 0), r.tokenChange(3, c3.ID, 0)}
		var asked []uint64
		var mu sync.Mutex
		r.serveResync(func(from uint64) any {
			mu.Lock()
			asked = append(asked, from)
			mu.Unlock()
			return events.DenyResyncReply{Changes: missed[from-2:], Complete: true, Seq: 4}
		})
		r.change(r.tokenChange(1, c1.ID, 0))
		r.change(r.tokenChange(4, c4.ID, 0)) // 2 and 3 lost
		waitReason(t, e, tok2, ReasonRevoked)
		waitReason(t, e, tok3, ReasonRevoked)
		natstest.WaitFor(t, wait, func() error {
			if fr, _ := frontier(e, r.origin); fr != 4 {
				return fmt.Errorf("frontier %d, want 4", fr)
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		if len(asked) == 0 || asked[0] != 2 {
			t.Fatalf("resync requests from %v, want from 2", asked)
		}
		if s := e.Stats(); s.BroadcastResyncs < 1 || s.BroadcastGaps != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("incomplete resync, the bucket fills the gap", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-fill", nil)
		r := newFakeRevoker(t, f.env.NC)
		tok2, c2 := mint(t, f.signer, nil)
		_, c1 := mint(t, f.signer, nil)
		_, c3 := mint(t, f.signer, nil)
		r.serveResync(func(uint64) any { return events.DenyResyncReply{Complete: false, Seq: 3} })
		r.change(r.tokenChange(1, c1.ID, 0))
		// Change 2 was written to the bucket and its broadcast lost.
		rev := f.revoke(t, events.DenyKeyToken(c2.ID), events.DenyRecord{Kind: events.RevokeToken, TokenID: c2.ID})
		r.change(r.tokenChange(3, c3.ID, 0))
		waitStats(t, e, "a resync fell back", func(s Stats) bool { return s.BroadcastResyncFallbacks >= 1 })
		// Two heartbeats: the second one's (empty) pending list is
		// known complete.
		natstest.WaitFor(t, wait, func() error {
			r.heartbeat(3, rev)
			if fr, _ := frontier(e, r.origin); fr != 3 {
				return fmt.Errorf("frontier %d, want 3", fr)
			}
			return nil
		})
		waitReason(t, e, tok2, ReasonRevoked)
		if s := e.Stats(); s.BroadcastBucketFills < 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("pending list split over heartbeats", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-more", nil)
		r := newFakeRevoker(t, f.env.NC)
		tok2, c2 := mint(t, f.signer, nil)
		tok3, c3 := mint(t, f.signer, nil)
		hb := func(more bool, p ...events.DenyChange) {
			r.publish(events.SubjectDenyHeartbeat, events.DenyHeartbeat{Origin: r.origin, Seq: 3, Pending: p, More: more, Interval: time.Second, At: time.Now()})
		}
		// Joined in the middle of a split list: not complete.
		hb(false, r.tokenChange(3, c3.ID, 0))
		waitReason(t, e, tok3, ReasonRevoked)
		hb(true, r.tokenChange(2, c2.ID, 0))
		waitReason(t, e, tok2, ReasonRevoked)
		// Change 1 was never seen: a list received only in part does
		// not let the bucket stand in for it.
		if fr, _ := frontier(e, r.origin); fr != 0 {
			t.Fatalf("frontier %d after an incomplete list", fr)
		}
		// The last part of a list whose every part arrived: complete,
		// so change 1 is in the bucket (KVRev 0 ≤ what the watch applied).
		hb(false, r.tokenChange(3, c3.ID, 0))
		natstest.WaitFor(t, wait, func() error {
			if fr, _ := frontier(e, r.origin); fr != 3 {
				return fmt.Errorf("frontier %d, want 3", fr)
			}
			return nil
		})
	})
}

// TestBroadcastFreshness: with a live origin, heartbeats decide whether
// the view is current; a gap nobody fills makes it stale.
func TestBroadcastFreshness(t *testing.T) {
	const bound = 2 * time.Second
	failClosed := func(o *Options) {
		o.MaxStaleness = bound
		o.FailClosed = true
		o.ProbeInterval = 100 * time.Millisecond
	}
	t.Run("missed change is stale until filled", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-fresh", failClosed)
		r := newFakeRevoker(t, f.env.NC)
		tok, _ := mint(t, f.signer, nil)
		_, victim := mint(t, f.signer, nil)
		var mu sync.Mutex
		seq, kvRev := uint64(0), uint64(0)
		stop := r.beat(func() (uint64, uint64) { mu.Lock(); defer mu.Unlock(); return seq, kvRev })
		defer stop()
		waitStats(t, e, "origin live", func(s Stats) bool { return s.BroadcastOrigins == 1 })
		waitReason(t, e, tok, ReasonOK)
		// Change 1 is announced but its broadcast was lost; it is not
		// pending and the bucket does not hold it (its revision is
		// beyond anything written).
		mu.Lock()
		seq, kvRev = 1, 1<<40
		mu.Unlock()
		waitReason(t, e, tok, ReasonDenylistStale)
		if s := e.DenylistStaleness(); s <= bound {
			t.Fatalf("denied as stale after %v, bound %v", s, bound)
		}
		r.serveResync(func(uint64) any {
			return events.DenyResyncReply{Changes: []events.DenyChange{r.tokenChange(1, victim.ID, 0)}, Complete: true, Seq: 1}
		})
		waitReason(t, e, tok, ReasonOK)
	})
	t.Run("silent origin with a gap keeps the view stale", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-silent", failClosed)
		r := newFakeRevoker(t, f.env.NC)
		tok, _ := mint(t, f.signer, nil)
		var mu sync.Mutex
		var seq uint64
		stop := r.beat(func() (uint64, uint64) { mu.Lock(); defer mu.Unlock(); return seq, 1 << 40 })
		waitStats(t, e, "origin live", func(s Stats) bool { return s.BroadcastOrigins == 1 })
		waitReason(t, e, tok, ReasonOK)
		mu.Lock()
		seq = 1
		mu.Unlock()
		// Wait until the announcement was heard, then go silent.
		natstest.WaitFor(t, wait, func() error {
			if _, s := frontier(e, r.origin); s != 1 {
				return fmt.Errorf("announced %d", s)
			}
			return nil
		})
		stop()
		waitStats(t, e, "origin silent", func(s Stats) bool { return s.BroadcastOrigins == 0 })
		// The bucket probe still says current, but the gap stays.
		waitReason(t, e, tok, ReasonDenylistStale)
		if d := e.Check(readReq(tok)); d.Reason != ReasonDenylistStale {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("origin first heard with a gap", func(t *testing.T) {
		f := newFixture(t)
		e := f.enforcer(t, "edge-first", failClosed)
		r := newFakeRevoker(t, f.env.NC)
		tok, _ := mint(t, f.signer, nil)
		stop := r.beat(func() (uint64, uint64) { return 1, 1 << 40 })
		defer stop()
		waitStats(t, e, "origin live", func(s Stats) bool { return s.BroadcastOrigins == 1 })
		// The bucket probe says current; the origin's change 1 was never
		// seen and nobody can supply it.
		waitReason(t, e, tok, ReasonDenylistStale)
	})
	t.Run("heartbeats and jetstream gone", func(t *testing.T) {
		natstest.SkipJetStreamToggleUnderRace(t)
		f := newFixture(t)
		e := f.enforcer(t, "edge-gone", failClosed)
		r := newFakeRevoker(t, f.env.NC)
		tok, _ := mint(t, f.signer, nil)
		stop := r.beat(func() (uint64, uint64) { return 0, 0 })
		waitStats(t, e, "origin live", func(s Stats) bool { return s.BroadcastOrigins == 1 })
		waitReason(t, e, tok, ReasonOK)
		if err := f.env.Server.DisableJetStream(); err != nil {
			t.Fatal(err)
		}
		// Heartbeats alone keep the view current while JetStream is down.
		mark := time.Now()
		natstest.WaitFor(t, wait, func() error {
			if at := e.DenylistCurrentAt(); !at.After(mark.Add(bound)) {
				return fmt.Errorf("current at %v", at)
			}
			return nil
		})
		waitReason(t, e, tok, ReasonOK)
		stop()
		waitReason(t, e, tok, ReasonDenylistStale)
	})
}

// TestBroadcastRejectsBadMessages: malformed or forged broadcasts are
// counted and change nothing; the listener goes on.
func TestBroadcastRejectsBadMessages(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-bad", nil)
	r := newFakeRevoker(t, f.env.NC)
	tok, c := mint(t, f.signer, nil)
	good := r.tokenChange(1, c.ID, 0)
	with := func(mod func(*events.DenyChange)) events.DenyChange { x := good; mod(&x); return x }
	other := newFakeRevoker(t, f.env.NC)
	cases := []struct {
		name    string
		subject string
		msg     any
	}{
		{"malformed json", events.SubjectDenyChange, []byte(`{"origin":`)},
		{"seq 0", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Seq = 0 })},
		{"origin with dots", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Origin = "rev.a" })},
		{"origin with wildcard", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Origin = "rev*" })},
		{"origin with >", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Origin = ">" })},
		{"oversized value", events.SubjectDenyChange, with(func(x *events.DenyChange) {
			x.Value = json.RawMessage(`"` + strings.Repeat("a", events.MaxDenyValue) + `"`)
		})},
		{"key with wildcard", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Key = "tok.*" })},
		{"key of no kind", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Key = "nokind" })},
		{"key of unknown kind", events.SubjectDenyChange, with(func(x *events.DenyChange) { x.Key = "what." + c.ID; x.Seq = 5 })},
		{"heartbeat malformed", events.SubjectDenyHeartbeat, []byte(`[]`)},
		{"heartbeat without interval", events.SubjectDenyHeartbeat, events.DenyHeartbeat{Origin: r.origin, Seq: 1}},
		{"pending of another origin", events.SubjectDenyHeartbeat, events.DenyHeartbeat{Origin: other.origin, Seq: 1,
			Pending: []events.DenyChange{good}, Interval: time.Second}},
		{"pending beyond the heartbeat's seq", events.SubjectDenyHeartbeat, events.DenyHeartbeat{Origin: r.origin, Seq: 0,
			Pending: []events.DenyChange{good}, Interval: time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Stats().BroadcastBad
			b, ok := tc.msg.([]byte)
			if !ok {
				var err error
				if b, err = json.Marshal(tc.msg); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.env.NC.Publish(tc.subject, b); err != nil {
				t.Fatal(err)
			}
			waitStats(t, e, "rejected", func(s Stats) bool { return s.BroadcastBad == before+1 })
			if d := e.Check(readReq(tok)); !d.Allow {
				t.Fatalf("a rejected message revoked: %+v", d)
			}
		})
	}
	t.Run("resync reply forging another origin's change", func(t *testing.T) {
		before := e.Stats().BroadcastBad
		forgedTok, forged := mint(t, f.signer, nil)
		r.serveResync(func(uint64) any {
			return events.DenyResyncReply{Changes: []events.DenyChange{other.tokenChange(1, forged.ID, 0)}, Complete: true, Seq: 2}
		})
		r.change(r.tokenChange(2, "tok-gap", 0)) // opens a gap before 2
		waitStats(t, e, "reply rejected", func(s Stats) bool {
			return s.BroadcastBad > before && s.BroadcastResyncFallbacks >= 1
		})
		if d := e.Check(readReq(forgedTok)); !d.Allow {
			t.Fatalf("a forged resync change revoked: %+v", d)
		}
	})
	// The listener goes on: the good change applies.
	r.change(good)
	waitReason(t, e, tok, ReasonRevoked)
	if s := e.Stats(); s.BroadcastOrigins != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The counters are metrics.
	reg := prometheus.NewRegistry()
	if err := reg.Register(e.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	st := e.Stats()
	for name, want := range map[string]float64{
		"cordon_enforcer_broadcast_bad_total":     float64(st.BroadcastBad),
		"cordon_enforcer_broadcast_changes_total": float64(st.BroadcastChanges),
		"cordon_enforcer_broadcast_origins":       1,
	} {
		if got[name] != want || want == 0 {
			t.Errorf("%s = %v, want %v (non-zero)", name, got[name], want)
		}
	}
}

// TestBroadcastEntrySurvivesOlderBucketDeletes: an entry a broadcast put
// is not removed by a bucket delete or expiry older than its write, and is
// once the bucket has confirmed it.
func TestBroadcastEntrySurvivesOlderBucketDeletes(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-expiry", nil)
	r := newFakeRevoker(t, f.env.NC)
	kv := f.kv(t, events.BucketDenylist)
	ctx := context.Background()

	// An old entry for the token, expiring in a second; meanwhile the
	// token is revoked again, pending (JetStream did not take the write).
	tok, c := mint(t, f.signer, nil)
	key := events.DenyKeyToken(c.ID)
	old, err := kv.Create(ctx, key, denyValue(t, events.DenyRecord{Kind: events.RevokeToken, TokenID: c.ID}), jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, e, old)
	r.change(r.tokenChange(1, c.ID, 0))
	waitStats(t, e, "applied", func(s Stats) bool { return s.BroadcastChanges == 1 })
	// The expiry marker arrives: the pending revocation holds.
	waitRevision(t, e, old+1)
	if d := e.Check(readReq(tok)); d.Reason != ReasonRevoked {
		t.Fatalf("after the expiry marker: %+v", d)
	}
	// A delete too (the sentinel after it tells when it was applied).
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, e, f.revoke(t, events.DenyKeyToken("sentinel-1"), events.DenyRecord{Kind: events.RevokeToken}))
	if d := e.Check(readReq(tok)); d.Reason != ReasonRevoked {
		t.Fatalf("after a delete: %+v", d)
	}
	if s := e.Stats(); s.DenyUnconfirmed != 1 {
		t.Fatalf("stats %+v", s)
	}

	// A broadcast the bucket has confirmed (its KVRev applied) goes with
	// a later delete, as the bucket says.
	tok2, c2 := mint(t, f.signer, nil)
	key2 := events.DenyKeyToken(c2.ID)
	rev2 := f.revoke(t, key2, events.DenyRecord{Kind: events.RevokeToken, TokenID: c2.ID})
	r.change(r.tokenChange(2, c2.ID, rev2))
	waitReason(t, e, tok2, ReasonRevoked)
	waitStats(t, e, "applied", func(s Stats) bool { return s.BroadcastChanges == 2 })
	if err := kv.Delete(ctx, key2); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, e, f.revoke(t, events.DenyKeyToken("sentinel-2"), events.DenyRecord{Kind: events.RevokeToken}))
	if d := e.Check(readReq(tok2)); !d.Allow {
		t.Fatalf("a confirmed entry survived its delete: %+v", d)
	}
}

// TestDenylistUnconfirmed drives the live denylist directly: bucket
// entries and broadcast changes in every order.
func TestDenylistUnconfirmed(t *testing.T) {
	now := time.Now()
	rec := func(kind string, at time.Time) []byte {
		return denyValue(t, events.DenyRecord{Kind: kind, Tenant: "acme", Holder: "w", RevokedAt: at})
	}
	holder := events.DenyKeyHolder("acme", "w")
	early, late := now.Add(-time.Hour).Truncate(time.Second), now.Truncate(time.Second)
	type step struct {
		op    string // put, del, bcast, replay
		value []byte
		rev   uint64 // bucket revision (put, del, replay) or KVRev (bcast)
	}
	cases := []struct {
		name  string
		steps []step
		want  int64 // holder cut-off (0: no rule)
	}{
		{"pending survives a delete", []step{{"put", rec(events.RevokeHolder, early), 1}, {"bcast", rec(events.RevokeHolder, late), 0}, {"del", nil, 2}}, late.Unix()},
		{"pending survives a replay", []step{{"bcast", rec(events.RevokeHolder, late), 0}, {"replay", nil, 5}}, late.Unix()},
		{"later write survives an older delete", []step{{"bcast", rec(events.RevokeHolder, late), 7}, {"del", nil, 6}}, late.Unix()},
		{"later write survives an older replay", []step{{"bcast", rec(events.RevokeHolder, late), 7}, {"replay", nil, 6}}, late.Unix()},
		{"confirmed write goes with a later delete", []step{{"bcast", rec(events.RevokeHolder, late), 7}, {"put", rec(events.RevokeHolder, late), 7}, {"del", nil, 8}}, 0},
		{"replay covering the write decides", []step{{"bcast", rec(events.RevokeHolder, late), 7}, {"replay", nil, 9}}, 0},
		{"older put does not narrow", []step{{"bcast", rec(events.RevokeHolder, late), 0}, {"put", rec(events.RevokeHolder, early), 3}}, late.Unix()},
		{"broadcasts merge by cut-off", []step{{"bcast", rec(events.RevokeHolder, late), 0}, {"bcast", rec(events.RevokeHolder, early), 0}}, late.Unix()},
		{"covered broadcast is old news", []step{{"put", nil, 4}, {"del", nil, 5}, {"bcast", rec(events.RevokeHolder, late), 4}}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDenylist()
			for _, s := range tc.steps {
				switch s.op {
				case "put":
					v := s.value
					if v == nil {
						v = rec(events.RevokeHolder, early)
					}
					_ = d.apply(holder, v, false, s.rev, now)
				case "del":
					_ = d.apply(holder, nil, true, s.rev, now)
				case "bcast":
					if _, err := d.applyBroadcast(holder, s.value, s.rev, now); err != nil {
						t.Fatal(err)
					}
				case "replay":
					d.replace(newDenySet(), s.rev)
				}
			}
			got, ok := d.set.holders[holderKey{"acme", "w"}]
			if !ok {
				got = 0
			}
			if got != tc.want {
				t.Fatalf("cut-off %d, want %d", got, tc.want)
			}
		})
	}
}

// TestStartWithoutDeadline: Start takes a context without a deadline (the
// auditor's analyst API passes its service context) and still subscribes
// to the broadcast.
func TestStartWithoutDeadline(t *testing.T) {
	f := newFixture(t)
	e, err := New(Options{ID: "edge-nodeadline", Routes: f.routes, TrustAnchors: f.env.Anchors(), DisableUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.Start(context.Background(), f.env.JS); err != nil {
		t.Fatalf("Start without a deadline: %v", err)
	}
	tok, c := mint(t, f.signer, nil)
	r := newFakeRevoker(t, f.env.NC)
	r.change(r.tokenChange(1, c.ID, 0))
	waitReason(t, e, tok, ReasonRevoked)
}
