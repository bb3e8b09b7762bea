package simulate_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

var (
	defaultOnce sync.Once
	defaultDS   *simulate.Dataset
	defaultErr  error
)

// defaultDataset generates the default scenario once for all tests.
func defaultDataset(t *testing.T) *simulate.Dataset {
	t.Helper()
	defaultOnce.Do(func() { defaultDS, defaultErr = simulate.Generate(simulate.DefaultScenario()) })
	if defaultErr != nil {
		t.Fatal(defaultErr)
	}
	return defaultDS
}

func smallScenario() simulate.Scenario {
	sc := simulate.DefaultScenario()
	sc.Days, sc.Holders, sc.UsageEvents, sc.AttacksPerKind = 7, 15, 20_000, 1
	sc.AttackAfter = 4 * 24 * time.Hour
	return sc
}

// replay runs events through a fresh engine with the default thresholds.
func replay(t *testing.T, envs []events.Envelope) []events.AnomalyDetected {
	t.Helper()
	e, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var out []events.AnomalyDetected
	for _, env := range envs {
		out = append(out, e.Observe(env)...)
	}
	return out
}

// assertQuality checks the targets: precision and recall of at least 0.95
// and every attack detected.
func assertQuality(t *testing.T, ds *simulate.Dataset, res simulate.Result) {
	t.Helper()
	var buf bytes.Buffer
	if err := res.Print(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events (%d usage, %d ledger, %d in attacks), %d attacks\n%s",
		len(ds.Events), ds.UsageEvents, ds.LedgerEvents, ds.AttackEvents, len(ds.Attacks), buf.String())
	if res.Precision < 0.95 || res.Recall < 0.95 || len(res.Undetected) > 0 {
		t.Fatalf("precision %.3f, recall %.3f, %d undetected: want ≥ 0.95, ≥ 0.95 and none", res.Precision, res.Recall, len(res.Undetected))
	}
}

func TestDefaultScenarioDetection(t *testing.T) {
	ds := defaultDataset(t)
	start := time.Now()
	anomalies := replay(t, ds.Events)
	took := time.Since(start)
	t.Logf("replayed %d events in %s (%.0f events/s)", len(ds.Events), took.Round(time.Millisecond), float64(len(ds.Events))/took.Seconds())
	assertQuality(t, ds, simulate.Score(ds.Attacks, anomalies))
}

func TestOtherSeedsDetection(t *testing.T) {
	// The detectors are not tuned to one draw of the world.
	if testing.Short() {
		t.Skip("generates two more scenarios")
	}
	for _, seed := range []uint64{2, 3} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			sc := simulate.DefaultScenario()
			sc.Seed = seed
			ds, err := simulate.Generate(sc)
			if err != nil {
				t.Fatal(err)
			}
			assertQuality(t, ds, simulate.Score(ds.Attacks, replay(t, ds.Events)))
		})
	}
}

func TestDatasetShape(t *testing.T) {
	ds := defaultDataset(t)
	sc := ds.Scenario
	ids := map[uuid.UUID]bool{}
	tokens := map[string]*events.TokenIssued{}
	usage := map[string]*events.UsageDecided{}
	reasons := map[string]int{}
	var weekday, weekend, officeNight, officeDay int
	var prev time.Time
	for i, env := range ds.Events {
		if err := env.Validate(); err != nil {
			t.Fatalf("event %d does not validate: %v", i, err)
		}
		if env.Time.Before(prev) {
			t.Fatalf("event %d at %s before its predecessor at %s", i, env.Time, prev)
		}
		prev = env.Time
		if ids[env.ID] {
			t.Fatalf("event id %s repeated", env.ID)
		}
		ids[env.ID] = true
		switch p := env.Data.(type) {
		case *events.TokenIssued:
			tokens[p.TokenID] = p
			if p.RotatedFrom != "" && tokens[p.RotatedFrom] == nil {
				t.Fatalf("token %s rotated from unknown %s", p.TokenID, p.RotatedFrom)
			}
		case *events.UsageDecided:
			usage[env.ID.String()] = p
			if p.Decision == events.DecisionDeny {
				reasons[p.Reason]++
			}
			if wd := env.Time.Weekday(); wd == time.Saturday || wd == time.Sunday {
				weekend++
			} else {
				weekday++
			}
			// Office workloads (a weekday window claim) work in their
			// zone's daytime.
			if tk := tokens[p.TokenID]; tk != nil && len(tk.Claims.Windows) == 1 && len(tk.Claims.Windows[0].Days) == 5 && p.Decision == events.DecisionAllow {
				loc, _ := time.LoadLocation(tk.Claims.Windows[0].Zone)
				switch h := env.Time.In(loc).Hour(); {
				case h < 5:
					officeNight++
				case h >= 10 && h < 16:
					officeDay++
				}
			}
		}
	}
	normal := ds.UsageEvents - ds.AttackEvents
	if lo, hi := sc.UsageEvents*9/10, sc.UsageEvents*11/10; normal < lo || normal > hi {
		t.Errorf("%d normal usage events, want about %d", normal, sc.UsageEvents)
	}
	if rate := float64(reasons[detect.ReasonScopeMissing]) / float64(normal); rate < 0.0005 || rate > 0.01 {
		t.Errorf("scope_missing rate %.4f, want an occasional denial", rate)
	}
	for _, r := range []string{detect.ReasonRevoked, detect.ReasonExpired, simulate.ReasonNetwork, simulate.ReasonWindow} {
		if reasons[r] == 0 {
			t.Errorf("no %s denial at all", r)
		}
	}
	if len(tokens) <= sc.Holders {
		t.Errorf("%d tokens for %d holders: no rotation happened", len(tokens), sc.Holders)
	}
	days := sc.Days
	if perWeekend, perWeekday := float64(weekend)/float64(days*2/7), float64(weekday)/float64(days*5/7); perWeekend > 0.8*perWeekday {
		t.Errorf("%.0f requests a weekend day vs %.0f a weekday: no weekly rhythm", perWeekend, perWeekday)
	}
	if officeDay == 0 || officeNight > 0 {
		t.Errorf("office workloads: %d allowed requests in local daytime, %d at night", officeDay, officeNight)
	}

	kinds := map[string]int{}
	for _, a := range ds.Attacks {
		kinds[a.Kind]++
		if len(a.EventIDs) == 0 || a.End.Before(a.Start) || len(a.ExpectedDetectors) == 0 {
			t.Errorf("attack %s: %d events, %s–%s, expects %v", a.ID, len(a.EventIDs), a.Start, a.End, a.ExpectedDetectors)
		}
		if a.Start.Before(sc.Start.Add(sc.AttackAfter)) {
			t.Errorf("attack %s starts %s, before the baselines had %s", a.ID, a.Start, sc.AttackAfter)
		}
		for _, id := range a.EventIDs {
			u := usage[id]
			if u == nil || u.TokenID != a.TokenID {
				t.Fatalf("attack %s lists event %s that is not a use of its token", a.ID, id)
			}
		}
		for _, d := range a.ExpectedDetectors {
			if !slices.Contains(detect.Detectors(), d) {
				t.Errorf("attack %s expects unknown detector %q", a.ID, d)
			}
		}
	}
	for _, k := range simulate.AttackKinds() {
		if kinds[k] != sc.AttacksPerKind {
			t.Errorf("%d attacks of kind %s, want %d", kinds[k], k, sc.AttacksPerKind)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := simulate.Generate(smallScenario())
	other := smallScenario()
	other.Seed = 99
	c, _ := simulate.Generate(other)
	var ja, jb, jc, la, lb bytes.Buffer
	for _, w := range []struct {
		ds  *simulate.Dataset
		buf *bytes.Buffer
	}{{a, &ja}, {b, &jb}, {c, &jc}} {
		if err := w.ds.WriteJSONL(w.buf); err != nil {
			t.Fatal(err)
		}
	}
	a.WriteLabels(&la)
	b.WriteLabels(&lb)
	if !bytes.Equal(ja.Bytes(), jb.Bytes()) || !bytes.Equal(la.Bytes(), lb.Bytes()) {
		t.Fatal("the same scenario gave different events or labels")
	}
	if bytes.Equal(ja.Bytes(), jc.Bytes()) {
		t.Fatal("another seed gave the same events")
	}
}

func TestJSONLAndLabelsRoundTrip(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	var events1, labels bytes.Buffer
	if err := ds.WriteJSONL(&events1); err != nil {
		t.Fatal(err)
	}
	if err := ds.WriteLabels(&labels); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(events1.Bytes(), []byte("\n")); n != len(ds.Events) {
		t.Fatalf("%d lines for %d events", n, len(ds.Events))
	}
	back, err := simulate.ReadJSONL(bytes.NewReader(events1.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var events2 bytes.Buffer
	if err := simulate.WriteJSONL(&events2, back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(events1.Bytes(), events2.Bytes()) {
		t.Fatal("events changed through JSONL")
	}
	l, err := simulate.ReadLabels(&labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Attacks) != len(ds.Attacks) || l.Scenario.Seed != ds.Scenario.Seed || !slices.Equal(l.Attacks[0].EventIDs, ds.Attacks[0].EventIDs) {
		t.Fatal("labels changed through JSON")
	}
	// The replayed file detects as well as the generated events.
	res := simulate.Score(l.Attacks, replay(t, back))
	if len(res.Undetected) > 0 {
		t.Fatalf("%d attacks undetected from the JSONL replay", len(res.Undetected))
	}

	bad := strings.NewReader(strings.SplitN(events1.String(), "\n", 2)[0] + "\n{\"id\": 1}\n")
	if _, err := simulate.ReadJSONL(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: %v, want an error naming line 2", err)
	}
}

func TestScenarioValidate(t *testing.T) {
	tests := []struct {
		field string
		mod   func(*simulate.Scenario)
	}{
		{"days", func(s *simulate.Scenario) { s.Days = 1 }},
		{"tenants", func(s *simulate.Scenario) { s.Tenants = 100 }},
		{"holders", func(s *simulate.Scenario) { s.Holders = 2 }},
		{"services", func(s *simulate.Scenario) { s.Services = 2 }},
		{"rotation_grace", func(s *simulate.Scenario) { s.RotationGrace = s.RotateEvery }},
		{"attack_after", func(s *simulate.Scenario) { s.AttackAfter = 30 * 24 * time.Hour }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			sc := simulate.DefaultScenario()
			tt.mod(&sc)
			_, err := simulate.Generate(sc)
			if !errors.Is(err, simulate.ErrScenario) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Generate: %v, want an ErrScenario naming %s", err, tt.field)
			}
		})
	}
}
