package revoker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/services/revoker"
)

const testPolicy = `
rules:
  - name: exfiltration
    all_of: [new_network, odd_hours]
    within: 10m
    action: revoke
  - name: volume-observe
    detectors: [volume_spike]
    action: revoke
    dry_run: true
  - name: critical
    min_severity: critical
    action: revoke
`

func policy(t *testing.T, src string) *response.Policy {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	p, err := response.Decode("test-policy.yaml", doc.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) anomaly(t tok, id, detector, severity string, at time.Time) {
	f.t.Helper()
	f.publish(at, &events.AnomalyDetected{AnomalyID: id, Detector: detector, Severity: severity, TokenID: t.id,
		Tenant: t.tenant, Holder: t.holder, EventID: "usage-" + id, EventTime: at, SourceIP: "203.0.113.9",
		Evidence: events.Evidence{Seen: "request from 203.0.113.9 at 03:12", Baseline: "10.20.0.0/16, weekdays 08-19h"}})
}

func (f *fixture) waitResponses(n int) []revoker.ResponseRecord {
	f.t.Helper()
	natstest.WaitFor(f.t, 10*time.Second, func() error {
		if got := len(f.r.Responses()); got < n {
			return fmt.Errorf("%d anomaly responses, want %d", got, n)
		}
		return nil
	})
	return f.r.Responses()
}

// webhookAlerts decodes what an Alertmanager-format receiver got, by token.
func webhookAlerts(t *testing.T, r *receiver) map[string][]alert.WebhookAlert {
	t.Helper()
	bodies, _ := r.got()
	out := map[string][]alert.WebhookAlert{}
	for _, b := range bodies {
		var m alert.WebhookMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		if m.Version != "4" || len(m.Alerts) != 1 {
			t.Fatalf("not an Alertmanager webhook payload: %s", b)
		}
		a := m.Alerts[0]
		out[a.Labels["token_id"]] = append(out[a.Labels["token_id"]], a)
	}
	return out
}

func statuses(as []alert.WebhookAlert) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Status+":"+a.Labels["outcome"]+":"+a.Labels["severity"])
	}
	return strings.Join(s, " ")
}

// TestAnomalyResponse drives the revoker with anomalies and checks what it
// revokes, what it only records (dry run), that break-glass tokens are
// paged and never revoked, the combination window, and the alerts — to an
// Alertmanager-format receiver that fails its first attempts and to a
// PagerDuty-format one — including the resolve after a revocation.
func TestAnomalyResponse(t *testing.T) {
	am := newReceiver(t, 2)
	pd := newReceiver(t, 0)
	f := setup(t, func(o *revoker.Options) {
		o.Policy = policy(t, testPolicy)
		amSink, err := alert.NewWebhook(alert.WebhookConfig{URL: am.srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		pdSink, err := alert.NewPagerDuty(alert.PagerDutyConfig{URL: pd.srv.URL, RoutingKey: "routing-key-secret-0123456789abc"})
		if err != nil {
			t.Fatal(err)
		}
		o.Sinks = []alert.Sink{amSink, pdSink}
		o.Alerts = alert.Options{Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	})
	crit := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	dry := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	glass := f.issue("acme", "oncall", "kid1", time.Minute, time.Hour, true)
	alertOnly := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	combo := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(crit, dry, glass, alertOnly, combo)
	unseen := tok{id: newID(t), tenant: "acme", holder: "legacy"} // never on the ledger

	now := time.Now()
	f.anomaly(crit, "an-crit", "scope_probing", "critical", now)
	f.anomaly(dry, "an-dry", "volume_spike", "high", now)
	f.anomaly(glass, "an-glass", "new_network", "critical", now)
	f.anomaly(glass, "an-glass-2", "odd_hours", "low", now)
	f.anomaly(alertOnly, "an-alert", "odd_hours", "medium", now)
	f.anomaly(combo, "an-combo-1", "new_network", "low", now)
	f.anomaly(combo, "an-combo-2", "odd_hours", "low", now.Add(5*time.Minute))
	f.anomaly(unseen, "an-unseen", "use_after_revoke", "critical", now)
	// Poison on the anomaly stream must not stop the consumer.
	if _, err := f.env.JS.Publish(f.ctx(), "cordon.anomaly.high.acme.x", []byte(`{"bad":`)); err != nil {
		t.Fatal(err)
	}
	f.anomaly(unseen, "an-unseen-2", "use_after_revoke", "high", now.Add(time.Second))

	recs := f.waitResponses(9)
	got := map[string]revoker.ResponseRecord{}
	for _, r := range recs {
		got[r.AnomalyID] = r
	}
	want := map[string]struct {
		decision response.Outcome
		outcome  alert.Outcome
		rule     string
	}{
		"an-crit":     {response.OutcomeRevoke, alert.OutcomeRevoked, "critical"},
		"an-dry":      {response.OutcomeDryRun, alert.OutcomeDryRun, "volume-observe"},
		"an-glass":    {response.OutcomeBreakGlass, alert.OutcomeBreakGlass, "critical"},
		"an-glass-2":  {response.OutcomeBreakGlass, alert.OutcomeBreakGlass, "exfiltration"}, // a combination, still never revoked
		"an-alert":    {response.OutcomeAlert, alert.OutcomeAlertOnly, ""},
		"an-combo-1":  {response.OutcomeAlert, alert.OutcomeAlertOnly, ""},
		"an-combo-2":  {response.OutcomeRevoke, alert.OutcomeRevoked, "exfiltration"},
		"an-unseen":   {response.OutcomeRevoke, alert.OutcomeRevoked, "critical"},
		"an-unseen-2": {response.OutcomeAlert, alert.OutcomeAlreadyRevoked, ""},
	}
	for id, w := range want {
		r, ok := got[id]
		if !ok || r.Decision != w.decision || r.Outcome != w.outcome || r.Rule != w.rule {
			t.Errorf("%s: got %+v, want %+v", id, r, w)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Exactly the revoked tokens are on the ledger, revoked by the revoker
	// with the anomaly named.
	led := f.revocations()
	if len(led) != 3 || len(led[crit.id]) != 1 || len(led[combo.id]) != 1 || len(led[unseen.id]) != 1 {
		t.Fatalf("ledger revocations: %v", led)
	}
	p := led[crit.id][0]
	if p.Kind != events.RevokeToken || p.Actor != "revoker/test" || p.AnomalyID != "an-crit" ||
		!strings.Contains(p.Reason, "scope_probing") || !strings.Contains(p.Reason, "an-crit") || !p.Expiry.Equal(crit.expiry) {
		t.Fatalf("automatic revocation: %+v", p)
	}
	if q := led[unseen.id][0]; q.Tenant != "acme" || q.Holder != "legacy" || q.Expiry.Sub(time.Now()) < maxTTL-time.Minute {
		t.Fatalf("revocation of a token never seen: %+v", q)
	}
	for _, tk := range []tok{crit, combo} {
		if _, _, ok := f.deny(events.DenyKeyToken(tk.id)); !ok {
			t.Fatalf("token %s not denied", tk.id)
		}
	}
	for _, tk := range []tok{dry, glass, alertOnly} {
		if _, _, ok := f.deny(events.DenyKeyToken(tk.id)); ok {
			t.Fatalf("token %s denied", tk.id)
		}
	}
	if !strings.Contains(f.logs.String(), "dry run: token would have been revoked") {
		t.Fatal("no audit line for the dry run")
	}

	// On-call revokes the alert-only token by hand: its alert resolves.
	if rep, raw := f.call(revoker.CommandRequest{Kind: "token", TokenID: alertOnly.id, Reason: "confirmed leak"}); !rep.OK {
		t.Fatalf("reply %s", raw)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		as := webhookAlerts(t, am)[alertOnly.id]
		if len(as) == 0 || as[len(as)-1].Status != "resolved" {
			return fmt.Errorf("alert of %s: %s", alertOnly.id, statuses(as))
		}
		return nil
	})
	if err := f.r.Alerts().Flush(f.ctx()); err != nil {
		t.Fatal(err)
	}

	byToken := webhookAlerts(t, am)
	check := func(tk tok, want string) {
		t.Helper()
		if got := statuses(byToken[tk.id]); got != want {
			t.Errorf("alerts of %s:\n got %s\nwant %s", tk.id, got, want)
		}
	}
	check(crit, "firing:revoked:critical resolved:revoked:critical")
	check(dry, "firing:dry_run:high")
	check(alertOnly, "firing:alert_only:medium resolved:alert_only:medium")
	check(unseen, "firing:revoked:critical resolved:revoked:critical firing:already_revoked:high")
	// Break-glass: paged critical whatever the anomaly's severity, never revoked.
	for _, a := range byToken[glass.id] {
		if a.Status != "firing" || a.Labels["severity"] != "critical" || a.Labels["break_glass"] != "true" {
			t.Errorf("break-glass alert: %+v", a.Labels)
		}
	}
	// Updates may be merged before delivery; the last firing state is the combination.
	if as := byToken[combo.id]; len(as) < 2 || as[len(as)-1].Status != "resolved" || as[len(as)-2].Labels["outcome"] != "revoked" {
		t.Errorf("alerts of the combination: %s", statuses(as))
	}
	last := byToken[dry.id][len(byToken[dry.id])-1]
	if !strings.Contains(last.Annotations["seen"], "203.0.113.9") || !strings.Contains(last.Annotations["baseline"], "10.20.0.0/16") ||
		!strings.Contains(last.Annotations["action"], "would have revoked") {
		t.Errorf("dry-run alert does not say what was seen, the baseline and what Cordon did: %v", last.Annotations)
	}
	if _, attempts := am.got(); attempts < 3 {
		t.Fatalf("the failing receiver was not retried (%d attempts)", attempts)
	}
	st := f.r.Stats()
	if st.Alerts.Sinks["alertmanager"].Retries < 2 || st.Alerts.Sinks["alertmanager"].Failed != 0 {
		t.Fatalf("alert stats %+v", st.Alerts.Sinks)
	}
	if st.DeadLetters != 1 {
		t.Fatalf("%d dead letters, want the one poison anomaly", st.DeadLetters)
	}
	// PagerDuty got a trigger and then a resolve for the revoked token, on one dedup key.
	pdBodies, _ := pd.got()
	var actions []string
	for _, b := range pdBodies {
		var e alert.PagerDutyEvent
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		if e.DedupKey == "cordon/token/"+crit.id {
			actions = append(actions, e.EventAction)
		}
	}
	if strings.Join(actions, ",") != "trigger,resolve" {
		t.Fatalf("pagerduty events for the revoked token: %v", actions)
	}
	if strings.Contains(f.logs.String(), "routing-key-secret") || strings.Contains(f.logs.String(), am.srv.URL) {
		t.Fatal("alert credentials in the logs")
	}
}

// TestGlobalDryRun: in dry-run mode nothing is revoked, whatever the rules.
func TestGlobalDryRun(t *testing.T) {
	f := setup(t, func(o *revoker.Options) {
		p := response.Default()
		p.DryRun = true
		o.Policy = p
	})
	a := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(a)
	f.anomaly(a, "an-1", "new_network", "critical", time.Now())
	recs := f.waitResponses(1)
	if recs[0].Decision != response.OutcomeDryRun || recs[0].Rule != "critical" {
		t.Fatalf("got %+v", recs[0])
	}
	if len(f.revocations()) != 0 || len(f.denyKeys()) != 0 {
		t.Fatal("dry run revoked")
	}
	if al, ok := f.r.Alerts().Open(a.id); !ok || al.Outcome != alert.OutcomeDryRun {
		t.Fatalf("alert %+v %v", al, ok)
	}
	if n := f.r.Stats().Responses[string(alert.OutcomeDryRun)]; n != 1 {
		t.Fatalf("dry-run responses counted %d", n)
	}
	// The revoker is a Prometheus collector; the dry run shows in its metrics.
	reg := prometheus.NewRegistry()
	if err := reg.Register(f.r); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "cordon_revoker_anomaly_responses_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "dry_run" && m.GetCounter().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no cordon_revoker_anomaly_responses_total{outcome=\"dry_run\"} 1")
	}
}

// TestSourceAnomalyIsAlertedNotRevoked: a forging_burst anomaly is about a
// source network (token_id "-"). Even under a policy whose revoke rules
// match it (critical, and a rule naming forging_burst), the revoker alerts
// and records it, and revokes nothing: no ledger revocation, no denylist
// entry, no attempt to look "-" up as a token.
func TestSourceAnomalyIsAlertedNotRevoked(t *testing.T) {
	f := setup(t, func(o *revoker.Options) {
		o.Policy = policy(t, "rules:\n  - name: forged\n    detectors: [forging_burst]\n    action: revoke\n  - name: critical\n    min_severity: critical\n    action: revoke\n")
	})
	live := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(live)
	now := time.Now()
	for i, sev := range []string{"critical", "high"} {
		f.publish(now.Add(time.Duration(i)*time.Second), &events.AnomalyDetected{AnomalyID: fmt.Sprint("src-", i), Detector: "forging_burst",
			Severity: sev, TokenID: events.SourceTokenID, Subject: events.AnomalySource, Tenant: "_", EventID: fmt.Sprint("usage-src-", i),
			EventTime: now, SourceIP: "203.0.113.66",
			Evidence: events.Evidence{Seen: "5000 requests naming no readable token", Baseline: "a burst is 100 in 1m",
				Details: map[string]string{"network": "203.0.113.0/24"}}})
	}
	recs := f.waitResponses(2)
	for _, r := range recs {
		if r.TokenID != events.SourceTokenID || r.Outcome != alert.OutcomeAlertOnly || r.Decision != response.OutcomeAlert ||
			!strings.Contains(r.Corroboration, "no token to revoke") {
			t.Fatalf("source anomaly handled as %+v", r)
		}
	}
	if len(f.revocations()) != 0 || len(f.denyKeys()) != 0 {
		t.Fatalf("a source anomaly revoked something: %v %v", f.revocations(), f.denyKeys())
	}
	if _, ok := f.r.Alerts().Open("source:203.0.113.0/24"); !ok {
		t.Fatal("no alert open for the source")
	}
}
