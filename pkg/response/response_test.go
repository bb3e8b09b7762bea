package response_test

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/response"
)

const fixtures = "../../testdata/response"

func TestGoodFixtures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "good", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no good fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			p, err := response.LoadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Rules) == 0 {
				t.Fatal("no rules")
			}
		})
	}
}

func TestFullFixture(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Default || p.DryRun || len(p.Rules) != 6 {
		t.Fatalf("got %+v", p)
	}
	combo := p.Rules[1]
	if combo.Name != "exfiltration" || combo.Within != 10*time.Minute || !slices.Equal(combo.AllOf, []string{"new_network", "odd_hours"}) || combo.Line != 12 {
		t.Fatalf("combination rule: %+v", combo)
	}
	if r := p.Rules[3]; !r.DryRun || r.Action != response.ActionRevoke || !slices.Equal(r.Holders, []string{"billing-api"}) {
		t.Fatalf("dry-run rule: %+v", r)
	}
	if p.MaxWindow() != 10*time.Minute {
		t.Fatalf("max window %v", p.MaxWindow())
	}
}

func TestDefaults(t *testing.T) {
	for _, name := range []string{"empty.yaml", "dry-run.yaml"} {
		p, err := response.LoadFile(filepath.Join(fixtures, "good", name))
		if err != nil {
			t.Fatal(err)
		}
		if !p.Default || len(p.Rules) != len(response.Default().Rules) {
			t.Fatalf("%s: want the default rules, got %+v", name, p)
		}
		if p.DryRun != (name == "dry-run.yaml") {
			t.Fatalf("%s: dry run %v", name, p.DryRun)
		}
	}
	p, err := response.Decode("x.yaml", nil)
	if err != nil || !p.Default {
		t.Fatalf("nil node: %+v %v", p, err)
	}
}

func TestAnchors(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "anchors.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Rules[0].MinSeverity != "high" || p.Rules[0].Action != response.ActionRevoke {
		t.Fatalf("merged rule: %+v", p.Rules[0])
	}
	if p.Rules[1].MinSeverity != "medium" {
		t.Fatalf("own key must win over merged: %+v", p.Rules[1])
	}
}

// TestBadFixtures: each bad fixture's first line says "# want: LINE: FIELD: MESSAGE".
func TestBadFixtures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "bad", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no bad fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want := firstLine(t, f)
			want, ok := strings.CutPrefix(want, "# want: ")
			if !ok {
				t.Fatalf("fixture lacks a # want: line")
			}
			_, err := response.LoadFile(f)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, response.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), f+":"+want) {
				t.Fatalf("got  %v\nwant %s:%s", err, f, want)
			}
		})
	}
}

func firstLine(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	s := bufio.NewScanner(fh)
	s.Scan()
	return s.Text()
}

func TestDecodeNode(t *testing.T) {
	var doc yaml.Node
	src := "dry_run: true\nrules:\n  - action: revoke\n    min_severity: medium\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	p, err := response.Decode("inline", doc.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	if !p.DryRun || p.Rules[0].Name != "rules[0]" || p.Rules[0].MinSeverity != "medium" {
		t.Fatalf("got %+v", p)
	}
	if err := yaml.Unmarshal([]byte("rules: 3\n"), &doc); err != nil {
		t.Fatal(err)
	}
	_, err = response.Decode("inline", doc.Content[0])
	var perr *response.Error
	if !errors.As(err, &perr) || perr.Line != 1 || perr.Field != "response.rules" || !strings.Contains(perr.Msg, "the number 3") {
		t.Fatalf("got %v", err)
	}
}

var t0 = time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)

func anomaly(id, token, detector, severity string, at time.Duration) *events.AnomalyDetected {
	return &events.AnomalyDetected{AnomalyID: id, Detector: detector, Severity: severity, TokenID: token,
		Tenant: "acme", Holder: "billing-api", EventID: "e-" + id, EventTime: t0.Add(at),
		Evidence: events.Evidence{Seen: "x", Baseline: "y"}}
}

func TestDecideDefault(t *testing.T) {
	e := response.NewEngine(nil, response.EngineOptions{})
	cases := []struct {
		detector, severity string
		want               response.Outcome
		rule               string
	}{
		{"volume_spike", "critical", response.OutcomeRevoke, "critical"},
		{"new_network", "high", response.OutcomeRevoke, "high-risk"},
		{"use_after_revoke", "high", response.OutcomeRevoke, "high-risk"},
		{"scope_probing", "high", response.OutcomeRevoke, "high-risk"},
		{"odd_hours", "high", response.OutcomeAlert, ""},
		{"new_network", "medium", response.OutcomeAlert, ""},
		{"volume_spike", "low", response.OutcomeAlert, ""},
	}
	for i, c := range cases {
		t.Run(c.detector+"/"+c.severity, func(t *testing.T) {
			d := e.Decide(anomaly(string(rune('a'+i)), "tok", c.detector, c.severity, 0), false)
			if d.Outcome != c.want || d.Rule != c.rule || d.Severity != c.severity {
				t.Fatalf("got %+v, want %s by %q", d, c.want, c.rule)
			}
		})
	}
}

func TestDecideTable(t *testing.T) {
	full, err := response.LoadFile(filepath.Join(fixtures, "good", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dry := *full
	dry.DryRun = true
	type step struct {
		a          *events.AnomalyDetected
		tenant     string
		breakGlass bool
		want       response.Outcome
		rule       string
		severity   string
		related    []string
	}
	cases := []struct {
		name   string
		policy *response.Policy
		steps  []step
	}{
		{"revoke on probing", full, []step{
			{a: anomaly("1", "t1", "scope_probing", "high", 0), want: response.OutcomeRevoke, rule: "probing", severity: "high"},
		}},
		{"below min severity alerts", full, []step{
			{a: anomaly("1", "t1", "scope_probing", "medium", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "medium"},
		}},
		{"exception first", full, []step{
			{a: anomaly("1", "t1", "scope_probing", "critical", 0), tenant: "staging", want: response.OutcomeAlert, rule: "staging-observe", severity: "critical"},
		}},
		{"per-rule dry run", full, []step{
			{a: anomaly("1", "t1", "volume_spike", "high", 0), want: response.OutcomeDryRun, rule: "billing-volume", severity: "high"},
		}},
		{"global dry run", &dry, []step{
			{a: anomaly("1", "t1", "scope_probing", "critical", 0), want: response.OutcomeDryRun, rule: "probing", severity: "critical"},
		}},
		{"break glass pages critical", full, []step{
			{a: anomaly("1", "t1", "scope_probing", "high", 0), breakGlass: true, want: response.OutcomeBreakGlass, rule: "probing", severity: "critical"},
		}},
		{"break glass alert rule still pages critical", full, []step{
			{a: anomaly("1", "t1", "odd_hours", "low", 0), breakGlass: true, want: response.OutcomeBreakGlass, rule: "everything-else", severity: "critical"},
		}},
		{"combination within window", full, []step{
			{a: anomaly("1", "t1", "new_network", "medium", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "medium"},
			{a: anomaly("2", "t1", "odd_hours", "low", 9*time.Minute), want: response.OutcomeRevoke, rule: "exfiltration", severity: "medium", related: []string{"1"}},
		}},
		{"combination out of order", full, []step{
			{a: anomaly("1", "t1", "odd_hours", "low", 5*time.Minute), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
			{a: anomaly("2", "t1", "new_network", "low", 0), want: response.OutcomeRevoke, rule: "exfiltration", severity: "low", related: []string{"1"}},
		}},
		{"combination outside window", full, []step{
			{a: anomaly("1", "t1", "new_network", "medium", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "medium"},
			{a: anomaly("2", "t1", "odd_hours", "low", 11*time.Minute), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
		}},
		{"combination needs the same token", full, []step{
			{a: anomaly("1", "t1", "new_network", "medium", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "medium"},
			{a: anomaly("2", "t2", "odd_hours", "low", time.Minute), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
		}},
		{"same detector twice is no combination", full, []step{
			{a: anomaly("1", "t1", "odd_hours", "low", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
			{a: anomaly("2", "t1", "odd_hours", "low", time.Minute), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
		}},
		{"redelivered anomaly is not its own partner", full, []step{
			{a: anomaly("1", "t1", "new_network", "low", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
			{a: anomaly("1", "t1", "new_network", "low", 0), want: response.OutcomeAlert, rule: "everything-else", severity: "low"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := response.NewEngine(c.policy, response.EngineOptions{})
			for i, s := range c.steps {
				if s.tenant != "" {
					s.a.Tenant = s.tenant
				}
				d := e.Decide(s.a, s.breakGlass)
				if d.Outcome != s.want || d.Rule != s.rule || d.Severity != s.severity || !slices.Equal(d.Related, s.related) {
					t.Fatalf("step %d: got %+v, want %s by %q at %s related %v", i, d, s.want, s.rule, s.severity, s.related)
				}
			}
		})
	}
}

func TestEngineBounded(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	e := response.NewEngine(p, response.EngineOptions{MaxTokens: 3, PerToken: 2})
	for i := range 10 {
		e.Decide(anomaly(string(rune('a'+i)), string(rune('A'+i)), "new_network", "low", 0), false)
	}
	if n := e.Tracked(); n != 3 {
		t.Fatalf("tracked %d tokens, bound is 3", n)
	}
	// The least recently seen token was forgotten: its new_network no
	// longer completes a combination.
	if d := e.Decide(anomaly("z", "A", "odd_hours", "low", time.Minute), false); d.Outcome != response.OutcomeAlert {
		t.Fatalf("evicted token still remembered: %+v", d)
	}
	if d := e.Decide(anomaly("y", "J", "odd_hours", "low", time.Minute), false); d.Outcome != response.OutcomeRevoke {
		t.Fatalf("recent token forgotten: %+v", d)
	}
}

func anomalyBy(id, token, detector, severity string, at time.Duration, enforcer, decision string) *events.AnomalyDetected {
	a := anomaly(id, token, detector, severity, at)
	a.Enforcer, a.Decision = enforcer, decision
	return a
}

// TestCorroboration: a revoke rule with corroborate revokes only on the
// evidence it asks for — distinct enforcers, an allowed request — within
// its window; otherwise it alerts and says what is missing. Anomalies from
// one enforcer (one credential, possibly forged) never revoke.
func TestCorroboration(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "corroborate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c := p.Rules[0].Corroborate; c == nil || c.MinEnforcers != 2 || c.RequireAllowed || c.Within != 15*time.Minute {
		t.Fatalf("leaked-token corroboration: %+v", c)
	}
	if c := p.Rules[1].Corroborate; c == nil || c.MinEnforcers != 0 || !c.RequireAllowed || c.Within != 10*time.Minute {
		t.Fatalf("exfiltration corroboration (the rule's window): %+v", c)
	}
	if c := p.Rules[2].Corroborate; c == nil || c.Within != response.DefaultCorroborationWindow {
		t.Fatalf("critical corroboration (default window): %+v", c)
	}
	if p.MaxWindow() != 15*time.Minute {
		t.Fatalf("max window %v: the engine must remember anomalies for the corroboration window", p.MaxWindow())
	}
	dry := *p
	dry.DryRun = true
	const allow, deny = events.DecisionAllow, events.DecisionDeny
	type step struct {
		a          *events.AnomalyDetected
		breakGlass bool
		want       response.Outcome
		rule       string
		why        string // a part of Decision.Corroboration
	}
	cases := []struct {
		name   string
		policy *response.Policy
		steps  []step
	}{
		{"one enforcer never revokes", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "uncorroborated: 1 of 2 enforcers (edge-1)"},
			{a: anomalyBy("2", "t1", "scope_probing", "high", time.Minute, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2 enforcers (edge-1)"},
			{a: anomalyBy("3", "t1", "use_after_revoke", "high", 2*time.Minute, "edge-1", allow), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2"},
		}},
		{"a second enforcer revokes", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2"},
			{a: anomalyBy("2", "t1", "scope_probing", "medium", 14*time.Minute, "edge-2", deny), want: response.OutcomeRevoke, rule: "leaked-token", why: "corroborated: 2 of 2 enforcers (edge-1, edge-2)"},
		}},
		{"the second enforcer's anomaly arrived first", p, []step{
			{a: anomalyBy("1", "t1", "odd_hours", "low", 5*time.Minute, "edge-2", deny), want: response.OutcomeAlert, rule: "everything-else"},
			{a: anomalyBy("2", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeRevoke, rule: "leaked-token", why: "edge-1, edge-2"},
		}},
		{"the second enforcer too late", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token"},
			{a: anomalyBy("2", "t1", "scope_probing", "high", 16*time.Minute, "edge-2", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2 enforcers (edge-2)"},
		}},
		{"another token's enforcer does not count", p, []step{
			{a: anomalyBy("1", "t2", "new_network", "high", 0, "edge-2", deny), want: response.OutcomeUncorroborated, rule: "leaked-token"},
			{a: anomalyBy("2", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2 enforcers (edge-1)"},
		}},
		{"an anomaly without an enforcer does not count", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "0 of 2 enforcers (none)"},
			{a: anomalyBy("2", "t1", "new_network", "high", time.Minute, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2"},
		}},
		{"a redelivered anomaly is no second enforcer", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token"},
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token", why: "1 of 2"},
		}},
		{"denials only do not revoke a combination that needs an allowed request", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "medium", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token"},
			{a: anomalyBy("2", "t1", "odd_hours", "low", 5*time.Minute, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "exfiltration", why: "only denied requests within 10m0s"},
			{a: anomalyBy("3", "t1", "odd_hours", "low", 6*time.Minute, "edge-1", allow), want: response.OutcomeRevoke, rule: "exfiltration", why: "an allowed request"},
		}},
		{"both requirements", p, []step{
			{a: anomalyBy("1", "t1", "volume_spike", "critical", 0, "edge-1", allow), want: response.OutcomeUncorroborated, rule: "critical", why: "1 of 3 enforcers"},
			{a: anomalyBy("2", "t1", "volume_spike", "critical", time.Minute, "edge-2", deny), want: response.OutcomeUncorroborated, rule: "critical", why: "2 of 3"},
			{a: anomalyBy("3", "t1", "volume_spike", "critical", 2*time.Minute, "edge-3", deny), want: response.OutcomeRevoke, rule: "critical", why: "3 of 3 enforcers (edge-1, edge-2, edge-3) reported it within 10m0s; an allowed request"},
		}},
		{"break glass pages without revoking", p, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), breakGlass: true, want: response.OutcomeBreakGlass, rule: "leaked-token", why: "uncorroborated"},
		}},
		{"dry run of a corroborated match", &dry, []step{
			{a: anomalyBy("1", "t1", "new_network", "high", 0, "edge-1", deny), want: response.OutcomeUncorroborated, rule: "leaked-token"},
			{a: anomalyBy("2", "t1", "new_network", "high", 0, "edge-2", deny), want: response.OutcomeDryRun, rule: "leaked-token", why: "corroborated"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := response.NewEngine(c.policy, response.EngineOptions{})
			for i, s := range c.steps {
				d := e.Decide(s.a, s.breakGlass)
				if d.Outcome != s.want || d.Rule != s.rule || !strings.Contains(d.Corroboration, s.why) {
					t.Fatalf("step %d: got %+v, want %s by %q, corroboration with %q", i, d, s.want, s.rule, s.why)
				}
				if d.WouldRevoke != (s.want == response.OutcomeRevoke || s.want == response.OutcomeDryRun) {
					t.Fatalf("step %d: would revoke %v for %s", i, d.WouldRevoke, d.Outcome)
				}
			}
		})
	}
}

// TestMinRisk: a min_risk rule matches on the anomaly's risk score,
// whatever its detector and severity; an anomaly without a score (an older
// auditor) never matches it.
func TestMinRisk(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "min-risk.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Rules[0].MinRisk != 0.8 {
		t.Fatalf("min_risk decoded as %v", p.Rules[0].MinRisk)
	}
	tests := []struct {
		name string
		risk float64
		det  string
		want response.Outcome
		rule string
	}{
		{"above", 0.81, "new_client", response.OutcomeRevoke, "risky"},
		{"at", 0.8, "odd_hours", response.OutcomeRevoke, "risky"},
		{"below", 0.79, "new_client", response.OutcomeAlert, "new-client"},
		{"no score", 0, "new_client", response.OutcomeAlert, "new-client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := response.NewEngine(p, response.EngineOptions{})
			a := anomaly("a-"+tt.name, "t1", tt.det, "low", 0)
			a.Risk = tt.risk
			d := e.Decide(a, false)
			if d.Outcome != tt.want || d.Rule != tt.rule {
				t.Fatalf("decision %+v, want %s by %q", d, tt.want, tt.rule)
			}
		})
	}
}

// TestSourceAnomalyNeverRevokes: a source-level anomaly (forging_burst)
// names no token: even a revoke rule that matches it, or the critical
// default, only alerts, and it leaves no per-token history.
func TestSourceAnomalyNeverRevokes(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "min-risk.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, pol := range map[string]*response.Policy{"revoke rule": p, "default": response.Default()} {
		t.Run(name, func(t *testing.T) {
			e := response.NewEngine(pol, response.EngineOptions{})
			a := anomaly("src-1", events.SourceTokenID, "forging_burst", "critical", 0)
			a.Subject, a.SourceIP, a.Risk = events.AnomalySource, "203.0.113.7", 1
			d := e.Decide(a, false)
			if d.Outcome != response.OutcomeAlert || d.WouldRevoke {
				t.Fatalf("source anomaly decided %+v, want alert", d)
			}
			if e.Tracked() != 0 {
				t.Fatalf("source anomaly remembered as a token (%d tracked)", e.Tracked())
			}
		})
	}
}

// TestGraduated: the risk score and the detector choose among shadow,
// narrow, step_up and revoke; each carries its step and how long it lasts,
// a shadow says what it would have done, and a dry run of a restriction
// restricts nothing.
func TestGraduated(t *testing.T) {
	p, err := response.LoadFile(filepath.Join(fixtures, "good", "graduated.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); !strings.Contains(got, "prove-it→step_up(30m0s)") || !strings.Contains(got, "trial→shadow(would narrow)") {
		t.Fatalf("policy summary %q", got)
	}
	tests := []struct {
		name        string
		det         string
		risk        float64
		want        response.Outcome
		rule        string
		step        string
		for_        time.Duration
		wouldRevoke bool
	}{
		{"leak revokes", "leaked_public", 0, response.OutcomeRevoke, "leaked", events.StepRevoke, 0, true},
		{"very risky revokes", "new_network", 0.95, response.OutcomeRevoke, "very-risky", events.StepRevoke, 0, true},
		{"risky steps up", "new_network", 0.8, response.OutcomeStepUp, "prove-it", events.StepStepUp, 30 * time.Minute, false},
		{"new network quarantines", "new_network", 0.6, response.OutcomeNarrow, "quarantine", events.StepNarrow, 2 * time.Hour, false},
		{"new client quarantines", "new_client", 0.5, response.OutcomeNarrow, "quarantine", events.StepNarrow, 2 * time.Hour, false},
		{"weak new network alerts", "new_network", 0.3, response.OutcomeAlert, "everything-else", "", 0, false},
		{"default restriction time", "scope_probing", 0, response.OutcomeNarrow, "quarantine-default-time", events.StepNarrow, response.DefaultRestriction, false},
		{"shadow records narrow", "odd_hours", 0, response.OutcomeShadow, "trial", events.StepNarrow, 0, false},
		{"shadow defaults to revoke", "volume_spike", 0, response.OutcomeShadow, "trial-revoke", events.StepRevoke, 0, true},
		{"dry-run step-up", "use_after_revoke", 0, response.OutcomeDryRun, "cautious", events.StepStepUp, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := response.NewEngine(p, response.EngineOptions{})
			a := anomaly("a-"+tt.name, "t1", tt.det, "high", 0)
			a.Risk = tt.risk
			d := e.Decide(a, false)
			if d.Outcome != tt.want || d.Rule != tt.rule || d.Step != tt.step || d.WouldRevoke != tt.wouldRevoke {
				t.Fatalf("decision %+v, want %s by %q, step %q", d, tt.want, tt.rule, tt.step)
			}
			if tt.want != response.OutcomeDryRun && d.For != tt.for_ {
				t.Fatalf("for %s, want %s", d.For, tt.for_)
			}
			// A break-glass token is never restricted automatically either.
			if bg := e.Decide(a, true); bg.Outcome != response.OutcomeBreakGlass || bg.Step != tt.step {
				t.Fatalf("break glass: %+v", bg)
			}
		})
	}
}
