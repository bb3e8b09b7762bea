package simulate_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

func TestScoreLabels(t *testing.T) {
	t0 := time.Date(2026, 10, 27, 2, 0, 0, 0, time.UTC)
	l := simulate.Labels{
		Scenario:        simulate.Scenario{Name: "unit", Seed: 9},
		AttackVariants:  []string{"leak", "forging", "slow"},
		BenignVariants:  []string{simulate.Steady, "move", "broken"},
		TokenDays:       map[string]int{simulate.Steady: 2000, "move": 50, "broken": 4},
		BenignTokenDays: 2040,
		Attacks: []simulate.Attack{
			{ID: "atk-01", Variant: "leak", TokenIDs: []string{"tok-a"}, Sources: []string{"203.0.113.5"}, Tenant: "acme", Holder: "billing-1",
				Start: t0, End: t0.Add(5 * time.Minute), DetectBy: t0.Add(20 * time.Minute), EventIDs: []string{"e-a1", "e-a2"}},
			{ID: "atk-02", Variant: "leak", TokenIDs: []string{"tok-b"}, Sources: []string{"203.0.113.6"}, Tenant: "acme", Holder: "billing-2",
				Start: t0, End: t0.Add(time.Minute), DetectBy: t0.Add(16 * time.Minute), EventIDs: []string{"e-b1"}},
			{ID: "atk-03", Variant: "forging", Sources: []string{"198.18.0.9"}, Start: t0, End: t0.Add(time.Minute), DetectBy: t0.Add(16 * time.Minute), EventIDs: []string{"e-f1"}},
			{ID: "atk-04", Variant: "slow", TokenIDs: []string{"tok-c"}, Sources: []string{"10.0.0.3"}, Tenant: "acme", Holder: "mailer-1",
				Start: t0, End: t0.Add(5 * time.Hour), DetectBy: t0.Add(5*time.Hour + 15*time.Minute), EventIDs: []string{"e-c1"}},
		},
		Exposures: []simulate.Exposure{
			{Variant: "move", Tenant: "acme", Holder: "sync-1", From: t0.Add(-time.Hour), To: t0.Add(24 * time.Hour)},
			{Variant: "broken", Tenant: "acme", Holder: "sync-2", Sources: []string{"10.1.1.1"}, From: t0, To: t0.Add(time.Hour)},
		},
	}
	an := func(det, token, tenant, holder, src, event string, at time.Time) events.AnomalyDetected {
		return events.AnomalyDetected{AnomalyID: det + event, Detector: det, TokenID: token, Tenant: tenant, Holder: holder, SourceIP: src, EventID: event, EventTime: at}
	}
	anomalies := []events.AnomalyDetected{
		an("new_network", "tok-a", "acme", "billing-1", "203.0.113.5", "e-a1", t0.Add(30*time.Second)), // detects atk-01
		an("volume", "tok-a", "acme", "billing-1", "203.0.113.5", "e-x", t0.Add(10*time.Minute)),       // detects atk-01, within the bound
		an("odd_hours", "tok-a", "acme", "billing-1", "10.0.0.1", "e-y", t0.Add(2*time.Hour)),          // late: attacked token, after the bound
		an("new_network", "tok-b", "acme", "billing-2", "10.0.0.2", "e-z", t0.Add(-time.Hour)),         // false alarm: before its attack, steady
		an("forging", "-", "", "", "198.18.0.9", "e-f9", t0.Add(40*time.Second)),                       // detects atk-03 by its source
		an("forging", "-", "", "", "10.1.1.1", "e-g", t0.Add(10*time.Minute)),                          // false alarm on the broken client's source
		an("new_network", "tok-s", "acme", "sync-1", "10.9.9.9", "e-s", t0.Add(time.Hour)),             // false alarm during a move
		an("probing", "tok-c", "acme", "mailer-1", "10.0.0.3", "e-c1", t0.Add(6*time.Hour)),            // its own event, but after the bound: late
	}
	wall := func(a events.AnomalyDetected, atk simulate.Attack) (time.Duration, bool) {
		return 3 * time.Millisecond, atk.ID == "atk-01"
	}
	r := simulate.ScoreLabels(l, anomalies, simulate.ScoreOptions{WallLatency: wall})

	if r.Attacks != 4 || r.Detected != 2 || r.Recall != 0.5 {
		t.Errorf("attacks/detected/recall %d/%d/%.2f, want 4/2/0.50", r.Attacks, r.Detected, r.Recall)
	}
	if r.Anomalies != 8 || r.TruePositives != 3 || r.FalseAlarms != 3 || r.Late != 2 || r.Precision != 0.5 {
		t.Errorf("anomalies/TP/FA/late/precision %d/%d/%d/%d/%.2f, want 8/3/3/2/0.50", r.Anomalies, r.TruePositives, r.FalseAlarms, r.Late, r.Precision)
	}
	variants := map[string]simulate.AttackVariantScore{}
	for _, v := range r.AttackVariants {
		variants[v.Variant] = v
	}
	if v := variants["leak"]; v.Attacks != 2 || v.Detected != 1 || v.Recall != 0.5 || v.TimeToDetect.Median != 30*time.Second {
		t.Errorf("leak: %+v", v)
	}
	if v := variants["forging"]; v.Detected != 1 || strings.Join(v.Detectors, ",") != "forging" {
		t.Errorf("forging: %+v", v)
	}
	if v := variants["slow"]; v.Detected != 0 || v.Recall != 0 {
		t.Errorf("slow: %+v (an anomaly after DetectBy must not count)", v)
	}
	benign := map[string]simulate.BenignVariantScore{}
	for _, v := range r.BenignVariants {
		benign[v.Variant] = v
	}
	if v := benign[simulate.Steady]; v.FalseAlarms != 1 || v.Per1000 != 0.5 || v.Alarmed != 1 {
		t.Errorf("steady: %+v", v)
	}
	if v := benign["move"]; v.FalseAlarms != 1 || v.Per1000 != 20 {
		t.Errorf("move: %+v", v)
	}
	if v := benign["broken"]; v.FalseAlarms != 1 || v.Per1000 != 250 || v.Alarmed != 1 {
		t.Errorf("broken: %+v", v)
	}
	p := r.PerAttack[0]
	if !p.Detected || p.Delay != 30*time.Second || !p.HasWallLatency || p.WallLatency != 3*time.Millisecond || strings.Join(p.Detectors, ",") != "new_network,volume" {
		t.Errorf("atk-01: %+v", p)
	}
	if len(r.Undetected) != 2 || r.Undetected[0].ID != "atk-02" || r.Undetected[1].ID != "atk-04" {
		t.Errorf("undetected %v", r.Undetected)
	}

	// The bar: every attack variant at 0.95 recall, every benign variant
	// at 1 false alarm per 1,000 token-days.
	fails := r.Gate(0.95, 1)
	want := []string{"attack leak", "attack slow", "benign move", "benign broken"}
	if len(fails) != len(want) {
		t.Errorf("gate failures %q, want %d", fails, len(want))
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(fails, "\n"), w) {
			t.Errorf("gate failures %q lack %q", fails, w)
		}
	}
	if fails := r.Gate(0.5, 500); len(fails) != 1 || !strings.Contains(fails[0], "attack slow") {
		t.Errorf("lenient gate: %q, want only the undetected variant", fails)
	}
	if fails := r.Gate(0, 1000); len(fails) != 0 {
		t.Errorf("gate with no bar: %q", fails)
	}

	var buf bytes.Buffer
	if err := r.Print(&buf); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"attack variant", "leak", "benign variant", "per 1,000 token-days", "250.0", "precision 0.500",
		"undetected attacks (2)", "false alarms (3", "[move]", "[broken]"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("printed report lacks %q:\n%s", s, buf.String())
		}
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("report does not encode: %v", err)
	}
}

func TestScoreEmpty(t *testing.T) {
	r := simulate.Score(nil, nil)
	if r.Precision != 1 || r.Recall != 1 || len(r.Gate(0.95, 1)) != 0 {
		t.Fatalf("empty score %+v", r)
	}
	var buf bytes.Buffer
	if err := r.Print(&buf); err != nil || !strings.Contains(buf.String(), "undetected attacks: none") {
		t.Fatalf("empty print %v:\n%s", err, buf.String())
	}
	// A benign variant without token-days fails the bar on any false alarm.
	l := simulate.Labels{BenignVariants: []string{"ghost"}, Exposures: []simulate.Exposure{{Variant: "ghost", Tenant: "a", Holder: "h",
		From: time.Unix(0, 0), To: time.Unix(1e9, 0)}}}
	r = simulate.ScoreLabels(l, []events.AnomalyDetected{{Detector: "x", TokenID: "t", Tenant: "a", Holder: "h", EventTime: time.Unix(100, 0)}}, simulate.ScoreOptions{})
	if fails := r.Gate(0.95, 1); len(fails) != 1 || !strings.Contains(fails[0], "no benign token-days") {
		t.Errorf("gate %q", fails)
	}
}
