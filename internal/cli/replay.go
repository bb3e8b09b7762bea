package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// pipelineBackend, when set, opens the store of private pipelines (tests
// swap it in: chDB holds one data path per process).
var pipelineBackend func(ctx context.Context) (store.Backend, error)

// Files `cordon simulate` writes.
const (
	simulateEvents = "usage.jsonl"
	simulateLabels = "labels.json"
)

// scenarioFlags size a simulation; zero keeps the default scenario's value.
type scenarioFlags struct {
	seed                           uint64
	days, holders, events, perKind int
}

func (s *scenarioFlags) register(fs interface {
	Uint64Var(*uint64, string, uint64, string)
	IntVar(*int, string, int, string)
}) {
	def := simulate.DefaultScenario()
	fs.Uint64Var(&s.seed, "seed", def.Seed, "random seed: the same seed gives the same events, ids and labels")
	fs.IntVar(&s.days, "days", def.Days, "days of simulated traffic")
	fs.IntVar(&s.holders, "holders", def.Holders, "calling workloads (spread over up to 5 tenants)")
	fs.IntVar(&s.events, "events", 0, "normal usage events (default: the default scenario's density, scaled by days and holders)")
	fs.IntVar(&s.perKind, "attacks-per-kind", def.AttacksPerKind, "attacks injected of each kind")
}

// scenario builds the scenario from the default one and the flags.
func (s *scenarioFlags) scenario() (simulate.Scenario, error) {
	sc := simulate.DefaultScenario()
	def := sc
	sc.Seed, sc.Days, sc.Holders, sc.AttacksPerKind = s.seed, s.days, s.holders, s.perKind
	if s.holders < 1 {
		return sc, fmt.Errorf("%w: --holders %d: want at least 1", errUsage, s.holders)
	}
	sc.Tenants = min(def.Tenants, s.holders)
	sc.UsageEvents = s.events
	if sc.UsageEvents == 0 {
		sc.UsageEvents = int(float64(def.UsageEvents) * float64(sc.Days) / float64(def.Days) * float64(sc.Holders) / float64(def.Holders))
		sc.UsageEvents = max(sc.UsageEvents, 1000)
	}
	// Attacks start after AttackAfter; keep it inside short scenarios.
	if sc.Days >= 2 {
		sc.AttackAfter = min(def.AttackAfter, time.Duration(sc.Days-2)*24*time.Hour)
	}
	if err := sc.Validate(); err != nil {
		return sc, fmt.Errorf("%w: %v", errUsage, err)
	}
	return sc, nil
}

// runSimulate is `cordon simulate --out DIR`.
func runSimulate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "simulate", "simulate --out DIR [--seed N] [--days N] [--holders N] [--events N] [--attacks-per-kind N]")
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
	sc, err := sf.scenario()
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
		kinds[a.Kind]++
	}
	fmt.Fprintf(env.Stdout, "wrote %d events (%d usage, %d ledger) over %d days, %d holders, seed %d, to %s\n",
		len(ds.Events), ds.UsageEvents, ds.LedgerEvents, sc.Days, sc.Holders, sc.Seed, filepath.Join(*out, simulateEvents))
	fmt.Fprintf(env.Stdout, "wrote %d labelled attacks (%s; %d attack events) to %s\n", len(ds.Attacks), countText(kinds), ds.AttackEvents,
		filepath.Join(*out, simulateLabels))
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

// runEval is `cordon eval`: simulate, replay through the real pipeline,
// score.
func runEval(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "eval", "eval [--seed N] [--days N] [--holders N] [--policy FILE] [--min-precision 0.95] [--min-recall 0.95]")
	var sf scenarioFlags
	sf.register(fs)
	pol := fs.String("policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section is evaluated ($CORDON_POLICY; default thresholds without)")
	minP := fs.Float64("min-precision", 0.95, "fail (exit status 1) below this overall precision")
	minR := fs.Float64("min-recall", 0.95, "fail (exit status 1) below this overall recall")
	noProgress := fs.Bool("no-progress", false, "no progress bar")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	sc, err := sf.scenario()
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
	fmt.Fprintf(env.Stdout, "scenario: seed %d, %d days, %d holders, ~%d usage events, %d attacks of each of %d kinds; detectors: %s\n",
		sc.Seed, sc.Days, sc.Holders, sc.UsageEvents, sc.AttacksPerKind, len(simulate.AttackKinds()), detectorsSource(*pol))
	fmt.Fprintln(env.Stdout, "pipeline: JetStream → auditor → detectors → ANOMALIES stream and ClickHouse (chDB), private and temporary")
	res, err := replay.Eval(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	if err := res.Score.Print(env.Stdout); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	printTimeToDetect(env.Stdout, res.Score)
	fmt.Fprintln(env.Stdout)
	if err := res.Replay.PrintSummary(env.Stdout); err != nil {
		return err
	}
	if res.Score.Precision < *minP || res.Score.Recall < *minR {
		return fmt.Errorf("precision %.3f, recall %.3f: below the minimum %.2f / %.2f", res.Score.Precision, res.Score.Recall, *minP, *minR)
	}
	return nil
}

func detectorsSource(policyPath string) string {
	if policyPath == "" {
		return "default thresholds"
	}
	return "thresholds of " + policyPath
}

// printTimeToDetect summarises how fast attacks were noticed: in event time
// (from the attack's first event to the anomaly's triggering event) and in
// wall time through the pipeline (first attack event published → anomaly
// received from the ANOMALIES stream).
func printTimeToDetect(w io.Writer, r simulate.Result) {
	var delays, walls []time.Duration
	for _, p := range r.PerAttack {
		if !p.Detected {
			continue
		}
		delays = append(delays, p.Delay)
		if p.HasWallLatency {
			walls = append(walls, p.WallLatency)
		}
	}
	if len(delays) == 0 {
		fmt.Fprintln(w, "time to detect: no attack detected")
		return
	}
	q := func(ds []time.Duration) string {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return fmt.Sprintf("median %v, max %v", ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	fmt.Fprintf(w, "time to detect, event time (attack start → triggering event): %s over %d attacks\n", q(delays), len(delays))
	if len(walls) > 0 {
		fmt.Fprintf(w, "time to detect, wall clock (first attack event published → anomaly received): %s\n", q(walls))
	}
}
