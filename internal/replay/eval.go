package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

// EvalOptions configure Eval.
type EvalOptions struct {
	// Scenario is simulated and replayed (simulate.DefaultScenario() when
	// it has no start).
	Scenario simulate.Scenario
	// Pipeline configures the embedded pipeline the scenario goes through.
	Pipeline PipelineOptions
	// Progress, when set, shows the replay's progress bar.
	Progress io.Writer
	Log      zerolog.Logger
}

// EvalResult is an evaluation: the data, the replay and the report.
type EvalResult struct {
	Dataset *simulate.Dataset
	Replay  *Result
	Report  simulate.Report
	// Generate is the time the simulation took.
	Generate time.Duration
}

// Eval generates a labelled scenario, replays it through a private embedded
// pipeline (JetStream → auditor → detectors → ANOMALIES and ClickHouse)
// and scores the anomalies that came out of the ANOMALIES stream against
// the labels: recall per attack variant, false alarms per benign variant.
// The wall latency of an attack is the time from publishing its first
// event to receiving its first detecting anomaly.
func Eval(ctx context.Context, o EvalOptions) (*EvalResult, error) {
	sc := o.Scenario
	if sc.Start.IsZero() {
		sc = simulate.DefaultScenario()
	}
	start := time.Now()
	ds, err := simulate.Generate(sc)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	gen := time.Since(start)
	var buf bytes.Buffer
	if err := ds.WriteJSONL(&buf); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	p, err := Start(ctx, o.Pipeline)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	res, err := Run(ctx, bytes.NewReader(buf.Bytes()), Options{
		JS: p.JS, Auditor: p.Watcher(), Progress: o.Progress, Size: int64(buf.Len()), RecordTimes: true, Log: o.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("eval: replay: %w", err)
	}
	return &EvalResult{Dataset: ds, Replay: res, Report: Score(ds, res), Generate: gen}, nil
}

// Score scores a replay of a dataset: the anomalies it produced against
// the dataset's labels, with the wall latency of each detection when the
// replay recorded publication times.
func Score(ds *simulate.Dataset, res *Result) simulate.Report {
	received := make(map[string]time.Time, len(res.Anomalies))
	for _, a := range res.Anomalies {
		received[a.AnomalyID] = a.Received
	}
	return simulate.ScoreLabels(ds.Labels(), res.AnomalyPayloads(), simulate.ScoreOptions{
		WallLatency: func(an events.AnomalyDetected, a simulate.Attack) (time.Duration, bool) {
			got, ok := received[an.AnomalyID]
			if !ok {
				return 0, false
			}
			first, ok := firstPublished(a, res.PublishedAt)
			if !ok {
				return 0, false
			}
			return got.Sub(first), true
		},
	})
}

// firstPublished returns when the first event of attack a was published.
func firstPublished(a simulate.Attack, published map[uuid.UUID]time.Time) (time.Time, bool) {
	var first time.Time
	for _, id := range a.EventIDs {
		u, err := uuid.Parse(id)
		if err != nil {
			continue
		}
		if t, ok := published[u]; ok && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	return first, !first.IsZero()
}

// ErrBelowGate is returned by EvalJob.Run when an attack variant's recall
// or a benign variant's false alarms miss the gate.
var ErrBelowGate = errors.New("below the quality bar")

// Gate is the quality bar an evaluation holds the detectors to: every
// attack variant's recall at least MinRecall, every benign variant at most
// MaxFalseAlarms false alarms per 1,000 benign token-days.
type Gate struct {
	MinRecall      float64 `json:"min_recall"`
	MaxFalseAlarms float64 `json:"max_false_alarms_per_1000_token_days"`
}

// DefaultGate is the quality bar of `cordon eval`.
var DefaultGate = Gate{MinRecall: 0.95, MaxFalseAlarms: 1}

// String reads "recall ≥ 0.95 per attack variant, ≤ 1 false alarms per
// 1,000 benign token-days per benign variant".
func (g Gate) String() string {
	return fmt.Sprintf("recall ≥ %.2f per attack variant, ≤ %g false alarms per 1,000 benign token-days per benign variant", g.MinRecall, g.MaxFalseAlarms)
}

// EvalJob is an evaluation as `cordon eval` runs it once its flags are
// parsed: it says what it evaluates, runs Eval, writes the scores (a report
// for people, or EvalJSON) and holds them to the gate.
type EvalJob struct {
	// Eval configures the scenario, its pipeline and the progress.
	Eval EvalOptions
	// ScenarioFile and PolicyFile name where the scenario and the
	// detectors' thresholds come from ("": the defaults).
	ScenarioFile, PolicyFile string
	// AttackAfterClamped notes that the scenario was shortened below its
	// attacks' start, which was moved up.
	AttackAfterClamped bool
	// Gate is the quality bar.
	Gate Gate
	// JSON writes EvalJSON to Stdout and the text to Stderr; otherwise
	// the text goes to Stdout.
	JSON           bool
	Stdout, Stderr io.Writer

	flags *evalFlags // RegisterFlags
}

// Run runs the evaluation. Detectors below the gate make an error wrapping
// ErrBelowGate, after the scores and the failing variants are written. A
// job whose flags were registered (RegisterFlags) first loads and sizes
// the scenario they name: a scenario they make invalid is an ErrInvalid
// error.
func (j EvalJob) Run(ctx context.Context) (*EvalResult, error) {
	j, err := j.withFlags()
	if err != nil {
		return nil, err
	}
	text := j.Stdout
	if j.JSON {
		text = j.Stderr
	}
	sc, scenario, detectors := j.Eval.Scenario, "the default scenario", "default thresholds"
	if j.ScenarioFile != "" {
		scenario = j.ScenarioFile
	}
	if j.PolicyFile != "" {
		detectors = "thresholds of " + j.PolicyFile
	}
	fmt.Fprintf(text, "scenario %s (%s), seed %d, %d days; detectors: %s\n", sc.Name, scenario, sc.Seed, sc.Days, detectors)
	if j.AttackAfterClamped {
		fmt.Fprintf(text, "(attacks on learnt holders start after %s in this shortened scenario)\n", sc.AttackAfter)
	}
	fmt.Fprintln(text, "pipeline: JetStream → auditor → detectors → ANOMALIES stream and ClickHouse (chDB), private and temporary")
	res, err := Eval(ctx, j.Eval)
	if err != nil {
		return nil, err
	}
	rep := res.Report
	failures := rep.Gate(j.Gate.MinRecall, j.Gate.MaxFalseAlarms)
	if j.JSON {
		enc := json.NewEncoder(j.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res.JSON(j.Gate, failures)); err != nil {
			return res, err
		}
	} else if err := res.print(text); err != nil {
		return res, err
	}
	if len(failures) > 0 {
		fmt.Fprintf(text, "quality bar (%s): FAILED\n", j.Gate)
		for _, f := range failures {
			fmt.Fprintf(text, "  %s\n", f)
		}
		return res, fmt.Errorf("%w: %d of %d variants fail it", ErrBelowGate, len(failures), len(rep.AttackVariants)+len(rep.BenignVariants))
	}
	_, err = fmt.Fprintf(text, "quality bar (%s): met\n", j.Gate)
	return res, err
}

// print writes the evaluation for people: the world, the scores, the times
// to detect and the replay's summary.
func (r *EvalResult) print(w io.Writer) error {
	ds, rep := r.Dataset, r.Report
	fmt.Fprintf(w, "world: %d holders, %d tokens, %d usage and %d ledger events, %d attacks of %d variants, %d benign token-days (generated in %v)\n\n",
		ds.Holders, ds.Tokens, ds.UsageEvents, ds.LedgerEvents, len(ds.Attacks), len(ds.AttackVariants), ds.BenignTokenDays, r.Generate.Round(time.Millisecond))
	if err := rep.Print(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "time to detect, event time (attack start → triggering event), median / max: %s over %d attacks\n", rep.TimeToDetect, rep.TimeToDetect.N)
	fmt.Fprintf(w, "time to detect, wall clock (first attack event published → anomaly received), median / max: %s\n", rep.WallLatency)
	fmt.Fprintln(w)
	if err := r.Replay.PrintSummary(w); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w)
	return err
}

// EvalJSON is the JSON form of an evaluation (`cordon eval -o json`).
type EvalJSON struct {
	Scenario EvalWorld       `json:"scenario"`
	Report   simulate.Report `json:"report"`
	Gate     GateVerdict     `json:"gate"`
	Replay   EvalReplay      `json:"replay"`
}

// EvalWorld is the simulated world of an evaluation.
type EvalWorld struct {
	Name            string    `json:"name"`
	File            string    `json:"file,omitempty"`
	Seed            uint64    `json:"seed"`
	Start           time.Time `json:"start"`
	Days            int       `json:"days"`
	Holders         int       `json:"holders"`
	Tokens          int       `json:"tokens"`
	UsageEvents     int       `json:"usage_events"`
	LedgerEvents    int       `json:"ledger_events"`
	Attacks         int       `json:"attacks"`
	BenignTokenDays int       `json:"benign_token_days"`
}

// GateVerdict is the gate and what missed it.
type GateVerdict struct {
	Gate
	Passed   bool     `json:"passed"`
	Failures []string `json:"failures"`
}

// EvalReplay is what the replay of an evaluation did.
type EvalReplay struct {
	Events    int     `json:"events"`
	Bad       int     `json:"bad_lines"`
	Anomalies int     `json:"anomalies"`
	Seconds   float64 `json:"seconds"`
}

// JSON returns the JSON form of the evaluation held to gate, which the
// variants in failures (Report.Gate's) missed.
func (r *EvalResult) JSON(gate Gate, failures []string) EvalJSON {
	ds := r.Dataset
	if failures == nil {
		failures = []string{}
	}
	return EvalJSON{
		Scenario: EvalWorld{ds.Scenario.Name, ds.Scenario.File, ds.Scenario.Seed, ds.Scenario.Start, ds.Scenario.Days, ds.Holders, ds.Tokens,
			ds.UsageEvents, ds.LedgerEvents, len(ds.Attacks), ds.BenignTokenDays},
		Report: r.Report,
		Gate:   GateVerdict{gate, len(failures) == 0, failures},
		Replay: EvalReplay{r.Replay.Events(), r.Replay.Bad, len(r.Replay.Anomalies), r.Replay.Elapsed.Seconds()},
	}
}
