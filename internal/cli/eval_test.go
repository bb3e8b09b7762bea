//go:build !nochdb

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/simulate"
)

const scenarios = "../../testdata/scenarios/"

// TestEvalQualityBar is the quality bar of issue 9: `cordon eval` with its
// defaults — the default scenario, recall ≥ 0.95 on every attack variant,
// ≤ 1 false alarm per 1,000 benign tokens per day on every benign variant —
// through the real pipeline (JetStream → auditor → detectors → ANOMALIES).
// It fails when detection drops below the bar.
func TestEvalQualityBar(t *testing.T) {
	if testing.Short() {
		t.Skip("replays the default scenario through the pipeline")
	}
	env, out, _ := testEnv()
	err := runEval(context.Background(), env, []string{"--no-progress"})
	t.Logf("cordon eval:\n%s", out.String())
	if err != nil {
		t.Fatalf("cordon eval: %v", err)
	}
}

// TestEvalFailsBelowTheBar: a scenario whose attack is, by construction,
// the workload's own behaviour cannot be detected; `cordon eval` must fail
// (exit status 1) and say which variant is below the bar.
func TestEvalFailsBelowTheBar(t *testing.T) {
	env, out, _ := testEnv()
	err := runEval(context.Background(), env, []string{"--no-progress", "--scenario", scenarios + "indistinguishable.yaml"})
	if !errors.Is(err, errQuality) {
		t.Fatalf("cordon eval: %v, want %v\n%s", err, errQuality, out.String())
	}
	for _, want := range []string{"FAILED", "attack looks_like_the_workload: recall", "want at least 0.95"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestEvalJSON: -o json writes the whole report; with a lenient bar the
// command succeeds.
func TestEvalJSON(t *testing.T) {
	env, out, errb := testEnv()
	err := runEval(context.Background(), env, []string{"--no-progress", "--scenario", scenarios + "small.yaml", "-o", "json",
		"--min-recall", "0", "--max-false-alarms", "1000000"})
	if err != nil {
		t.Fatalf("cordon eval: %v\n%s", err, errb.String())
	}
	var res struct {
		Scenario struct {
			Name        string `json:"name"`
			UsageEvents int    `json:"usage_events"`
		} `json:"scenario"`
		Report struct {
			Attacks        int `json:"attacks"`
			AttackVariants []struct {
				Variant string  `json:"variant"`
				Recall  float64 `json:"recall"`
			} `json:"attack_variants"`
			BenignVariants []struct {
				Variant   string  `json:"variant"`
				TokenDays int     `json:"token_days"`
				Per1000   float64 `json:"per_1000_token_days"`
			} `json:"benign_variants"`
			TimeToDetect struct {
				N int `json:"n"`
			} `json:"time_to_detect"`
		} `json:"report"`
		Gate struct {
			Passed    bool    `json:"passed"`
			MinRecall float64 `json:"min_recall"`
		} `json:"gate"`
		Replay struct {
			Events int `json:"events"`
		} `json:"replay"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out.String())
	}
	sc, err := simulate.LoadScenario(scenarios + "small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if res.Scenario.Name != "small" || res.Scenario.UsageEvents == 0 || res.Replay.Events == 0 || !res.Gate.Passed || res.Gate.MinRecall != 0 ||
		len(res.Report.AttackVariants) != len(sc.Attacks) || len(res.Report.BenignVariants) != len(sc.Benign)+1 ||
		res.Report.BenignVariants[0].Variant != simulate.Steady || res.Report.BenignVariants[0].TokenDays == 0 {
		t.Errorf("json result %+v", res)
	}
	if !strings.Contains(errb.String(), "scenario small") {
		t.Errorf("no scenario line on stderr with -o json: %q", errb.String())
	}
}

func TestEvalFlags(t *testing.T) {
	bad := writeFile(t, "bad.yaml", "name: bad\nseed: 1\ndayz: 3\n")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"format", []string{"-o", "csv"}, `-o "csv"`},
		{"recall above 1", []string{"--min-recall", "1.5"}, "--min-recall 1.5"},
		{"negative false alarms", []string{"--max-false-alarms", "-1"}, "--max-false-alarms -1"},
		{"argument", []string{"extra"}, `unexpected argument "extra"`},
		{"no holders", []string{"--holders", "0"}, "--holders 0"},
		{"one day", []string{"--days", "1"}, "--days 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, _, _ := testEnv()
			err := runEval(context.Background(), env, append([]string{"--no-progress"}, c.args...))
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want a usage error with %q", err, c.want)
			}
		})
	}
	env, _, _ := testEnv()
	err := runEval(context.Background(), env, []string{"--no-progress", "--scenario", bad})
	if !errors.Is(err, simulate.ErrScenario) || !strings.Contains(err.Error(), "bad.yaml:3") || !strings.Contains(err.Error(), `"dayz" (did you mean "days"?)`) {
		t.Fatalf("bad scenario: %v, want an error naming file, line and field", err)
	}
	if err := runEval(context.Background(), env, []string{"--no-progress", "--scenario", filepath.Join(t.TempDir(), "none.yaml")}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing scenario: %v", err)
	}
}

// TestSimulateScenarioFile: `cordon simulate --scenario` writes the events
// and labels of that scenario.
func TestSimulateScenarioFile(t *testing.T) {
	dir := t.TempDir()
	env, out, _ := testEnv()
	if err := runSimulate(context.Background(), env, []string{"--out", dir, "--scenario", scenarios + "small.yaml", "--seed", "5"}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, simulateLabels))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := simulate.ReadLabels(f)
	if err != nil {
		t.Fatal(err)
	}
	if l.Scenario.Name != "small" || l.Scenario.Seed != 5 || len(l.Attacks) != 6 || len(l.Exposures) == 0 || l.TokenDays[simulate.Steady] == 0 {
		t.Fatalf("labels: scenario %s seed %d, %d attacks, %d exposures", l.Scenario.Name, l.Scenario.Seed, len(l.Attacks), len(l.Exposures))
	}
	for _, want := range []string{"scenario small", "labelled attacks", "benign exposures", "replay it with"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("simulate output lacks %q:\n%s", want, out.String())
		}
	}
}
