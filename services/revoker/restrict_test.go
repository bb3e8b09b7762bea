package revoker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/revoker"
)

const graduatedPolicy = `
rules:
  - name: prove-it
    min_risk: 0.75
    action: step_up
    for: 30m
  - name: quarantine
    detectors: [new_network]
    action: narrow
    for: 2h
  - name: trial
    detectors: [odd_hours]
    action: shadow
    would: narrow
`

// riskyAnomaly publishes an anomaly with a risk score and the holder's
// known networks in its evidence, as the auditor's detectors do.
func (f *fixture) riskyAnomaly(t tok, id, detector string, risk float64, known string) {
	f.t.Helper()
	details := map[string]string{}
	if known != "" {
		details["known_networks"] = known
	}
	at := time.Now()
	f.publish(at, &events.AnomalyDetected{AnomalyID: id, Detector: detector, Severity: events.SeverityHigh, TokenID: t.id,
		Tenant: t.tenant, Holder: t.holder, EventID: "usage-" + id, EventTime: at, SourceIP: "203.0.113.9", Risk: risk,
		Evidence: events.Evidence{Seen: "request from 203.0.113.9", Baseline: "10.20.0.0/16", Details: details}})
}

// restrictions reads every TokenRestricted on the ledger, by token id.
func (f *fixture) restrictions() map[string][]*events.TokenRestricted {
	f.t.Helper()
	out := map[string][]*events.TokenRestricted{}
	for _, e := range f.ledger(events.SubjectTokenPrefix + "restricted.>") {
		p := e.Data.(*events.TokenRestricted)
		out[p.TokenID] = append(out[p.TokenID], p)
	}
	return out
}

// TestGraduatedResponse: the risk score and the detector choose the step.
// A new network quarantines the token to the known networks of the
// evidence and its read scopes, for the rule's time; without known
// networks (neither evidence nor claims) the narrow is escalated to a
// step-up, never weakened; a high risk steps up; a shadow rule records what
// it would do and changes nothing; a repeated anomaly does not rewrite the
// restriction or the ledger. Every step is on the ledger with its rule,
// anomaly and actor, and on-call is told what was done.
func TestGraduatedResponse(t *testing.T) {
	hook := newReceiver(t, 0)
	f := setup(t, func(o *revoker.Options) {
		o.Policy = policy(t, graduatedPolicy)
		sink, err := alert.NewWebhook(alert.WebhookConfig{URL: hook.srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		o.Sinks = []alert.Sink{sink}
	})
	narrow := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	bare := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	risky := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	trial := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(narrow, bare, risky, trial)

	f.riskyAnomaly(narrow, "an-narrow", "new_network", 0.5, "10.20.0.0/16,192.0.2.0/24")
	f.riskyAnomaly(bare, "an-bare", "new_network", 0.5, "")
	f.riskyAnomaly(risky, "an-risky", "new_network", 0.8, "10.20.0.0/16")
	f.riskyAnomaly(trial, "an-trial", "odd_hours", 0.3, "10.20.0.0/16")
	recs := f.waitResponses(4)
	f.riskyAnomaly(narrow, "an-narrow-again", "new_network", 0.5, "10.20.0.0/16,192.0.2.0/24")
	recs = f.waitResponses(5)

	outcome := map[string]alert.Outcome{}
	for _, r := range recs {
		outcome[r.AnomalyID] = r.Outcome
	}
	for id, want := range map[string]alert.Outcome{"an-narrow": alert.OutcomeQuarantined, "an-bare": alert.OutcomeSteppedUp,
		"an-risky": alert.OutcomeSteppedUp, "an-trial": alert.OutcomeAlertOnly, "an-narrow-again": alert.OutcomeQuarantined} {
		if outcome[id] != want {
			t.Errorf("%s: outcome %q, want %q", id, outcome[id], want)
		}
	}

	// The quarantine: the evidence's networks, the token's read scopes,
	// until the rule's time (capped by the token's expiry: an hour).
	rec, ttl, ok := f.deny(events.DenyKeyNarrow(narrow.id))
	if !ok || rec.Step != events.StepNarrow || !slices.Equal(rec.Networks, []string{"10.20.0.0/16", "192.0.2.0/24"}) ||
		!slices.Equal(rec.Scopes, []string{"invoices:read"}) || !rec.Until.Equal(narrow.expiry) || rec.Actor != "revoker/test" {
		t.Fatalf("quarantine entry %+v (present %v)", rec, ok)
	}
	checkTTL(t, "quarantine", ttl, narrow.expiry)
	if _, _, ok := f.deny(events.DenyKeyToken(narrow.id)); ok {
		t.Fatal("a quarantined token was revoked")
	}
	for _, tk := range []tok{bare, risky} {
		rec, _, ok := f.deny(events.DenyKeyStepUp(tk.id))
		if !ok || rec.Step != events.StepStepUp || len(rec.Networks) != 0 {
			t.Fatalf("step-up entry of %s: %+v (present %v)", tk.id, rec, ok)
		}
		if _, _, ok := f.deny(events.DenyKeyNarrow(tk.id)); ok {
			t.Fatalf("%s has a quarantine entry too", tk.id)
		}
	}
	if _, _, ok := f.deny(events.DenyKeyNarrow(trial.id)); ok {
		t.Fatal("a shadow rule quarantined the token")
	}

	led := f.restrictions()
	check := func(tk tok, step, would, rule, anomaly string) {
		t.Helper()
		if len(led[tk.id]) != 1 {
			t.Fatalf("%d restriction events for %s, want 1: %+v", len(led[tk.id]), tk.id, led[tk.id])
		}
		p := led[tk.id][0]
		if p.Step != step || p.Would != would || p.Rule != rule || p.AnomalyID != anomaly || p.Actor != "revoker/test" || p.Tenant != "acme" {
			t.Fatalf("restriction event of %s: %+v", tk.id, p)
		}
	}
	check(narrow, events.StepNarrow, "", "quarantine", "an-narrow")
	check(bare, events.StepStepUp, "", "quarantine", "an-bare")
	check(risky, events.StepStepUp, "", "prove-it", "an-risky")
	check(trial, events.StepShadow, events.StepNarrow, "trial", "an-trial")
	if p := led[bare.id][0]; !strings.Contains(p.Reason, "new_network") {
		t.Errorf("reason %q", p.Reason)
	}
	// The ledger consumer has taken every restriction event, none as poison.
	natstest.WaitFor(t, 30*time.Second, func() error {
		d := events.RevokerTokensDurable(events.DurableRevoker)
		c, err := f.env.JS.Consumer(f.ctx(), d.Stream, d.Name)
		if err != nil {
			return err
		}
		info, err := c.Info(f.ctx())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("ledger consumer: %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	if st := f.r.Stats(); st.Restricted != 3 || st.DeadLetters != 0 {
		t.Errorf("stats: %d restricted, want 3; %d dead letters (the ledger consumer must take its own restriction events)", st.Restricted, st.DeadLetters)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		as := webhookAlerts(t, hook)
		if len(as[narrow.id]) == 0 || len(as[bare.id]) == 0 {
			return fmt.Errorf("alerts %v", as)
		}
		if a := as[narrow.id][0]; a.Labels["outcome"] != string(alert.OutcomeQuarantined) || !strings.Contains(a.Annotations["action"], "192.0.2.0/24") {
			return fmt.Errorf("quarantine alert %+v", a)
		}
		if a := as[bare.id][0]; !strings.Contains(a.Annotations["action"], "no known networks") {
			return fmt.Errorf("escalated alert %+v", a)
		}
		return nil
	})
}

// TestRestrictCommands: an admin narrows and steps up tokens by hand over
// NATS and lifts them again; each step and release is on the ledger with
// the admin as actor. Bad requests — unknown fields, no reason, a step
// that is not one, too long, networks that do not parse, a token without
// networks narrowed without any, an unknown token, no auth — are refused
// with a reason and change nothing.
func TestRestrictCommands(t *testing.T) {
	f := setup(t, nil)
	a := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	b := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	restrict := func(req revoker.RestrictCommand) revoker.RestrictReply {
		t.Helper()
		if req.Auth == "" {
			req.Auth = f.admin
		}
		rep, err := revoker.CallRestrict(ctx, f.env.NC, req)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	release := func(id string) revoker.RestrictReply {
		t.Helper()
		rep, err := revoker.CallRelease(ctx, f.env.NC, revoker.ReleaseCommand{Auth: f.admin, TokenID: id, Reason: "false alarm"})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	for _, c := range []struct {
		name string
		req  revoker.RestrictCommand
		code string
		want string
	}{
		{"no reason", revoker.RestrictCommand{TokenID: a.id, Step: "narrow", Networks: []string{"10.0.0.0/8"}}, revoker.CodeBadRequest, "reason is required"},
		{"bad step", revoker.RestrictCommand{TokenID: a.id, Step: "revoke", Reason: "x"}, revoker.CodeBadRequest, "not one of narrow, step_up"},
		{"too long", revoker.RestrictCommand{TokenID: a.id, Step: "step_up", For: "200h", Reason: "x"}, revoker.CodeBadRequest, "at most 168h"},
		{"bad duration", revoker.RestrictCommand{TokenID: a.id, Step: "step_up", For: "soon", Reason: "x"}, revoker.CodeBadRequest, `for "soon"`},
		{"bad network", revoker.RestrictCommand{TokenID: a.id, Step: "narrow", Networks: []string{"10.0.0.0/33"}, Reason: "x"}, revoker.CodeBadRequest, "neither a CIDR prefix nor an address"},
		{"no networks", revoker.RestrictCommand{TokenID: a.id, Step: "narrow", Reason: "x"}, revoker.CodeBadRequest, "no known networks"},
		{"networks on step-up", revoker.RestrictCommand{TokenID: a.id, Step: "step_up", Networks: []string{"10.0.0.0/8"}, Reason: "x"}, revoker.CodeBadRequest, "narrow only"},
		{"unknown token", revoker.RestrictCommand{TokenID: newID(t), Step: "step_up", Reason: "x"}, revoker.CodeNotFound, "no live token"},
		{"subject injection", revoker.RestrictCommand{TokenID: a.id + ".>", Step: "step_up", Reason: "x"}, revoker.CodeBadRequest, "token_id"},
		{"no auth", revoker.RestrictCommand{Auth: "cordon_x", TokenID: a.id, Step: "step_up", Reason: "x"}, revoker.CodeUnauthorized, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := restrict(c.req)
			if rep.OK || rep.Code != c.code || !strings.Contains(rep.Error, c.want) {
				t.Fatalf("reply %+v, want code %s with %q", rep, c.code, c.want)
			}
		})
	}
	if keys := f.denyKeys(); len(keys) != 0 {
		t.Fatalf("refused requests left denylist entries %v", keys)
	}
	// Unknown fields are refused too (a typo must not pass silently).
	m, err := f.env.NC.RequestWithContext(ctx, events.SubjectCmdRestrict, []byte(`{"auth":"`+f.admin+`","token_id":"`+a.id+`","step":"step_up","reason":"x","fro":"2h"}`))
	if err != nil || !strings.Contains(string(m.Data), "unknown field") {
		t.Fatalf("unknown field: %v %s", err, m.Data)
	}

	rep := restrict(revoker.RestrictCommand{TokenID: a.id, Step: "narrow", Networks: []string{"10.20.0.7", "10.20.0.0/16", "2001:db8::/48"}, For: "20m", Reason: "leak suspected"})
	if !rep.OK || rep.Step != events.StepNarrow || !slices.Equal(rep.Networks, []string{"10.20.0.7/32", "10.20.0.0/16", "2001:db8::/48"}) ||
		!slices.Equal(rep.Scopes, []string{"invoices:read"}) || time.Until(rep.Until) > 20*time.Minute || time.Until(rep.Until) < 19*time.Minute {
		t.Fatalf("narrow reply %+v", rep)
	}
	if rep := restrict(revoker.RestrictCommand{TokenID: a.id, Step: "narrow", Networks: []string{"10.20.0.7", "10.20.0.0/16", "2001:db8::/48"}, For: "10m", Reason: "again"}); !rep.OK || rep.Already != "restricted" {
		t.Fatalf("a shorter repeat: %+v", rep)
	}
	if rep := restrict(revoker.RestrictCommand{TokenID: b.id, Step: "step_up", Reason: "prove it"}); !rep.OK || rep.Step != events.StepStepUp {
		t.Fatalf("step-up reply %+v", rep)
	}
	led := f.restrictions()
	if len(led[a.id]) != 1 || led[a.id][0].Actor != "cordon/admin" || len(led[b.id]) != 1 {
		t.Fatalf("ledger %+v", led)
	}
	if rep := release(a.id); !rep.OK || !slices.Equal(rep.Released, []string{events.StepNarrow}) {
		t.Fatalf("release %+v", rep)
	}
	if rep := release(a.id); rep.OK || rep.Code != revoker.CodeNotFound {
		t.Fatalf("second release %+v", rep)
	}
	if _, _, ok := f.deny(events.DenyKeyNarrow(a.id)); ok {
		t.Fatal("the quarantine is still on the denylist after its release")
	}
	var released []*events.TokenReleased
	for _, e := range f.ledger(events.SubjectTokenPrefix + "released.>") {
		released = append(released, e.Data.(*events.TokenReleased))
	}
	if len(released) != 1 || released[0].TokenID != a.id || released[0].Step != events.StepNarrow || released[0].Actor != "cordon/admin" ||
		released[0].Reason != "false alarm" {
		t.Fatalf("release events %+v", released)
	}
	// A revoked token is not restricted: it is dead already.
	if r, _ := f.call(revoker.CommandRequest{Kind: events.RevokeToken, TokenID: b.id}); !r.OK {
		t.Fatalf("revoke %+v", r)
	}
	if rep := restrict(revoker.RestrictCommand{TokenID: b.id, Step: "narrow", Networks: []string{"10.0.0.0/8"}, Reason: "x"}); !rep.OK || rep.Already != "revoked" {
		t.Fatalf("restricting a revoked token: %+v", rep)
	}
}

// TestRestrictWhileJetStreamIsDown: containment does not wait for
// JetStream. A restriction asked for while it is off is broadcast to the
// enforcers at once, and the caller is told that the bucket and the ledger
// did not take it (so that an automatic step is retried).
func TestRestrictWhileJetStreamIsDown(t *testing.T) {
	f := setup(t, nil)
	l := listen(t, f.env.NC)
	tk := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(tk)
	start := stopJetStream(t, f.env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := f.r.Restrict(ctx, revoker.RestrictRequest{TokenID: tk.id, Step: events.StepStepUp, For: time.Hour, Actor: "test", Reason: "outage"})
	if err == nil {
		t.Fatal("a restriction JetStream never took was reported done")
	}
	c := l.waitChange(f.r.Origin(), events.DenyKeyStepUp(tk.id), false)
	var rec events.DenyRecord
	if jerr := json.Unmarshal(c.Value, &rec); jerr != nil || rec.Step != events.StepStepUp || rec.TokenID != tk.id {
		t.Fatalf("broadcast record %s (%v)", c.Value, jerr)
	}
	start()
	// Asked again once JetStream is back, it is written and recorded.
	natstest.WaitFor(t, 30*time.Second, func() error {
		_, err := f.r.Restrict(ctx, revoker.RestrictRequest{TokenID: tk.id, Step: events.StepStepUp, For: time.Hour, Actor: "test", Reason: "outage"})
		return err
	})
	if _, _, ok := f.deny(events.DenyKeyStepUp(tk.id)); !ok {
		t.Fatal("no step-up entry after JetStream came back")
	}
	if n := len(f.restrictions()[tk.id]); n != 1 {
		t.Fatalf("%d restriction events, want 1", n)
	}
}
