package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
)

// Files `cordon simulate` writes.
const (
	simulateEvents = replay.EventsFile
	simulateLabels = replay.LabelsFile
)

// errQuality is returned when `cordon eval` finds the detectors below the
// quality bar (exit status 1).
var errQuality = replay.ErrBelowGate

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

// runSimulate is `cordon simulate --out DIR`.
func runSimulate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "simulate", "simulate --out DIR [--scenario FILE] [--seed N] [--days N] [--holders N] [--events N] [--attacks-per-kind N]")
	j := replay.SimulateJob{Stdout: env.Stdout}
	fs.StringVar(&j.Out, "out", "", "directory to write "+simulateEvents+" and "+simulateLabels+" to (created; required)")
	var sf scenarioFlags
	sf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if j.Out == "" {
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	}
	var err error
	if j.Scenario, err = sf.scenario(fs); err != nil {
		return err
	}
	j.ScenarioFile = sf.file
	_, err = j.Run()
	return err
}

// runEval is `cordon eval`: simulate a scenario, replay it through the
// real pipeline, score the anomalies, and hold them to the quality bar.
func runEval(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "eval", "eval [--scenario FILE] [--seed N] [--policy FILE] [--min-recall 0.95] [--max-false-alarms 1] [-o table|json]")
	var sf scenarioFlags
	sf.register(fs)
	j := replay.EvalJob{Gate: replay.DefaultGate, Stdout: env.Stdout, Stderr: env.Stderr}
	fs.StringVar(&j.PolicyFile, "policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section is evaluated ($CORDON_POLICY; default thresholds without)")
	fs.Float64Var(&j.Gate.MinRecall, "min-recall", j.Gate.MinRecall, "fail (exit status 1) when any attack variant's recall is below this")
	fs.Float64Var(&j.Gate.MaxFalseAlarms, "max-false-alarms", j.Gate.MaxFalseAlarms, "fail (exit status 1) when any benign variant has more false alarms than this per 1,000 benign tokens per day")
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
	switch {
	case j.Gate.MinRecall < 0 || j.Gate.MinRecall > 1:
		return fmt.Errorf("%w: --min-recall %v: want a value in [0, 1]", errUsage, j.Gate.MinRecall)
	case j.Gate.MaxFalseAlarms < 0:
		return fmt.Errorf("%w: --max-false-alarms %v: want a value of at least 0", errUsage, j.Gate.MaxFalseAlarms)
	}
	sc, err := sf.scenario(fs)
	if err != nil {
		return err
	}
	cfg, err := loadDetectors(j.PolicyFile)
	if err != nil {
		return err
	}
	j.Eval = replay.EvalOptions{Scenario: sc, Pipeline: replay.PipelineOptions{Detectors: &cfg, Backend: pipelineBackend,
		Log: env.Log.Level(max(env.Log.GetLevel(), zerolog.WarnLevel))}, Log: env.Log}
	if !*noProgress {
		j.Eval.Progress = env.Stderr
	}
	j.ScenarioFile, j.AttackAfterClamped, j.JSON = sf.file, sf.attackAfterClamped, *format == store.FormatJSON
	_, err = j.Run(ctx)
	return err
}
