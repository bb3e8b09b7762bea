package revoker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// ledgerSet is the set of tokens of the revocation tests:
//
//	t1 acme/billing  kid1 issued 30m ago, lives 1h
//	t2 acme/billing  kid2 issued 10m ago, lives 2h
//	t3 acme/ledger   kid1 issued 2h ago,  lives 3h
//	t4 globex/web    kid1 issued 5m ago,  lives 1h30m
//	t5 acme/billing  kid1 issued 2h ago,  lived 1h (expired)
type ledgerSet struct{ t1, t2, t3, t4, t5 tok }

func issueSet(f *fixture) ledgerSet {
	s := ledgerSet{
		t1: f.issue("acme", "billing", "kid1", 30*time.Minute, time.Hour, false),
		t2: f.issue("acme", "billing", "kid2", 10*time.Minute, 2*time.Hour, false),
		t3: f.issue("acme", "ledger", "kid1", 2*time.Hour, 3*time.Hour, false),
		t4: f.issue("globex", "web", "kid1", 5*time.Minute, 90*time.Minute, false),
		t5: f.issue("acme", "billing", "kid1", 2*time.Hour, time.Hour, false),
	}
	f.waitKnown(s.t1, s.t2, s.t3, s.t4)
	return s
}

func ids(ts ...tok) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.id
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	if s == nil {
		s = []string{}
	}
	return s
}

// TestRevocationKinds: each kind of revocation publishes one ledger event
// per affected live token, writes the rule with a TTL of the longest life
// it can match, the ledger consumer compiles each event into a token entry
// with the token's remaining life, and revoking again changes nothing.
func TestRevocationKinds(t *testing.T) {
	before := time.Now().Add(-time.Hour).Truncate(time.Second)
	cases := []struct {
		name    string
		req     revoker.CommandRequest
		revoked func(s ledgerSet) []tok
		rule    string
		ruleExp func(s ledgerSet) time.Time
	}{
		{"token", revoker.CommandRequest{Kind: "token"}, func(s ledgerSet) []tok { return []tok{s.t1} }, "", nil},
		{"holder", revoker.CommandRequest{Kind: "holder", Tenant: "acme", Holder: "billing"},
			func(s ledgerSet) []tok { return []tok{s.t1, s.t2} }, "holder.acme.billing", func(s ledgerSet) time.Time { return s.t2.expiry }},
		{"key", revoker.CommandRequest{Kind: "key", KeyID: "kid1"},
			func(s ledgerSet) []tok { return []tok{s.t1, s.t3, s.t4} }, "kid.kid1", func(s ledgerSet) time.Time { return s.t4.expiry }},
		{"tenant", revoker.CommandRequest{Kind: "tenant", Tenant: "acme"},
			func(s ledgerSet) []tok { return []tok{s.t1, s.t2, s.t3} }, "tenant.acme", func(s ledgerSet) time.Time { return s.t2.expiry }},
		{"before", revoker.CommandRequest{Kind: "before", Tenant: "acme", Before: before},
			func(s ledgerSet) []tok { return []tok{s.t3} }, "before.acme", func(s ledgerSet) time.Time { return s.t3.expiry }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := setup(t, nil)
			s := issueSet(f)
			req := c.req
			if req.Kind == "token" {
				req.TokenID = s.t1.id
			}
			req.Reason = "leaked in a paste"
			req.IdempotencyKey = "first"
			rep, raw := f.call(req)
			want := c.revoked(s)
			if !rep.OK || !slices.Equal(sorted(rep.Revoked), ids(want...)) || len(rep.Already) != 0 {
				t.Fatalf("reply %s, want revoked %v", raw, ids(want...))
			}
			if c.rule == "" && len(rep.Rules) != 0 || c.rule != "" && !slices.Equal(rep.Rules, []string{c.rule}) {
				t.Fatalf("rules %v, want %q", rep.Rules, c.rule)
			}

			// One ledger event per revoked token, with who, why and until when.
			led := f.revocations()
			if len(led) != len(want) {
				t.Fatalf("ledger has revocations of %d tokens, want %d", len(led), len(want))
			}
			for _, w := range want {
				evs := led[w.id]
				if len(evs) != 1 {
					t.Fatalf("%d ledger events for %s", len(evs), w.id)
				}
				p := evs[0]
				if p.Kind != c.req.Kind || p.Actor != "cordon/admin" || p.Reason != "leaked in a paste" || !p.Expiry.Equal(w.expiry) ||
					p.Tenant != w.tenant || p.Holder != w.holder || p.KeyID != w.kid || p.AnomalyID != "" {
					t.Fatalf("ledger event %+v for %+v", p, w)
				}
			}

			// The ledger consumer compiles every event into a token entry.
			for _, w := range want {
				key := events.DenyKeyToken(w.id)
				natstest.WaitFor(t, 5*time.Second, func() error {
					if _, _, ok := f.deny(key); !ok {
						return fmt.Errorf("no denylist entry %s", key)
					}
					return nil
				})
				rec, ttl, _ := f.deny(key)
				checkTTL(t, key, ttl, w.expiry)
				if rec.TokenID != w.id || rec.Kind != c.req.Kind || !rec.Expiry.Equal(w.expiry) {
					t.Fatalf("%s: %+v", key, rec)
				}
			}
			if c.rule != "" {
				rec, ttl, ok := f.deny(c.rule)
				if !ok {
					t.Fatalf("no rule %s", c.rule)
				}
				checkTTL(t, c.rule, ttl, c.ruleExp(s))
				if rec.Kind != c.req.Kind || rec.Actor != "cordon/admin" || rec.Tenant != c.req.Tenant || rec.Holder != c.req.Holder ||
					rec.KeyID != c.req.KeyID || !rec.Before.Equal(c.req.Before) {
					t.Fatalf("rule %s: %+v", c.rule, rec)
				}
			}
			// Nothing else was denied: one entry per revoked token, plus the rule.
			wantKeys := []string{}
			for _, w := range want {
				wantKeys = append(wantKeys, events.DenyKeyToken(w.id))
			}
			if c.rule != "" {
				wantKeys = append(wantKeys, c.rule)
			}
			slices.Sort(wantKeys)
			if got := f.denyKeys(); !slices.Equal(got, wantKeys) {
				t.Fatalf("denylist keys %v, want %v", got, wantKeys)
			}

			// Revoking twice is harmless: no new ledger event, same rule.
			req.IdempotencyKey = "second"
			rep2, raw2 := f.call(req)
			if !rep2.OK || len(rep2.Revoked) != 0 || !slices.Equal(sorted(rep2.Already), ids(want...)) || !slices.Equal(rep2.Rules, rep.Rules) {
				t.Fatalf("second revocation: %s", raw2)
			}
			if led2 := f.revocations(); len(led2) != len(want) {
				t.Fatalf("second revocation added ledger events: %d tokens", len(led2))
			}
			for _, w := range want {
				if n := len(f.revocations()[w.id]); n != 1 {
					t.Fatalf("%d ledger events for %s after revoking twice", n, w.id)
				}
			}
		})
	}
}

// TestRuleForUnknownTokens: a broad revocation matching no known token still
// writes its rule, living the configured maximum token life; a later
// "before" time extends the rule in force, an earlier one leaves it.
func TestRuleForUnknownTokens(t *testing.T) {
	f := setup(t, nil)
	rep, raw := f.call(revoker.CommandRequest{Kind: "holder", Tenant: "initech", Holder: "printer"})
	if !rep.OK || len(rep.Revoked) != 0 || !slices.Equal(rep.Rules, []string{"holder.initech.printer"}) {
		t.Fatalf("reply %s", raw)
	}
	_, ttl, _ := f.deny("holder.initech.printer")
	checkTTL(t, "holder rule", ttl, time.Now().Add(maxTTL))

	t1 := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	if rep, raw := f.call(revoker.CommandRequest{Kind: "before", Tenant: "initech", Before: t1}); !rep.OK {
		t.Fatalf("reply %s", raw)
	}
	rec, ttl, _ := f.deny("before.initech")
	checkTTL(t, "before rule", ttl, t1.Add(maxTTL))
	if !rec.Before.Equal(t1) {
		t.Fatalf("before %v, want %v", rec.Before, t1)
	}
	// An earlier time is covered by the rule in force.
	if rep, raw := f.call(revoker.CommandRequest{Kind: "before", Tenant: "initech", Before: t1.Add(-time.Hour)}); !rep.OK {
		t.Fatalf("reply %s", raw)
	}
	if rec, _, _ := f.deny("before.initech"); !rec.Before.Equal(t1) {
		t.Fatalf("earlier time replaced the rule: %v", rec.Before)
	}
	// A later one extends it.
	t2 := time.Now().Truncate(time.Second)
	if rep, raw := f.call(revoker.CommandRequest{Kind: "before", Tenant: "initech", Before: t2}); !rep.OK {
		t.Fatalf("reply %s", raw)
	}
	rec, ttl, _ = f.deny("before.initech")
	if !rec.Before.Equal(t2) {
		t.Fatalf("before %v, want %v", rec.Before, t2)
	}
	checkTTL(t, "extended before rule", ttl, t2.Add(maxTTL))
	// A "before" long ago can match no live token: no rule at all.
	rep, raw = f.call(revoker.CommandRequest{Kind: "before", Tenant: "hooli", Before: time.Now().Add(-3 * maxTTL)})
	if !rep.OK || len(rep.Rules) != 0 {
		t.Fatalf("reply %s", raw)
	}
}

// TestIdempotentReplay: a replayed idempotency key returns the first reply
// without acting again; reusing it for another request is a conflict.
func TestIdempotentReplay(t *testing.T) {
	f := setup(t, nil)
	a := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(a)
	req := revoker.CommandRequest{Kind: "holder", Tenant: "acme", Holder: "billing", IdempotencyKey: "inc-42", Reason: "incident 42"}
	rep, raw := f.call(req)
	if !rep.OK || !slices.Equal(rep.Revoked, []string{a.id}) {
		t.Fatalf("reply %s", raw)
	}
	// A token issued since would be revoked by a new request, not by a replay.
	b := f.issue("acme", "billing", "kid1", 0, time.Hour, false)
	f.waitKnown(b)
	_, raw2 := f.call(req)
	if string(raw2) != string(raw) {
		t.Fatalf("replay answered\n%s\nfirst reply was\n%s", raw2, raw)
	}
	if led := f.revocations(); len(led) != 1 {
		t.Fatalf("replay acted: %d tokens revoked on the ledger", len(led))
	}
	// (Another auth token, even a refreshed one of the same holder, is
	// another caller: TestIdempotencyScopedToToken.)
	req.Reason = "another incident"
	rep, raw = f.call(req)
	if rep.OK || rep.Code != revoker.CodeConflict {
		t.Fatalf("reused key for another request: %s", raw)
	}
	req.IdempotencyKey = "inc-43"
	rep, raw = f.call(req)
	if !rep.OK || !slices.Equal(rep.Revoked, []string{b.id}) || !slices.Equal(rep.Already, []string{a.id}) {
		t.Fatalf("new key: %s", raw)
	}
}

// TestCallers: only a valid, live, unrevoked token with audience cordon and
// scope cordon:revoke (or cordon:*) may revoke; the auth token never
// appears in the logs.
func TestCallers(t *testing.T) {
	f := setup(t, nil)
	target := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(target)
	other, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	admin := token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}}
	with := func(mut func(c *token.Claims)) string {
		c := admin
		mut(&c)
		return f.mint(c)
	}
	revokedAdmin := with(func(c *token.Claims) { c.Holder = "old-admin" })
	parsed, _ := token.Parse(revokedAdmin)
	if rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: parsed.Claims.ID, Tenant: "cordon", Holder: "old-admin"}); !rep.OK {
		t.Fatalf("revoke the old admin token: %s", raw)
	}
	var used []string
	cases := []struct {
		name, auth, code string
	}{
		{"missing", "", revoker.CodeUnauthorized},
		{"garbage", "cordon_nope", revoker.CodeUnauthorized},
		{"unknown key", f.mintWith(other, admin), revoker.CodeUnauthorized},
		{"expired", with(func(c *token.Claims) {
			c.IssuedAt, c.NotBefore, c.Expiry = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}), revoker.CodeUnauthorized},
		{"not yet valid", with(func(c *token.Claims) {
			c.IssuedAt, c.NotBefore, c.Expiry = time.Now().Unix(), time.Now().Add(time.Hour).Unix(), time.Now().Add(2*time.Hour).Unix()
		}), revoker.CodeUnauthorized},
		{"revoked", revokedAdmin, revoker.CodeUnauthorized},
		{"wrong audience", with(func(c *token.Claims) { c.Audience = []string{"payments"} }), revoker.CodeForbidden},
		{"wildcard audience", with(func(c *token.Claims) { c.Audience = []string{"*"} }), revoker.CodeForbidden},
		{"read scope", with(func(c *token.Claims) { c.Scopes = []string{"cordon:read"} }), revoker.CodeForbidden},
		{"other resource", with(func(c *token.Claims) { c.Scopes = []string{"invoices:*"} }), revoker.CodeForbidden},
		{"cordon:*", with(func(c *token.Claims) { c.Scopes = []string{"cordon:*"} }), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.auth != "" {
				used = append(used, c.auth)
			}
			var rep revoker.Reply
			var raw []byte
			if c.auth == "" {
				rep, raw = f.callRaw(`{"kind":"token","token_id":"` + target.id + `","reason":"x"}`)
			} else {
				rep, raw = f.call(revoker.CommandRequest{Auth: c.auth, Kind: "token", TokenID: target.id})
			}
			if c.code == "" {
				if !rep.OK {
					t.Fatalf("refused: %s", raw)
				}
				return
			}
			if rep.OK || rep.Code != c.code {
				t.Fatalf("got %s, want code %s", raw, c.code)
			}
			if strings.Contains(string(raw), "cordon_") && c.auth != "cordon_nope" {
				t.Fatalf("reply echoes the token: %s", raw)
			}
		})
	}
	if led := f.revocations(); len(led[target.id]) != 1 {
		t.Fatalf("refused callers revoked: %v", led)
	}
	logs := f.logs.String()
	for _, a := range append(used, f.admin) {
		if strings.Contains(logs, a) {
			t.Fatal("an auth token appears in the logs")
		}
	}
	if !strings.Contains(logs, "revoke request refused") {
		t.Fatal("refusals are not logged")
	}
	if st := f.r.Stats(); st.Requests[revoker.CodeForbidden] != 4 || st.Requests[revoker.CodeUnauthorized] != 6 {
		t.Fatalf("request counters %v", st.Requests)
	}
}

func (f *fixture) callRaw(body string) (revoker.Reply, []byte) {
	f.t.Helper()
	m, err := f.env.NC.Request(events.SubjectCmdRevoke, []byte(body), 10*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	var rep revoker.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		f.t.Fatalf("%v: %s", err, m.Data)
	}
	return rep, m.Data
}

func TestBadRequests(t *testing.T) {
	f := setup(t, nil)
	a := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(a)
	cases := []struct {
		name string
		req  revoker.CommandRequest
		code string
	}{
		{"no kind", revoker.CommandRequest{TokenID: a.id}, revoker.CodeBadRequest},
		{"bad kind", revoker.CommandRequest{Kind: "everything"}, revoker.CodeBadRequest},
		{"holder without tenant", revoker.CommandRequest{Kind: "holder", Holder: "billing"}, revoker.CodeBadRequest},
		{"field of another kind", revoker.CommandRequest{Kind: "tenant", Tenant: "acme", KeyID: "kid1"}, revoker.CodeBadRequest},
		{"subject injection", revoker.CommandRequest{Kind: "tenant", Tenant: "acme.>"}, revoker.CodeBadRequest},
		{"before in the future", revoker.CommandRequest{Kind: "before", Tenant: "acme", Before: time.Now().Add(time.Hour)}, revoker.CodeBadRequest},
		{"before without time", revoker.CommandRequest{Kind: "before", Tenant: "acme"}, revoker.CodeBadRequest},
		{"unknown token", revoker.CommandRequest{Kind: "token", TokenID: newID(t)}, revoker.CodeNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, raw := f.call(c.req)
			if rep.OK || rep.Code != c.code || rep.Error == "" {
				t.Fatalf("got %s, want code %s", raw, c.code)
			}
		})
	}
	for _, body := range []string{`{`, `{"auth":"x","kind":"token","extra":1}`, `[]`} {
		if rep, raw := f.callRaw(body); rep.OK || rep.Code != revoker.CodeBadRequest {
			t.Fatalf("%s: %s", body, raw)
		}
	}
	// Without a reason nothing is revoked either.
	rep, raw := f.callRaw(fmt.Sprintf(`{"auth":%q,"kind":"token","token_id":%q}`, f.admin, a.id))
	if rep.OK || rep.Code != revoker.CodeBadRequest || !strings.Contains(rep.Error, "reason") {
		t.Fatalf("no reason: %s", raw)
	}
	if len(f.revocations()) != 0 {
		t.Fatal("a bad request revoked something")
	}
}

// TestLedgerCompile: revocations by others (the issuer after a rotation)
// are compiled too; expired ones get no entry; a duplicate is a no-op; a
// poison message goes to the dead-letter subject and the consumer goes on.
func TestLedgerCompile(t *testing.T) {
	f := setup(t, nil)
	exp := time.Now().Add(45 * time.Minute).Truncate(time.Second)
	rotated := &events.TokenRevoked{TokenID: newID(t), Tenant: "acme", Holder: "billing", Kind: events.RevokeToken,
		Actor: "issuer", Reason: "rotated", Expiry: exp}
	f.publish(time.Now(), rotated)
	// Poison: not JSON, an unknown type, and a payload of the wrong type on the ledger.
	for _, bad := range []struct{ subject, body string }{
		{"cordon.token.revoked.acme.x", "{not json"},
		{"cordon.token.revoked.acme.y", `{"id":"0194a000-0000-7000-8000-000000000001","type":"token.stolen","time":"2026-01-01T00:00:00Z","source":"x","v":1,"data":{}}`},
	} {
		if _, err := f.env.JS.Publish(f.ctx(), bad.subject, []byte(bad.body)); err != nil {
			t.Fatal(err)
		}
	}
	usage := &events.UsageDecided{Enforcer: "e", Service: "s", SourceIP: "10.0.0.1", Method: "GET", Route: "/", Decision: "allow", Reason: "ok"}
	ue, _ := events.New("x", time.Now(), usage)
	ub, _ := events.Encode(ue)
	if _, err := f.env.JS.Publish(f.ctx(), "cordon.token.revoked.acme.z", ub); err != nil {
		t.Fatal(err)
	}
	stale := &events.TokenRevoked{TokenID: newID(t), Tenant: "acme", Holder: "billing", Kind: events.RevokeToken,
		Actor: "issuer", Reason: "rotated", Expiry: time.Now().Add(-time.Minute)}
	f.publish(time.Now(), stale)
	again := *rotated
	again.Reason = "rotated, said twice"
	f.publish(time.Now(), &again)
	after := &events.TokenRevoked{TokenID: newID(t), Tenant: "acme", Holder: "web", Kind: events.RevokeHolder,
		Actor: "cordon/admin", Reason: "after the poison", Expiry: exp}
	f.publish(time.Now(), after)

	natstest.WaitFor(t, 5*time.Second, func() error {
		if _, _, ok := f.deny(events.DenyKeyToken(after.TokenID)); !ok {
			return fmt.Errorf("the consumer did not get past the poison")
		}
		return nil
	})
	rec, ttl, ok := f.deny(events.DenyKeyToken(rotated.TokenID))
	if !ok || rec.Reason != "rotated" || rec.Actor != "issuer" {
		t.Fatalf("rotated token entry: %+v %v (the duplicate must not replace the first)", rec, ok)
	}
	checkTTL(t, "rotated", ttl, exp)
	if _, _, ok := f.deny(events.DenyKeyToken(stale.TokenID)); ok {
		t.Fatal("an expired token got a denylist entry")
	}
	dead := deadLetters(t, f.env.JS)
	if len(dead) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dead))
	}
	wantReasons := []string{"malformed", "unknown event type", "unexpected event type"}
	for i, m := range dead {
		if m.Header.Get(events.HeaderDeadSubject) == "" || !strings.Contains(m.Header.Get(events.HeaderDeadReason), wantReasons[i]) {
			t.Fatalf("dead letter %d: headers %v", i, m.Header)
		}
	}
	if string(dead[0].Data) != "{not json" || dead[0].Header.Get(events.HeaderDeadSubject) != "cordon.token.revoked.acme.x" {
		t.Fatalf("dead letter lost the original: %q %v", dead[0].Data, dead[0].Header)
	}
	// Everything was acknowledged: nothing pending, nothing redelivered.
	natstest.WaitFor(t, 5*time.Second, func() error {
		c, err := f.env.JS.Consumer(f.ctx(), events.StreamTokens, "revoker-tokens")
		if err != nil {
			return err
		}
		info, err := c.Info(f.ctx())
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("ack pending %d, pending %d, redelivered %d", info.NumAckPending, info.NumPending, info.NumRedelivered)
		}
		return nil
	})
	if st := f.r.Stats(); st.DeadLetters != 3 || st.DenyWrites != 2 || st.DenySkipped != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRestartRebuildsIndex: a new revoker replays the ledger into its token
// index, so bulk revocations still find tokens issued before it started.
func TestRestartRebuildsIndex(t *testing.T) {
	f := setup(t, nil)
	a := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	b := f.issue("acme", "billing", "kid1", 3*maxTTL, time.Hour, false) // beyond the replay window, long expired
	f.waitKnown(a)
	f.r.Close()
	f.start()
	if _, ok := f.r.Token(a.id); !ok {
		t.Fatal("a new revoker does not know a token issued before it started")
	}
	if _, ok := f.r.Token(b.id); ok {
		t.Fatal("an expired token is indexed")
	}
	rep, raw := f.call(revoker.CommandRequest{Kind: "holder", Tenant: "acme", Holder: "billing"})
	if !rep.OK || !slices.Equal(rep.Revoked, []string{a.id}) {
		t.Fatalf("reply %s", raw)
	}
}

// TestGoAPI: the same revocations from Go, including a token the revoker
// has not seen issued (given its tenant and holder).
func TestGoAPI(t *testing.T) {
	f := setup(t, nil)
	id := newID(t)
	_, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: events.RevokeToken, TokenID: id, Actor: "ops", Reason: "r"})
	if err == nil || !strings.Contains(err.Error(), "unknown token") {
		t.Fatalf("unknown token: %v", err)
	}
	res, err := f.r.Revoke(f.ctx(), revoker.Request{Kind: events.RevokeToken, TokenID: id, Tenant: "acme", Holder: "billing", Actor: "ops", Reason: "r"})
	if err != nil || !slices.Equal(res.Revoked, []string{id}) {
		t.Fatalf("%+v %v", res, err)
	}
	_, ttl, ok := f.deny(events.DenyKeyToken(id))
	if !ok {
		t.Fatal("no entry: the token is denied at once, not when the ledger consumer catches up")
	}
	checkTTL(t, "unknown token", ttl, time.Now().Add(maxTTL))
}
