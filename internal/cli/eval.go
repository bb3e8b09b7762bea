package cli

import (
	"context"
	"fmt"

	"github.com/cordonhq/cordon/internal/replay"
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

// runSimulate is `cordon simulate --out DIR`.
func runSimulate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "simulate", "simulate --out DIR [--scenario FILE] [--seed N] [--days N] [--holders N] [--events N] [--attacks-per-kind N]")
	j := replay.SimulateJob{Stdout: env.Stdout}
	j.RegisterFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if err := usageOf(j.Validate()); err != nil {
		return err
	}
	_, err := j.Run()
	return usageOf(err)
}

// runEval is `cordon eval`: simulate a scenario, replay it through the
// real pipeline, score the anomalies, and hold them to the quality bar.
func runEval(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "eval", "eval [--scenario FILE] [--seed N] [--policy FILE] [--min-recall 0.95] [--max-false-alarms 1] [-o table|json]")
	j := replay.EvalJob{Stdout: env.Stdout, Stderr: env.Stderr}
	j.RegisterFlags(fs)
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
	if err := usageOf(j.Validate()); err != nil {
		return err
	}
	p, err := privatePipeline(env, j.PolicyFile)
	if err != nil {
		return err
	}
	j.Eval.Pipeline, j.Eval.Log, j.JSON = p, env.Log, *format == store.FormatJSON
	_, err = j.Run(ctx)
	return usageOf(err)
}
