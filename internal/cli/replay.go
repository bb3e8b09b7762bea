package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	policy, format string
	dir            string
	skipLedger     bool
	noProgress     bool
	wait           time.Duration
	remote         bool // --nats given
}

// runReplay is `cordon replay FILE.jsonl`.
func runReplay(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "replay", "replay FILE.jsonl|- [--policy FILE] [--nats URL --token-file FILE [--skip-ledger]] [-o table|json]")
	var f replayFlags
	f.clientFlags.register(fs)
	fs.StringVar(&f.policy, "policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section the private pipeline uses ($CORDON_POLICY; default thresholds without)")
	fs.StringVar(&f.dir, "dir", "", "keep the private pipeline's data (JetStream, chDB, state) in this directory instead of a temporary one")
	fs.BoolVar(&f.skipLedger, "skip-ledger", false, "replay usage events only (with --nats: leave the running system's token ledger alone)")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress bar")
	fs.DurationVar(&f.wait, "wait", 2*time.Minute, "longest wait for the auditor to catch up")
	format := outputFlag(fs, store.FormatTable, "table or json")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "nats" {
			f.remote = true
		}
	})
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one FILE.jsonl (or - for stdin)", errUsage)
	}
	if err := checkFormat(*format, store.FormatTable, store.FormatJSON); err != nil {
		return err
	}
	if f.wait <= 0 {
		return fmt.Errorf("%w: --wait %s: want a positive duration", errUsage, f.wait)
	}
	if f.remote && f.policy != "" {
		return fmt.Errorf("%w: --policy applies to the private pipeline; with --nats the running auditor's own policy is used", errUsage)
	}
	var in io.Reader = os.Stdin
	var size int64
	if pos[0] != "-" {
		file, err := os.Open(pos[0])
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		defer file.Close()
		if fi, err := file.Stat(); err == nil {
			size = fi.Size()
		}
		in = file
	}
	o := replay.Options{Size: size, SkipLedger: f.skipLedger, Wait: f.wait, Log: env.Log}
	if !f.noProgress {
		o.Progress = env.Stderr
	}
	var res *replay.Result
	if f.remote {
		res, err = f.replayRemote(ctx, in, o)
	} else {
		res, err = f.replayPrivate(ctx, env, in, o)
	}
	if err != nil {
		return err
	}
	if *format == store.FormatJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(replayJSON(res)); err != nil {
			return err
		}
		return res.PrintSummary(env.Stderr)
	}
	if err := replay.PrintAnomalies(env.Stdout, res.Anomalies); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	return res.PrintSummary(env.Stdout)
}

// replayPrivate runs the replay through a private embedded pipeline.
func (f *replayFlags) replayPrivate(ctx context.Context, env *Env, in io.Reader, o replay.Options) (*replay.Result, error) {
	cfg, err := loadDetectors(f.policy)
	if err != nil {
		return nil, err
	}
	p, err := replay.Start(ctx, replay.PipelineOptions{Dir: f.dir, Detectors: &cfg, Backend: pipelineBackend,
		Log: env.Log.Level(max(env.Log.GetLevel(), zerolog.WarnLevel))})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	o.JS, o.Auditor = p.JS, p.Watcher()
	return replay.Run(ctx, in, o)
}

// replayRemote replays into a running system: its auditor analyses the
// events, and only anomalies of replayed events are reported.
func (f *replayFlags) replayRemote(ctx context.Context, in io.Reader, o replay.Options) (*replay.Result, error) {
	cl, closeNC, err := f.client("cordon-replay")
	if err != nil {
		return nil, err
	}
	defer closeNC()
	sctx, cancel := context.WithTimeout(ctx, f.timeout)
	_, err = cl.Status(sctx)
	cancel()
	if err != nil {
		return nil, explain(err)
	}
	js, err := jetstream.New(cl.NC, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	o.JS, o.Auditor, o.Shared = js, clientWatcher{cl}, true
	return replay.Run(ctx, in, o)
}

// clientWatcher follows a remote auditor through its status requests.
type clientWatcher struct{ c *auditor.Client }

func (w clientWatcher) Status(ctx context.Context) (auditor.Stats, error) { return w.c.Status(ctx) }

// replayJSON is the JSON form of a replay's result.
func replayJSON(r *replay.Result) any {
	type anomaly struct {
		Detector  string    `json:"detector"`
		Severity  string    `json:"severity"`
		TokenID   string    `json:"token_id"`
		Tenant    string    `json:"tenant"`
		Holder    string    `json:"holder"`
		EventTime time.Time `json:"event_time"`
		EventID   string    `json:"event_id"`
		SourceIP  string    `json:"source_ip,omitempty"`
		Seen      string    `json:"seen"`
		Baseline  string    `json:"baseline"`
		AnomalyID string    `json:"anomaly_id"`
	}
	out := struct {
		Lines     int              `json:"lines"`
		Usage     int              `json:"usage"`
		Ledger    int              `json:"ledger"`
		Skipped   int              `json:"skipped"`
		Bad       int              `json:"bad"`
		BadLines  []replay.BadLine `json:"bad_lines"`
		Anomalies []anomaly        `json:"anomalies"`
	}{Lines: r.Lines, Usage: r.Usage, Ledger: r.Ledger, Skipped: r.Skipped, Bad: r.Bad, BadLines: r.BadLines, Anomalies: []anomaly{}}
	if out.BadLines == nil {
		out.BadLines = []replay.BadLine{}
	}
	for _, a := range r.Anomalies {
		out.Anomalies = append(out.Anomalies, anomaly{a.Detector, a.Severity, a.TokenID, a.Tenant, a.Holder, a.EventTime, a.EventID,
			a.SourceIP, a.Evidence.Seen, a.Evidence.Baseline, a.AnomalyID})
	}
	return out
}
