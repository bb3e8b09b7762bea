package detect_test

import (
	"testing"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestFoldedUsageIsNotTokenUsage: an enforcer folds the denials that name
// no token into events carrying a count (events.UsageDecided.Count). They
// never touch a token's, holder's or tenant's state; they feed only
// forging_burst, keyed on the source network, weighing the count, whose
// anomaly is about the source (no token to revoke). "missing" (no token at
// all) is not forging.
func TestFoldedUsageIsNotTokenUsage(t *testing.T) {
	e, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range history() {
		e.Observe(env)
	}
	before := e.Stats()
	folded := []events.Envelope{
		use(at(9, 3, 0), "203.0.113.66", token(""), deny("missing"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.KeyID, u.Count = "", "", "", 100000 }),
		use(at(9, 3, 0), "203.0.113.67", token(""), deny("bad_signature"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", 5000 }),
		use(at(9, 3, 1), "203.0.113.68", token(""), deny("throttled"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.KeyID, u.Count = "", "", "", 1<<30 }),
	}
	var raised []events.AnomalyDetected
	for _, env := range folded {
		if err := env.Validate(); err != nil {
			t.Fatalf("test event invalid: %v", err)
		}
		raised = append(raised, e.Observe(env)...)
	}
	// One burst of one /24: the second event is within the cooldown.
	if len(raised) != 1 || raised[0].Detector != detect.ForgingBurst {
		t.Fatalf("folded events raised %v, want one forging_burst", detectorsOf(raised))
	}
	a := raised[0]
	if !a.IsSource() || a.TokenID != events.SourceTokenID || a.SourceIP != "203.0.113.67" || a.Severity != events.SeverityHigh ||
		a.Evidence.Details["count"] != "5000" || a.Evidence.Details["network"] != "203.0.113.0/24" {
		t.Fatalf("forging_burst anomaly %+v", a)
	}
	if err := (&a).Validate(); err != nil {
		t.Fatalf("source anomaly invalid: %v", err)
	}
	after := e.Stats()
	if after.Sourceless-before.Sourceless != uint64(len(folded)) || after.UsageEvents != before.UsageEvents ||
		after.Tokens != before.Tokens || after.Holders != before.Holders || after.Sources != 1 {
		t.Fatalf("stats before %+v after %+v", before, after)
	}
	// The token's own next use is judged as before: nothing carried over.
	if as := e.Observe(use(at(9, 10, 0), "10.1.2.10")); len(as) != 0 {
		t.Fatalf("normal use after the flood raised %v", detectorsOf(as))
	}
}
