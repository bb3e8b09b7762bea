package revoker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// listener records the denylist broadcast as an enforcer hears it.
type listener struct {
	t          *testing.T
	mu         sync.Mutex
	changes    []events.DenyChange
	heartbeats []events.DenyHeartbeat
	bad        []string
}

func listen(t *testing.T, nc *nats.Conn) *listener {
	t.Helper()
	l := &listener{t: t}
	for subj, h := range map[string]nats.MsgHandler{
		events.SubjectDenyChange: func(m *nats.Msg) {
			c, err := events.DecodeDenyChange(m.Data)
			l.mu.Lock()
			defer l.mu.Unlock()
			if err != nil {
				l.bad = append(l.bad, err.Error())
				return
			}
			l.changes = append(l.changes, c)
		},
		events.SubjectDenyHeartbeat: func(m *nats.Msg) {
			h, err := events.DecodeDenyHeartbeat(m.Data)
			l.mu.Lock()
			defer l.mu.Unlock()
			if err != nil {
				l.bad = append(l.bad, err.Error())
				return
			}
			l.heartbeats = append(l.heartbeats, h)
		},
	} {
		sub, err := nc.Subscribe(subj, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

// of returns the changes and heartbeats of one origin heard so far, and
// fails the test on a message that does not decode.
func (l *listener) of(origin string) ([]events.DenyChange, []events.DenyHeartbeat) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) > 0 {
		l.t.Fatalf("the revoker broadcast malformed messages: %v", l.bad)
	}
	var cs []events.DenyChange
	for _, c := range l.changes {
		if c.Origin == origin {
			cs = append(cs, c)
		}
	}
	var hs []events.DenyHeartbeat
	for _, h := range l.heartbeats {
		if h.Origin == origin {
			hs = append(hs, h)
		}
	}
	return cs, hs
}

// waitChange waits for a change of key: pending (KVRev 0) or written.
func (l *listener) waitChange(origin, key string, written bool) events.DenyChange {
	l.t.Helper()
	var got events.DenyChange
	natstest.WaitFor(l.t, 10*time.Second, func() error {
		cs, _ := l.of(origin)
		for _, c := range cs {
			if c.Key == key && (c.KVRev != 0) == written {
				got = c
				return nil
			}
		}
		return fmt.Errorf("no %s change of %s broadcast (heard %d changes)", map[bool]string{true: "written", false: "pending"}[written], key, len(cs))
	})
	return got
}

// checkWrites asserts that every written change names the bucket
// revision that holds exactly its key and value.
func (f *fixture) checkWrites(cs []events.DenyChange) {
	f.t.Helper()
	s, err := f.env.JS.Stream(f.ctx(), "KV_"+events.BucketDenylist)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, c := range cs {
		if c.KVRev == 0 {
			continue
		}
		m, err := s.GetMsg(f.ctx(), c.KVRev)
		if err != nil {
			f.t.Fatalf("change %d of %s: bucket revision %d: %v", c.Seq, c.Key, c.KVRev, err)
		}
		if m.Subject != "$KV."+events.BucketDenylist+"."+c.Key || !bytes.Equal(m.Data, c.Value) {
			f.t.Fatalf("change %d says %s is %s at revision %d; the bucket has %s = %s there", c.Seq, c.Key, c.Value, c.KVRev, m.Subject, m.Data)
		}
	}
}

// checkSeqs asserts that an origin's changes are numbered 1, 2, … in
// the order heard.
func checkSeqs(t *testing.T, cs []events.DenyChange) {
	t.Helper()
	for i, c := range cs {
		if c.Seq != uint64(i+1) {
			t.Fatalf("change %d of the origin has seq %d, want %d: %+v", i+1, c.Seq, i+1, cs)
		}
	}
}

// TestBroadcastEveryRevocationPath: a revocation by command, by the Go
// API, by the ledger consumer compiling a TokenRevoked published by
// someone else, and by the anomaly response each broadcast their denylist
// entries — first pending, then written with the bucket revision that
// holds them — in one gapless sequence of the revoker's origin.
func TestBroadcastEveryRevocationPath(t *testing.T) {
	f := setup(t, func(o *revoker.Options) { o.Policy = policy(t, testPolicy) })
	l := listen(t, f.env.NC)
	origin := f.r.Origin()
	s := issueSet(f)
	viaAnomaly := f.issue("acme", "web", "kid3", time.Minute, time.Hour, false)
	viaLedger := f.issue("acme", "web", "kid3", time.Minute, time.Hour, false)
	f.waitKnown(viaAnomaly, viaLedger)

	// By command: kind token.
	rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: s.t1.id})
	if !rep.OK || rep.Ledger != revoker.LedgerRecorded || !bytes.Contains(raw, []byte(`"ledger":"recorded"`)) {
		t.Fatalf("reply %s, want ok and ledger recorded", raw)
	}
	pend := l.waitChange(origin, events.DenyKeyToken(s.t1.id), false)
	wrote := l.waitChange(origin, events.DenyKeyToken(s.t1.id), true)
	if pend.Seq >= wrote.Seq {
		t.Fatalf("the write (seq %d) was broadcast before the pending change (seq %d)", wrote.Seq, pend.Seq)
	}

	// By the Go API: kind holder; the ledger consumer then writes t2's
	// token entry (t1's exists).
	res, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: "holder", Tenant: "acme", Holder: "billing", Actor: "test", Reason: "test"})
	if err != nil || res.Ledger != revoker.LedgerRecorded {
		t.Fatalf("revoke holder: %+v, %v", res, err)
	}
	l.waitChange(origin, events.DenyKeyHolder("acme", "billing"), false)
	l.waitChange(origin, events.DenyKeyHolder("acme", "billing"), true)
	l.waitChange(origin, events.DenyKeyToken(s.t2.id), true)

	// By the anomaly response.
	f.anomaly(viaAnomaly, "an-bcast", "scope_probing", "critical", time.Now())
	l.waitChange(origin, events.DenyKeyToken(viaAnomaly.id), true)

	// By the ledger consumer: a TokenRevoked another service recorded.
	f.publish(time.Now(), &events.TokenRevoked{TokenID: viaLedger.id, Tenant: viaLedger.tenant, Holder: viaLedger.holder,
		KeyID: viaLedger.kid, Kind: events.RevokeToken, Actor: "issuer", Reason: "rotated", Expiry: viaLedger.expiry})
	l.waitChange(origin, events.DenyKeyToken(viaLedger.id), true)

	cs, _ := l.of(origin)
	checkSeqs(t, cs)
	f.checkWrites(cs)
	// Every denylist entry is announced by a written change.
	for _, key := range f.denyKeys() {
		if !slices.ContainsFunc(cs, func(c events.DenyChange) bool { return c.Key == key && c.KVRev != 0 }) {
			t.Errorf("denylist entry %s was never broadcast as written", key)
		}
	}
	// Heartbeats announce the last sequence and revision once all is written.
	natstest.WaitFor(t, 10*time.Second, func() error {
		cs, hs := l.of(origin)
		last := cs[len(cs)-1]
		var maxRev uint64
		for _, c := range cs {
			maxRev = max(maxRev, c.KVRev)
		}
		if len(hs) == 0 {
			return fmt.Errorf("no heartbeat")
		}
		h := hs[len(hs)-1]
		if h.Seq != last.Seq || h.KVRev != maxRev || len(h.Pending) != 0 || h.More || h.Interval != revoker.DefaultHeartbeatInterval {
			return fmt.Errorf("last heartbeat %+v, want seq %d, kv_rev %d, nothing pending", h, last.Seq, maxRev)
		}
		return nil
	})
	if st := f.r.Stats(); st.Broadcasts != uint64(len(cs)) || st.LedgerPending != 0 || st.PendingChanges != 0 {
		t.Errorf("stats: %d broadcasts (heard %d), %d pending, %d pending changes", st.Broadcasts, len(cs), st.LedgerPending, st.PendingChanges)
	}
}

// confirmAdmin makes one authenticated request, so that the revoker has
// confirmed the admin token with JetStream (revoker.AuthGrace).
func (f *fixture) confirmAdmin() {
	f.t.Helper()
	if rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: newID(f.t)}); rep.Code != revoker.CodeNotFound {
		f.t.Fatalf("reply %s, want not_found", raw)
	}
}

// stopJetStream turns JetStream off on the test's server (core NATS goes
// on) and returns the function that turns it on again on the same store.
func stopJetStream(t *testing.T, env *natstest.Env) func() {
	t.Helper()
	natstest.SkipJetStreamToggleUnderRace(t)
	if err := env.Server.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := env.Server.EnableJetStream(&server.JetStreamConfig{StoreDir: env.Dir}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRevokeWhileJetStreamIsDown: with JetStream off, revocations (kind
// token by command, a holder by the Go API) reply "pending" once
// LedgerWait has passed, are broadcast and carried by every heartbeat —
// which keep coming; a retry with the same idempotency key still says
// pending. Once JetStream is back, each ledger event and denylist entry
// appears exactly once, the pending list empties, the writes are
// broadcast with their revisions, and the retry says recorded.
func TestRevokeWhileJetStreamIsDown(t *testing.T) {
	f := setup(t, func(o *revoker.Options) {
		o.LedgerWait = 500 * time.Millisecond
		o.HeartbeatInterval = 20 * time.Millisecond
	})
	l := listen(t, f.env.NC)
	origin := f.r.Origin()
	s := issueSet(f)
	f.confirmAdmin()

	start := stopJetStream(t, f.env)
	req := revoker.CommandRequest{Kind: "token", TokenID: s.t1.id, IdempotencyKey: "k1"}
	rep, raw := f.call(req)
	if !rep.OK || rep.Ledger != revoker.LedgerPending || !slices.Equal(rep.Revoked, []string{s.t1.id}) ||
		!bytes.Contains(raw, []byte(`"ledger":"pending"`)) {
		t.Fatalf("reply %s, want t1 revoked, ledger pending", raw)
	}
	res, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: "holder", Tenant: "acme", Holder: "ledger", Actor: "test", Reason: "test"})
	if err != nil || res.Ledger != revoker.LedgerPending || !slices.Equal(res.Revoked, []string{s.t3.id}) {
		t.Fatalf("revoke holder while JetStream is down: %+v, %v", res, err)
	}
	// A second revocation of the pending token adds no second event.
	if res, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: "token", TokenID: s.t1.id, Actor: "test", Reason: "again"}); err != nil ||
		!slices.Equal(res.Already, []string{s.t1.id}) || len(res.Revoked) != 0 {
		t.Fatalf("revoking the pending token again: %+v, %v", res, err)
	}
	tokenKey, ruleKey := events.DenyKeyToken(s.t1.id), events.DenyKeyHolder("acme", "ledger")
	l.waitChange(origin, tokenKey, false)
	l.waitChange(origin, ruleKey, false)
	if p := f.r.Pending(); len(p) != 2 || !slices.Equal(p[0].Tokens, []string{s.t1.id}) || p[1].Rule != ruleKey {
		t.Fatalf("pending revocations %+v", p)
	}

	// Heartbeats keep coming, each carrying both pending changes.
	cs, hs := l.of(origin)
	last, seen := cs[len(cs)-1].Seq, len(hs)
	natstest.WaitFor(t, 10*time.Second, func() error {
		_, hs := l.of(origin)
		n := 0
		for _, h := range hs[seen:] {
			if h.Seq != last {
				continue // sent before the last change, heard after it
			}
			keys := []string{}
			for _, p := range h.Pending {
				keys = append(keys, p.Key)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, []string{ruleKey, tokenKey}) || h.More {
				t.Fatalf("heartbeat %+v while JetStream is down: pending %v, want %s and %s", h, keys, ruleKey, tokenKey)
			}
			n++
		}
		if n < 5 {
			return fmt.Errorf("%d heartbeats since JetStream stopped, want 5", n)
		}
		return nil
	})
	if rep, raw := f.call(req); rep.Ledger != revoker.LedgerPending {
		t.Fatalf("retry while JetStream is down: %s", raw)
	}

	start()
	natstest.WaitFor(t, 30*time.Second, func() error {
		if p := f.r.Pending(); len(p) != 0 {
			return fmt.Errorf("still pending: %+v", p)
		}
		return nil
	})
	if st := f.r.Stats(); st.LedgerRetries == 0 || st.PendingChanges != 0 {
		t.Errorf("stats after recovery: %d retries, %d pending changes", st.LedgerRetries, st.PendingChanges)
	}
	led := f.revocations()
	if len(led) != 2 || len(led[s.t1.id]) != 1 || len(led[s.t3.id]) != 1 {
		t.Fatalf("ledger revocations %v, want one each of t1 and t3", led)
	}
	// (t3's token entry is the ledger consumer's, which pulls again after
	// the outage.)
	for _, key := range []string{tokenKey, ruleKey, events.DenyKeyToken(s.t3.id)} {
		natstest.WaitFor(t, 30*time.Second, func() error {
			if _, _, ok := f.deny(key); !ok {
				return fmt.Errorf("no denylist entry %s", key)
			}
			return nil
		})
		l.waitChange(origin, key, true)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		_, hs := l.of(origin)
		if h := hs[len(hs)-1]; len(h.Pending) != 0 {
			return fmt.Errorf("heartbeat still carries %d pending changes", len(h.Pending))
		}
		return nil
	})
	cs, _ = l.of(origin)
	checkSeqs(t, cs)
	f.checkWrites(cs)
	if rep, raw := f.call(req); !rep.OK || rep.Ledger != revoker.LedgerRecorded || !slices.Equal(rep.Revoked, []string{s.t1.id}) {
		t.Fatalf("retry after recovery: %s, want the first reply, now recorded", raw)
	}
}

// TestPendingJournalReplayed: a revocation still pending when the revoker
// closes is logged, kept in the journal of DataDir and, at the next start,
// broadcast again and written — once.
func TestPendingJournalReplayed(t *testing.T) {
	dir := t.TempDir()
	f := setup(t, func(o *revoker.Options) {
		o.LedgerWait = 500 * time.Millisecond
		o.DataDir = dir
	})
	s := issueSet(f)
	f.confirmAdmin()
	start := stopJetStream(t, f.env)
	rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: s.t2.id})
	if rep.Ledger != revoker.LedgerPending {
		t.Fatalf("reply %s, want pending", raw)
	}
	f.r.Close()
	if !strings.Contains(f.logs.String(), "revoker closing with revocations JetStream has not accepted") ||
		!strings.Contains(f.logs.String(), s.t2.id) {
		t.Fatalf("Close did not log the pending revocation:\n%s", f.logs.String())
	}
	if b, err := os.ReadFile(filepath.Join(dir, "revoker-pending.jsonl")); err != nil || !bytes.Contains(b, []byte(s.t2.id)) {
		t.Fatalf("journal: %v\n%s", err, b)
	}
	start()
	if got := f.revocations(); len(got) != 0 {
		t.Fatalf("ledger revocations before the replay: %v", got)
	}

	l := listen(t, f.env.NC)
	f.start()
	origin := f.r.Origin()
	l.waitChange(origin, events.DenyKeyToken(s.t2.id), false)
	l.waitChange(origin, events.DenyKeyToken(s.t2.id), true)
	natstest.WaitFor(t, 30*time.Second, func() error {
		if p := f.r.Pending(); len(p) != 0 {
			return fmt.Errorf("still pending: %+v", p)
		}
		return nil
	})
	if got := f.revocations(); len(got) != 1 || len(got[s.t2.id]) != 1 {
		t.Fatalf("ledger revocations after the replay: %v, want one of t2", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "revoker-pending.jsonl")); err != nil || len(b) != 0 {
		t.Fatalf("journal after the replay: %v %q, want empty", err, b)
	}
}

// TestResync: an enforcer that missed changes asks the origin for them
// from a sequence: it gets them while the ring reaches back that far,
// Complete=false once the ring has rolled past, nothing (complete) from
// beyond the last, and Complete=false for a malformed request.
func TestResync(t *testing.T) {
	f := setup(t, func(o *revoker.Options) { o.BroadcastRing = 4 })
	l := listen(t, f.env.NC)
	origin := f.r.Origin()
	s := issueSet(f)
	ask := func(body string) events.DenyResyncReply {
		t.Helper()
		m, err := f.env.NC.Request(events.SubjectDenyResyncPrefix+origin, []byte(body), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := events.DecodeDenyResyncReply(origin, m.Data)
		if err != nil {
			t.Fatalf("resync reply %s: %v", m.Data, err)
		}
		return rep
	}
	for _, tk := range []tok{s.t1, s.t2, s.t3} {
		if rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: tk.id}); !rep.OK {
			t.Fatalf("revoke: %s", raw)
		}
		l.waitChange(origin, events.DenyKeyToken(tk.id), true)
	}
	cs, _ := l.of(origin)
	if len(cs) != 6 {
		t.Fatalf("%d changes broadcast, want 6 (pending and written, three tokens)", len(cs))
	}
	cases := []struct {
		name     string
		body     string
		complete bool
		want     []events.DenyChange
	}{
		{"within the ring", `{"from":5}`, true, cs[4:]},
		{"the ring's oldest", `{"from":3}`, true, cs[2:]},
		{"rolled past", `{"from":2}`, false, nil},
		{"from the start", `{"from":1}`, false, nil},
		{"beyond the last", `{"from":7}`, true, nil},
		{"malformed", `{"from":"x"`, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := ask(tc.body)
			if rep.Complete != tc.complete || rep.Seq != 6 || len(rep.Changes) != len(tc.want) {
				t.Fatalf("reply %+v, want complete=%v, seq 6, %d changes", rep, tc.complete, len(tc.want))
			}
			for i := range tc.want {
				a, _ := json.Marshal(rep.Changes[i])
				b, _ := json.Marshal(tc.want[i])
				if !bytes.Equal(a, b) {
					t.Fatalf("change %d: %s, broadcast was %s", i, a, b)
				}
			}
		})
	}
	if st := f.r.Stats(); st.Resyncs != uint64(len(cases)) || st.ResyncsIncomplete != 3 {
		t.Errorf("stats: %d resyncs, %d incomplete", st.Resyncs, st.ResyncsIncomplete)
	}
}

// TestBurstWhileJetStreamIsDown: once JetStream has refused a
// revocation, the next ones do not each wait LedgerWait: a burst is
// broadcast and answered pending at once (here 30 revocations take far
// less than 30 × LedgerWait), and every one reaches the ledger exactly
// once when JetStream is back.
func TestBurstWhileJetStreamIsDown(t *testing.T) {
	const n = 30
	f := setup(t, func(o *revoker.Options) { o.LedgerWait = 2 * time.Second })
	l := listen(t, f.env.NC)
	toks := make([]tok, n)
	for i := range toks {
		toks[i] = f.issue("acme", fmt.Sprintf("svc-%d", i), "kid1", time.Minute, time.Hour, false)
	}
	f.waitKnown(toks...)
	start := stopJetStream(t, f.env)
	began := time.Now()
	for _, tk := range toks {
		res, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: "token", TokenID: tk.id, Actor: "test", Reason: "burst"})
		if err != nil || res.Ledger != revoker.LedgerPending || !slices.Equal(res.Revoked, []string{tk.id}) {
			t.Fatalf("revoke %s while JetStream is down: %+v, %v", tk.id, res, err)
		}
	}
	if took := time.Since(began); took > n*2*time.Second/3 {
		t.Fatalf("%d revocations took %v: each waited for JetStream", n, took)
	}
	for _, tk := range toks {
		l.waitChange(f.r.Origin(), events.DenyKeyToken(tk.id), false)
	}
	if p := f.r.Pending(); len(p) != n {
		t.Fatalf("%d pending revocations, want %d", len(p), n)
	}
	start()
	natstest.WaitFor(t, 60*time.Second, func() error {
		if p := f.r.Pending(); len(p) != 0 {
			return fmt.Errorf("%d still pending", len(p))
		}
		return nil
	})
	led := f.revocations()
	for _, tk := range toks {
		if len(led[tk.id]) != 1 {
			t.Fatalf("%d ledger events for %s, want 1", len(led[tk.id]), tk.id)
		}
		if _, _, ok := f.deny(events.DenyKeyToken(tk.id)); !ok {
			t.Fatalf("no denylist entry for %s", tk.id)
		}
	}
	cs, _ := l.of(f.r.Origin())
	checkSeqs(t, cs)
	f.checkWrites(cs)
}

// TestAdminDuringOutage: while JetStream is down, cordon.cmd.revoke
// accepts only admin tokens confirmed with JetStream within
// revoker.AuthGrace; a token never confirmed is refused (unavailable), and
// an admin token whose own revocation is pending is refused (revoked).
func TestAdminDuringOutage(t *testing.T) {
	f := setup(t, func(o *revoker.Options) { o.LedgerWait = 500 * time.Millisecond })
	s := issueSet(f)
	claims := func() token.Claims {
		return token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}}
	}
	unconfirmed, doomed := f.mint(claims()), f.mint(claims())
	f.confirmAdmin()
	if rep, raw := f.call(revoker.CommandRequest{Auth: doomed, Kind: "token", TokenID: newID(t)}); rep.Code != revoker.CodeNotFound {
		t.Fatalf("doomed admin before the outage: %s", raw)
	}
	start := stopJetStream(t, f.env)

	if rep, raw := f.call(revoker.CommandRequest{Auth: unconfirmed, Kind: "token", TokenID: s.t1.id}); rep.OK || rep.Code != revoker.CodeInternal ||
		!strings.Contains(rep.Error, "unavailable") {
		t.Fatalf("never confirmed admin token during the outage: %s, want refused as unavailable", raw)
	}
	doomedID := parsed(t, doomed).ID
	if rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: doomedID}); !rep.OK || rep.Ledger != revoker.LedgerPending {
		t.Fatalf("revoking the doomed admin token: %s", raw)
	}
	if rep, raw := f.call(revoker.CommandRequest{Auth: doomed, Kind: "token", TokenID: s.t2.id}); rep.OK || rep.Code != revoker.CodeUnauthorized {
		t.Fatalf("admin token revoked during the outage: %s, want unauthorized", raw)
	}
	if rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: s.t2.id}); !rep.OK || rep.Ledger != revoker.LedgerPending {
		t.Fatalf("confirmed admin token during the outage: %s", raw)
	}
	start()
	natstest.WaitFor(t, 30*time.Second, func() error {
		if p := f.r.Pending(); len(p) != 0 {
			return fmt.Errorf("%d still pending", len(p))
		}
		return nil
	})
	if got := f.revocations(); len(got) != 2 || len(got[doomedID]) != 1 || len(got[s.t2.id]) != 1 {
		t.Fatalf("ledger revocations %v, want the doomed admin token's and t2's", got)
	}
}

// TestUnknownTokenDeniedAtOnce: a token the index does not know (yet) is
// broadcast before the revoker waits for its index, and the answer still
// says unknown; the change stays out of the heartbeats' pending list.
func TestUnknownTokenDeniedAtOnce(t *testing.T) {
	f := setup(t, nil)
	l := listen(t, f.env.NC)
	origin := f.r.Origin()
	id := "01a23c96-7882-7be1-86fc-fa330af5ad79"
	_, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: "token", TokenID: id, Actor: "test", Reason: "seen in a log"})
	if !errors.Is(err, revoker.ErrUnknownToken) {
		t.Fatalf("revoke of an id the ledger never had: %v, want ErrUnknownToken", err)
	}
	c := l.waitChange(origin, events.DenyKeyToken(id), false)
	var rec events.DenyRecord
	if err := json.Unmarshal(c.Value, &rec); err != nil || rec.TokenID != id || rec.Kind != events.RevokeToken {
		t.Fatalf("early change %s: %v", c.Value, err)
	}
	if n := len(f.r.Pending()); n != 0 {
		t.Fatalf("%d pending revocations, want none", n)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		_, hs := l.of(origin)
		for _, h := range hs {
			if h.Seq >= c.Seq && len(h.Pending) == 0 {
				return nil
			}
		}
		return fmt.Errorf("no heartbeat past seq %d without pending changes yet", c.Seq)
	})
}
