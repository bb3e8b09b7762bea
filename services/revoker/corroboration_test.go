package revoker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/services/revoker"
)

const corroboratedPolicy = `
rules:
  - name: leaked
    detectors: [new_network, scope_probing]
    min_severity: medium
    action: revoke
    corroborate: {min_enforcers: 2, within: 10m}
`

// anomalyFrom publishes an anomaly raised by a usage event of enforcer.
func (f *fixture) anomalyFrom(t tok, id, detector, enforcer string, at time.Time) {
	f.t.Helper()
	f.publish(at, &events.AnomalyDetected{AnomalyID: id, Detector: detector, Severity: events.SeverityHigh, TokenID: t.id,
		Tenant: t.tenant, Holder: t.holder, EventID: "usage-" + id, EventTime: at, SourceIP: "203.0.113.9",
		Enforcer: enforcer, Decision: events.DecisionDeny,
		Evidence: events.Evidence{Seen: "request from 203.0.113.9", Baseline: "10.20.0.0/16"}})
}

// TestCorroboratedRevocation: under a rule with min_enforcers: 2,
// anomalies reported through one enforcer only — what one stolen enforcer
// credential can produce — do not revoke: the token stays off the ledger
// and the denylist, and on-call's alert says it was not revoked and why.
// The same from a second enforcer revokes.
func TestCorroboratedRevocation(t *testing.T) {
	am := newReceiver(t, 0)
	f := setup(t, func(o *revoker.Options) {
		o.Policy = policy(t, corroboratedPolicy)
		sink, err := alert.NewWebhook(alert.WebhookConfig{URL: am.srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		o.Sinks = []alert.Sink{sink}
		o.Alerts = alert.Options{Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	})
	victim := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(victim)
	now := time.Now()
	f.anomalyFrom(victim, "an-1", "new_network", "edge-1", now)
	f.anomalyFrom(victim, "an-2", "scope_probing", "edge-1", now.Add(time.Second))
	recs := f.waitResponses(2)
	for _, r := range recs {
		if r.Decision != response.OutcomeUncorroborated || r.Outcome != alert.OutcomeAlertOnly || r.Rule != "leaked" || r.Enforcer != "edge-1" ||
			!strings.Contains(r.Corroboration, "uncorroborated: 1 of 2 enforcers (edge-1)") {
			t.Fatalf("one enforcer's anomaly %s: %+v", r.AnomalyID, r)
		}
	}
	if led := f.revocations(); len(led[victim.id]) != 0 {
		t.Fatalf("revoked on one enforcer's word: %+v", led[victim.id])
	}
	if _, _, ok := f.deny(events.DenyKeyToken(victim.id)); ok {
		t.Fatal("denied on one enforcer's word")
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		as := webhookAlerts(t, am)[victim.id]
		if len(as) == 0 {
			return fmt.Errorf("no alert yet")
		}
		act := as[len(as)-1].Annotations["action"]
		if !strings.Contains(act, "Not revoked") || !strings.Contains(act, "uncorroborated: 1 of 2 enforcers (edge-1)") {
			return fmt.Errorf("alert action %q does not say it was not revoked and why", act)
		}
		return nil
	})

	f.anomalyFrom(victim, "an-3", "new_network", "edge-2", now.Add(2*time.Second))
	recs = f.waitResponses(3)
	last := recs[len(recs)-1]
	if last.AnomalyID != "an-3" || last.Decision != response.OutcomeRevoke || last.Outcome != alert.OutcomeRevoked ||
		!strings.Contains(last.Corroboration, "corroborated: 2 of 2 enforcers (edge-1, edge-2)") {
		t.Fatalf("second enforcer's anomaly: %+v", last)
	}
	led := f.revocations()
	if len(led[victim.id]) != 1 || !strings.Contains(led[victim.id][0].Reason, "corroborated: 2 of 2 enforcers") {
		t.Fatalf("revocation: %+v", led[victim.id])
	}
	if _, _, ok := f.deny(events.DenyKeyToken(victim.id)); !ok {
		t.Fatal("corroborated token not denied")
	}
}
