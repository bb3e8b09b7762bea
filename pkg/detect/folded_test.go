package detect_test

import (
	"testing"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestFoldedUsageIsNotTokenUsage: an enforcer folds the denials that name
// no token into events carrying a count (events.UsageDecided.Count). The
// detectors analyse tokens only, so such events, whatever their count, are
// ignored: they neither raise anomalies nor move a token's baseline. (A
// count above 1 on an event with a token id is invalid: events.Validate.)
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
		use(at(9, 3, 0), "203.0.113.66", token(""), deny("bad_signature"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.Count = "", "", 5000 }),
		use(at(9, 3, 1), "203.0.113.66", token(""), deny("throttled"), func(u *events.UsageDecided) { u.Tenant, u.Holder, u.KeyID, u.Count = "", "", "", 1<<30 }),
	}
	for _, env := range folded {
		if err := env.Validate(); err != nil {
			t.Fatalf("test event invalid: %v", err)
		}
		if as := e.Observe(env); len(as) != 0 {
			t.Fatalf("a folded token-less event raised %v", detectorsOf(as))
		}
	}
	after := e.Stats()
	if after.Ignored-before.Ignored != uint64(len(folded)) || after.UsageEvents != before.UsageEvents {
		t.Fatalf("ignored %d, usage %d → %d", after.Ignored-before.Ignored, before.UsageEvents, after.UsageEvents)
	}
	// The token's own next use is judged as before: nothing carried over.
	if as := e.Observe(use(at(9, 10, 0), "10.1.2.10")); len(as) != 0 {
		t.Fatalf("normal use after the flood raised %v", detectorsOf(as))
	}
}
