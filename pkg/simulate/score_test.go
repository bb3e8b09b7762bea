package simulate_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

func TestScore(t *testing.T) {
	t0 := time.Date(2026, 3, 10, 2, 0, 0, 0, time.UTC)
	attacks := []simulate.Attack{
		{ID: "atk-01", Kind: simulate.KindLeakedReplay, TokenID: "tok-a", Start: t0, End: t0.Add(5 * time.Minute),
			EventIDs: []string{"e-a1", "e-a2"}, ExpectedDetectors: []string{detect.NewNetwork, detect.VolumeSpike}},
		{ID: "atk-02", Kind: simulate.KindUseAfterRevoke, TokenID: "tok-b", Start: t0, End: t0.Add(time.Hour),
			EventIDs: []string{"e-b1"}, ExpectedDetectors: []string{detect.UseAfterRevoke}},
		{ID: "atk-03", Kind: simulate.KindScopeProbing, TokenID: "tok-c", Start: t0, End: t0.Add(time.Minute),
			EventIDs: []string{"e-c1"}, ExpectedDetectors: []string{detect.ScopeProbing}},
	}
	an := func(det, token, event string, at time.Time) events.AnomalyDetected {
		return events.AnomalyDetected{Detector: det, TokenID: token, EventID: event, EventTime: at}
	}
	anomalies := []events.AnomalyDetected{
		an(detect.NewNetwork, "tok-a", "e-a1", t0.Add(30*time.Second)),     // TP: listed event
		an(detect.VolumeSpike, "tok-a", "e-x", t0.Add(2*time.Minute)),      // TP: inside the interval
		an(detect.OddHours, "tok-a", "e-y", t0.Add(10*time.Minute)),        // FP: after the interval
		an(detect.UseAfterRevoke, "tok-b", "e-b1", t0.Add(90*time.Minute)), // TP: its event, time aside
		an(detect.NewNetwork, "tok-z", "e-a2", t0.Add(time.Minute)),        // FP: another token
	}
	wall := func(a events.AnomalyDetected) (time.Duration, bool) {
		return 3 * time.Millisecond, a.TokenID == "tok-a"
	}
	r := simulate.ScoreWith(attacks, anomalies, simulate.ScoreOptions{WallLatency: wall})

	if r.Anomalies != 5 || r.TruePositives != 3 || r.FalsePositives != 2 || r.Precision != 0.6 {
		t.Errorf("overall anomalies/TP/FP/precision %d/%d/%d/%.2f, want 5/3/2/0.60", r.Anomalies, r.TruePositives, r.FalsePositives, r.Precision)
	}
	if r.Attacks != 3 || r.Detected != 2 || r.Recall != 2.0/3 {
		t.Errorf("attacks/detected/recall %d/%d/%.3f, want 3/2/0.667", r.Attacks, r.Detected, r.Recall)
	}
	if len(r.Undetected) != 1 || r.Undetected[0].ID != "atk-03" {
		t.Errorf("undetected %v, want atk-03", r.Undetected)
	}
	if len(r.FalseAlarms) != 2 {
		t.Errorf("%d false alarms listed, want 2", len(r.FalseAlarms))
	}
	want := map[string][4]float64{ // anomalies, precision, expected, recall
		detect.NewNetwork:     {2, 0.5, 1, 1},
		detect.VolumeSpike:    {1, 1, 1, 1},
		detect.OddHours:       {1, 0, 0, 1},
		detect.UseAfterRevoke: {1, 1, 1, 1},
		detect.ScopeProbing:   {0, 1, 1, 0},
		detect.MultiNetwork:   {0, 1, 0, 1},
	}
	for _, d := range r.Detectors {
		w, ok := want[d.Detector]
		if !ok {
			t.Errorf("unexpected detector row %q", d.Detector)
			continue
		}
		if float64(d.Anomalies) != w[0] || d.Precision != w[1] || float64(d.Expected) != w[2] || d.Recall != w[3] {
			t.Errorf("%s: anomalies %d precision %.2f expected %d recall %.2f, want %v", d.Detector, d.Anomalies, d.Precision, d.Expected, d.Recall, w)
		}
	}
	a := r.PerAttack[0]
	if !a.Detected || a.Delay != 30*time.Second || !a.HasWallLatency || a.WallLatency != 3*time.Millisecond {
		t.Errorf("atk-01 delay %s wall %s/%v, want 30s and 3ms", a.Delay, a.WallLatency, a.HasWallLatency)
	}
	if strings.Join(a.Detectors, ",") != "new_network,volume_spike" || len(a.Missed) != 0 {
		t.Errorf("atk-01 detectors %v missed %v", a.Detectors, a.Missed)
	}
	if b := r.PerAttack[1]; b.Delay != 90*time.Minute || b.HasWallLatency {
		t.Errorf("atk-02 delay %s, wall known %v", b.Delay, b.HasWallLatency)
	}
	if c := r.PerAttack[2]; c.Detected || strings.Join(c.Missed, ",") != detect.ScopeProbing {
		t.Errorf("atk-03 detected %v missed %v", c.Detected, c.Missed)
	}

	var buf bytes.Buffer
	if err := r.Print(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"overall", "0.600", "0.667", "atk-03", "undetected attacks:", "false alarms:", "3ms", "tok-z"} {
		if !strings.Contains(out, s) {
			t.Errorf("printed result lacks %q:\n%s", s, out)
		}
	}
}

func TestScoreEmpty(t *testing.T) {
	r := simulate.Score(nil, nil)
	if r.Precision != 1 || r.Recall != 1 || len(r.Detectors) != len(detect.Detectors()) {
		t.Fatalf("empty score %+v", r)
	}
	var buf bytes.Buffer
	r.Print(&buf)
	if !strings.Contains(buf.String(), "undetected attacks: none") {
		t.Fatalf("empty print:\n%s", buf.String())
	}
}
