package response_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/response"
)

// FuzzParse feeds arbitrary bytes to the response-section parser. It must
// never panic; an error must be a located *Error wrapping ErrInvalid; and a
// policy it accepts must keep the invariants the engine relies on
// (corroboration only on revoke rules, within its bounds) and decide any
// anomaly without panicking.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{filepath.Join(fixtures, "good"), filepath.Join(fixtures, "bad")} {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("response: {rules: [{action: revoke, corroborate: {min_enforcers: 0x10, within: 1ns}}]}"))
	f.Add([]byte("response: {rules: [{action: revoke, corroborate: &c {min_enforcers: 2}}, {action: revoke, corroborate: *c}]}"))
	f.Add([]byte("response: {rules: [{action: revoke, corroborate: {<<: {require_allowed: true}}}]}"))
	f.Add([]byte("response: {rules: [{action: narrow, for: 1ns}, {action: shadow, would: step_up}, {action: step_up, corroborate: {require_allowed: true}}]}"))

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := response.Parse("fuzz.yaml", data)
		if err != nil {
			var pe *response.Error
			if !errors.As(err, &pe) || !errors.Is(err, response.ErrInvalid) || pe.File != "fuzz.yaml" {
				t.Fatalf("error is not a located response policy error: %#v", err)
			}
			return
		}
		if len(p.Rules) == 0 {
			t.Fatal("accepted a policy without rules")
		}
		for _, r := range p.Rules {
			if !slices.Contains(response.Actions, r.Action) {
				t.Fatalf("rule %s: action %q", r.Name, r.Action)
			}
			restricts := r.Action == response.ActionRevoke || r.Action == response.ActionNarrow || r.Action == response.ActionStepUp
			switch {
			case (r.Action == response.ActionNarrow || r.Action == response.ActionStepUp) != (r.For != 0):
				t.Fatalf("rule %s: action %s for %s", r.Name, r.Action, r.For)
			case r.For < 0 || r.For > events.MaxRestriction:
				t.Fatalf("rule %s: for %s", r.Name, r.For)
			case (r.Action == response.ActionShadow) != (r.Would != ""):
				t.Fatalf("rule %s: action %s would %q", r.Name, r.Action, r.Would)
			case r.Would != "" && r.Would.Step() == "":
				t.Fatalf("rule %s: would %q is no step", r.Name, r.Would)
			}
			if c := r.Corroborate; c != nil {
				switch {
				case !restricts:
					t.Fatalf("rule %s: corroboration on %s", r.Name, r.Action)
				case c.MinEnforcers != 0 && (c.MinEnforcers < 2 || c.MinEnforcers > response.MaxMinEnforcers):
					t.Fatalf("rule %s: min_enforcers %d", r.Name, c.MinEnforcers)
				case c.MinEnforcers == 0 && !c.RequireAllowed:
					t.Fatalf("rule %s: a corroboration that asks for nothing", r.Name)
				case c.Within <= 0 || c.Within > response.MaxWithin:
					t.Fatalf("rule %s: corroboration window %v", r.Name, c.Within)
				}
			}
		}
		e := response.NewEngine(p, response.EngineOptions{MaxTokens: 4, PerToken: 4})
		at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
		for i, det := range response.KnownDetectors {
			e.Decide(&events.AnomalyDetected{AnomalyID: det, Detector: det, Severity: events.SeverityHigh, TokenID: "t", Tenant: "acme",
				Holder: "h", EventID: det, EventTime: at.Add(time.Duration(i) * time.Minute), Enforcer: det, Decision: events.DecisionAllow}, i%2 == 0)
		}
	})
}
