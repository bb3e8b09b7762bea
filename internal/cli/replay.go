package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// pipelineBackend, when set, opens the store of private pipelines (tests
// swap it in: chDB holds one data path per process).
var pipelineBackend func(ctx context.Context) (store.Backend, error)

// runReplay is `cordon replay FILE.jsonl`.
func runReplay(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "replay", "replay FILE.jsonl|- [--policy FILE] [--dir DIR [--fresh|--continue]] [--sort] [--nats URL --token-file FILE [--skip-ledger]] [-o table|json]")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprint(env.Stderr, "\n"+replay.Help)
	}
	j := replay.Job{Options: replay.Options{Log: env.Log}, Stdout: env.Stdout, Stderr: env.Stderr}
	j.RegisterFlags(fs)
	var c clientFlags
	c.register(fs)
	format := outputFlag(fs, store.FormatTable, "table or json")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		j.Input = pos[0]
	}
	if flagGiven(fs, "nats") {
		j.Remote = func() (*auditor.Client, func(), error) { return c.client(env, "cordon-replay") }
		j.StatusTimeout = c.Timeout
	}
	if err := usageOf(j.Validate()); err != nil {
		return err
	}
	if err := checkFormat(*format, store.FormatTable, store.FormatJSON); err != nil {
		return err
	}
	j.JSON = *format == store.FormatJSON
	if j.Remote != nil {
		_, err = j.Run(ctx)
		return c.Explain(err)
	}
	dir := j.Pipeline.Dir
	if j.Pipeline, err = privatePipeline(env, j.PolicyFile); err != nil {
		return err
	}
	j.Pipeline.Dir = dir
	_, err = j.Run(ctx)
	return err
}

// privatePipeline returns the options of a private pipeline with the
// detectors of a policy file ("": the default thresholds), which logs
// warnings and worse only.
func privatePipeline(env *Env, policyFile string) (replay.PipelineOptions, error) {
	cfg, err := loadDetectors(policyFile)
	if err != nil {
		return replay.PipelineOptions{}, err
	}
	return replay.PipelineOptions{Detectors: &cfg, Backend: pipelineBackend, Log: env.Log.Level(max(env.Log.GetLevel(), zerolog.WarnLevel))}, nil
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
