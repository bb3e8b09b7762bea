package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
)

// Files `cordon simulate` writes.
const (
	simulateEvents = "usage.jsonl"
	simulateLabels = "labels.json"
)

// Defaults of the quality bar `cordon eval` holds the detectors to.
const (
	defaultMinRecall      = 0.95
	defaultMaxFalseAlarms = 1.0
)

// errQuality is returned when `cordon eval` finds the detectors below the
// quality bar (exit status 1).
var errQuality = errors.New("below the quality bar")

// scenarioFlags choose the scenario and size it; zero keeps what the
// scenario file says.
type scenarioFlags struct {
	file                           string
	seed                           uint64
	days, holders, events, perKind int
	attackAfterClamped             bool
}

func (s *scenarioFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.file, "scenario", "", "scenario file (YAML, see testdata/scenarios/); default: the embedded default scenario")
	fs.Uint64Var(&s.seed, "seed", 0, "random seed (default: the scenario's): the same seed gives the same events, ids and labels")
	fs.IntVar(&s.days, "days", 0, "days of simulated traffic (default: the scenario's)")
	fs.IntVar(&s.holders, "holders", 0, "scale the workloads to about this many holders (default: as the scenario says)")
	fs.IntVar(&s.events, "events", 0, "scale the rates to about this many normal usage events (default: as the scenario says)")
	fs.IntVar(&s.perKind, "attacks-per-kind", 0, "attacks of each variant (default: as the scenario says)")
}

// scenario loads the scenario and lays the flags given over it.
func (s *scenarioFlags) scenario(fs *flag.FlagSet) (simulate.Scenario, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var sc simulate.Scenario
	if s.file == "" {
		sc = simulate.DefaultScenario()
	} else {
		var err error
		if sc, err = simulate.LoadScenario(s.file); err != nil {
			return sc, err
		}
	}
	if set["seed"] {
		sc.Seed = s.seed
	}
	if set["days"] {
		if s.days < 2 {
			return sc, fmt.Errorf("%w: --days %d: want at least 2", errUsage, s.days)
		}
		sc.Days = s.days
		// Attacks on learnt holders start after AttackAfter: keep it inside
		// a shortened scenario.
		if limit := time.Duration(sc.Days-2) * 24 * time.Hour; sc.AttackAfter > limit {
			sc.AttackAfter, s.attackAfterClamped = limit, true
		}
	}
	for _, f := range []struct {
		name string
		v    int
		dst  *int
	}{{"holders", s.holders, &sc.Holders}, {"events", s.events, &sc.UsageEvents}, {"attacks-per-kind", s.perKind, &sc.AttacksPerKind}} {
		if !set[f.name] {
			continue
		}
		if f.v < 1 {
			return sc, fmt.Errorf("%w: --%s %d: want at least 1", errUsage, f.name, f.v)
		}
		*f.dst = f.v
	}
	if err := sc.Validate(); err != nil {
		return sc, fmt.Errorf("%w: %v", errUsage, err)
	}
	return sc, nil
}

func scenarioSource(file string) string {
	if file == "" {
		return "the default scenario"
	}
	return file
}

// runSimulate is `cordon simulate --out DIR`.
func runSimulate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "simulate", "simulate --out DIR [--scenario FILE] [--seed N] [--days N] [--holders N] [--events N] [--attacks-per-kind N]")
	out := fs.String("out", "", "directory to write "+simulateEvents+" and "+simulateLabels+" to (created; required)")
	var sf scenarioFlags
	sf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *out == "" {
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	}
	sc, err := sf.scenario(fs)
	if err != nil {
		return err
	}
	start := time.Now()
	ds, err := simulate.Generate(sc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	write := func(name string, fn func(io.Writer) error) error {
		path := filepath.Join(*out, name)
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		if err := fn(f); err != nil {
			f.Close()
			return fmt.Errorf("simulate: write %s: %w", path, err)
		}
		return f.Close()
	}
	if err := write(simulateEvents, ds.WriteJSONL); err != nil {
		return err
	}
	if err := write(simulateLabels, ds.WriteLabels); err != nil {
		return err
	}
	kinds := map[string]int{}
	for _, a := range ds.Attacks {
		kinds[a.Variant]++
	}
	fmt.Fprintf(env.Stdout, "scenario %s (%s), seed %d: %d days, %d holders, %d tokens\n", sc.Name, scenarioSource(sf.file), sc.Seed, sc.Days, ds.Holders, ds.Tokens)
	fmt.Fprintf(env.Stdout, "wrote %d events (%d usage, %d ledger) to %s\n", len(ds.Events), ds.UsageEvents, ds.LedgerEvents, filepath.Join(*out, simulateEvents))
	fmt.Fprintf(env.Stdout, "wrote %d labelled attacks (%s; %d attack events) and %d benign exposures to %s\n", len(ds.Attacks), countText(kinds),
		ds.AttackEvents, len(ds.Exposures), filepath.Join(*out, simulateLabels))
	fmt.Fprintf(env.Stdout, "(%v)  replay it with: cordon replay %s\n", time.Since(start).Round(time.Millisecond), filepath.Join(*out, simulateEvents))
	return nil
}

func countText(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// runEval is `cordon eval`: simulate a scenario, replay it through the
// real pipeline, score the anomalies, and hold them to the quality bar.
func runEval(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "eval", "eval [--scenario FILE] [--seed N] [--policy FILE] [--min-recall 0.95] [--max-false-alarms 1] [-o table|json]")
	var sf scenarioFlags
	sf.register(fs)
	pol := fs.String("policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section is evaluated ($CORDON_POLICY; default thresholds without)")
	minRecall := fs.Float64("min-recall", defaultMinRecall, "fail (exit status 1) when any attack variant's recall is below this")
	maxFA := fs.Float64("max-false-alarms", defaultMaxFalseAlarms, "fail (exit status 1) when any benign variant has more false alarms than this per 1,000 benign tokens per day")
	noProgress := fs.Bool("no-progress", false, "no progress bar")
	format := outputFlag(fs, store.FormatTable, "table or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if err := checkFormat(*format, store.FormatTable, store.FormatJSON); err != nil {
		return err
	}
	if *minRecall < 0 || *minRecall > 1 {
		return fmt.Errorf("%w: --min-recall %v: want a value in [0, 1]", errUsage, *minRecall)
	}
	if *maxFA < 0 {
		return fmt.Errorf("%w: --max-false-alarms %v: want a value of at least 0", errUsage, *maxFA)
	}
	sc, err := sf.scenario(fs)
	if err != nil {
		return err
	}
	cfg, err := loadDetectors(*pol)
	if err != nil {
		return err
	}
	o := replay.EvalOptions{Scenario: sc, Pipeline: replay.PipelineOptions{Detectors: &cfg, Backend: pipelineBackend,
		Log: env.Log.Level(max(env.Log.GetLevel(), zerolog.WarnLevel))}, Log: env.Log}
	if !*noProgress {
		o.Progress = env.Stderr
	}
	text := env.Stdout
	if *format == store.FormatJSON {
		text = env.Stderr
	}
	fmt.Fprintf(text, "scenario %s (%s), seed %d, %d days; detectors: %s\n", sc.Name, scenarioSource(sf.file), sc.Seed, sc.Days, detectorsSource(*pol))
	if sf.attackAfterClamped {
		fmt.Fprintf(text, "(attacks on learnt holders start after %s in this shortened scenario)\n", sc.AttackAfter)
	}
	fmt.Fprintln(text, "pipeline: JetStream → auditor → detectors → ANOMALIES stream and ClickHouse (chDB), private and temporary")
	res, err := replay.Eval(ctx, o)
	if err != nil {
		return err
	}
	rep := res.Report
	failures := rep.Gate(*minRecall, *maxFA)
	if *format == store.FormatJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(evalJSON(res, *minRecall, *maxFA, failures)); err != nil {
			return err
		}
	} else {
		ds := res.Dataset
		fmt.Fprintf(text, "world: %d holders, %d tokens, %d usage and %d ledger events, %d attacks of %d variants, %d benign token-days (generated in %v)\n\n",
			ds.Holders, ds.Tokens, ds.UsageEvents, ds.LedgerEvents, len(ds.Attacks), len(ds.AttackVariants), ds.BenignTokenDays, res.Generate.Round(time.Millisecond))
		if err := rep.Print(text); err != nil {
			return err
		}
		fmt.Fprintln(text)
		fmt.Fprintf(text, "time to detect, event time (attack start → triggering event), median / max: %s over %d attacks\n", rep.TimeToDetect, rep.TimeToDetect.N)
		fmt.Fprintf(text, "time to detect, wall clock (first attack event published → anomaly received), median / max: %s\n", rep.WallLatency)
		fmt.Fprintln(text)
		if err := res.Replay.PrintSummary(text); err != nil {
			return err
		}
		fmt.Fprintln(text)
	}
	if len(failures) > 0 {
		fmt.Fprintf(text, "quality bar (recall ≥ %.2f per attack variant, ≤ %g false alarms per 1,000 benign token-days per benign variant): FAILED\n", *minRecall, *maxFA)
		for _, f := range failures {
			fmt.Fprintf(text, "  %s\n", f)
		}
		return fmt.Errorf("%w: %d of %d variants fail it", errQuality, len(failures), len(rep.AttackVariants)+len(rep.BenignVariants))
	}
	fmt.Fprintf(text, "quality bar (recall ≥ %.2f per attack variant, ≤ %g false alarms per 1,000 benign token-days per benign variant): met\n", *minRecall, *maxFA)
	return nil
}

func detectorsSource(policyPath string) string {
	if policyPath == "" {
		return "default thresholds"
	}
	return "thresholds of " + policyPath
}

// evalJSON is the JSON form of an evaluation.
func evalJSON(res *replay.EvalResult, minRecall, maxFA float64, failures []string) any {
	ds := res.Dataset
	if failures == nil {
		failures = []string{}
	}
	type world struct {
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
	type gate struct {
		MinRecall      float64  `json:"min_recall"`
		MaxFalseAlarms float64  `json:"max_false_alarms_per_1000_token_days"`
		Passed         bool     `json:"passed"`
		Failures       []string `json:"failures"`
	}
	type run struct {
		Events    int     `json:"events"`
		Bad       int     `json:"bad_lines"`
		Anomalies int     `json:"anomalies"`
		Seconds   float64 `json:"seconds"`
	}
	return struct {
		Scenario world           `json:"scenario"`
		Report   simulate.Report `json:"report"`
		Gate     gate            `json:"gate"`
		Replay   run             `json:"replay"`
	}{
		Scenario: world{ds.Scenario.Name, ds.Scenario.File, ds.Scenario.Seed, ds.Scenario.Start, ds.Scenario.Days, ds.Holders, ds.Tokens,
			ds.UsageEvents, ds.LedgerEvents, len(ds.Attacks), ds.BenignTokenDays},
		Report: res.Report,
		Gate:   gate{minRecall, maxFA, len(failures) == 0, failures},
		Replay: run{res.Replay.Events(), res.Replay.Bad, len(res.Replay.Anomalies), res.Replay.Elapsed.Seconds()},
	}
}
