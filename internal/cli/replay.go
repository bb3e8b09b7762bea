package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// pipelineBackend, when set, opens the store of private pipelines (tests
// swap it in: chDB holds one data path per process).
var pipelineBackend func(ctx context.Context) (store.Backend, error)

// replayFlags are the options of `cordon replay`.
type replayFlags struct {
	clientFlags
	policy         string
	dir            string
	fresh, cont    bool
	noProgress     bool
	remote         bool // --nats given
	policyFromFlag bool
}

// runReplay is `cordon replay FILE.jsonl`.
func runReplay(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "replay", "replay FILE.jsonl|- [--policy FILE] [--dir DIR [--fresh|--continue]] [--sort] [--nats URL --token-file FILE [--skip-ledger]] [-o table|json]")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprint(env.Stderr, "\n"+replay.Help)
	}
	var f replayFlags
	j := replay.Job{Options: replay.Options{Log: env.Log}, Stdout: env.Stdout, Stderr: env.Stderr}
	o := &j.Options
	f.clientFlags.register(fs)
	fs.StringVar(&f.policy, "policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section the private pipeline uses; a file with only detectors: (and response:) will do ($CORDON_POLICY; default thresholds without)")
	fs.StringVar(&f.dir, "dir", "", "keep the private pipeline's data (JetStream, chDB, state) in this directory, to query it with cordon sql --replay-dir")
	fs.BoolVar(&f.fresh, "fresh", false, "with --dir: replace the previous replay in it")
	fs.BoolVar(&f.cont, "continue", false, "with --dir: replay on top of the previous replay in it (later events; only the new anomalies are reported)")
	fs.BoolVar(&o.Sort, "sort", false, "sort the input by event time in memory (about its size) instead of refusing an input out of order")
	fs.DurationVar(&o.Tolerance, "order-tolerance", replay.DefaultTolerance, "how far an event's time may lie before the latest one above it (0: strictly in order)")
	fs.BoolVar(&o.SkipLedger, "skip-ledger", false, "replay usage events only (with --nats: leave the running system's token ledger alone)")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress output")
	fs.DurationVar(&o.Wait, "wait", 2*time.Minute, "longest wait for the auditor to catch up")
	format := outputFlag(fs, store.FormatTable, "table or json")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "nats":
			f.remote = true
		case "policy":
			f.policyFromFlag = true
		}
	})
	if err := f.check(pos, o, *format); err != nil {
		return err
	}
	j.Input, j.JSON = pos[0], *format == store.FormatJSON
	if o.Tolerance == 0 {
		o.Tolerance = time.Nanosecond // strictly in order (0 would mean the default)
	}
	if !f.noProgress {
		o.Progress = env.Stderr
	}
	if f.remote {
		j.Remote = func() (*auditor.Client, func(), error) { return f.client(env, "cordon-replay") }
		j.StatusTimeout = f.Timeout
		_, err = j.Run(ctx)
		return f.Explain(err)
	}
	cfg, err := loadDetectors(f.policy)
	if err != nil {
		return err
	}
	j.Pipeline = replay.PipelineOptions{Dir: f.dir, Reuse: replay.DirRefuse, Detectors: &cfg, Backend: pipelineBackend,
		Log: env.Log.Level(max(env.Log.GetLevel(), zerolog.WarnLevel))}
	switch {
	case f.fresh:
		j.Pipeline.Reuse = replay.DirFresh
	case f.cont:
		j.Pipeline.Reuse = replay.DirContinue
	}
	_, err = j.Run(ctx)
	return err
}

// check validates the flags and arguments.
func (f *replayFlags) check(pos []string, o *replay.Options, format string) error {
	switch {
	case len(pos) != 1:
		return fmt.Errorf("%w: want one FILE.jsonl (or - for stdin)", errUsage)
	case o.Wait <= 0:
		return fmt.Errorf("%w: --wait %s: want a positive duration", errUsage, o.Wait)
	case o.Tolerance < 0:
		return fmt.Errorf("%w: --order-tolerance %s: want 0 (strictly in order) or more", errUsage, o.Tolerance)
	case f.remote && f.policyFromFlag:
		return fmt.Errorf("%w: --policy applies to the private pipeline; with --nats the running auditor's own policy is used", errUsage)
	case f.remote && f.dir != "":
		return fmt.Errorf("%w: --dir applies to the private pipeline; with --nats the events go to the running system", errUsage)
	case f.fresh && f.cont:
		return fmt.Errorf("%w: --fresh and --continue: choose one", errUsage)
	case (f.fresh || f.cont) && f.dir == "":
		return fmt.Errorf("%w: --fresh and --continue apply to a replay directory: add --dir DIR", errUsage)
	}
	return checkFormat(format, store.FormatTable, store.FormatJSON)
}

// isTerminal says whether w is a terminal (colour and progress bars are
// for terminals only; a file or a pipe gets plain text).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
