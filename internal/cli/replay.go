package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/detect"
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
	sort           bool
	tolerance      time.Duration
	skipLedger     bool
	noProgress     bool
	wait           time.Duration
	remote         bool // --nats given
	policyFromFlag bool
}

// replayHelp explains what `cordon replay -h` needs beyond the flags: the
// input format, the order, the directory and what comes out.
const replayHelp = `Replays recorded events through Cordon's real pipeline — JetStream, the
auditor and its detectors, the ANOMALIES stream, ClickHouse — and prints the
anomalies they raise: the way to try the detectors or a threshold on
recorded traffic.

Input: JSONL, one Cordon event envelope per line (pkg/events: id, type,
time, source, v, data), as 'cordon simulate' writes them and as the
streams carry them; - reads stdin. usage.decided events are analysed,
token.* ledger events (issued, rotated, revoked, expired) give the
detectors the tokens' history, other event types are skipped. A line that
is not a valid event is skipped and counted: the summary lists the first
10 with their line numbers. An input with nothing to replay (empty, or
every line bad) fails with exit status 1.

Order: the detectors work in event time, in input order, so the input must
be sorted by the events' time. An event more than --order-tolerance
(default 5s) before the latest one above it is refused with both line
numbers; a file is checked whole before anything is replayed, stdin as it
streams. --sort sorts the input in memory (it needs about the input's size
in memory) instead.

Where: by default a private pipeline in a temporary directory, removed at
the end. --dir DIR keeps its data (streams, detector state, the chDB store)
and a record of the replays, to query afterwards with
  cordon sql --replay-dir DIR "SELECT …"
A second replay into DIR is refused unless --fresh (replace the previous
replay) or --continue (replay later events on top of it: the detectors keep
what they learnt, and only the new anomalies are reported). --nats replays
into a running system instead, whose auditor analyses the events.

Progress goes to stderr: a bar on a terminal, a plain line every 10s
otherwise (--no-progress: none).
`

// runReplay is `cordon replay FILE.jsonl`.
func runReplay(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "replay", "replay FILE.jsonl|- [--policy FILE] [--dir DIR [--fresh|--continue]] [--sort] [--nats URL --token-file FILE [--skip-ledger]] [-o table|json]")
	usage := fs.Usage
	fs.Usage = func() {
		usage()
		fmt.Fprint(env.Stderr, "\n"+replayHelp)
	}
	var f replayFlags
	f.clientFlags.register(fs)
	fs.StringVar(&f.policy, "policy", os.Getenv("CORDON_POLICY"), "policy file whose detectors: section the private pipeline uses; a file with only detectors: (and response:) will do ($CORDON_POLICY; default thresholds without)")
	fs.StringVar(&f.dir, "dir", "", "keep the private pipeline's data (JetStream, chDB, state) in this directory, to query it with cordon sql --replay-dir")
	fs.BoolVar(&f.fresh, "fresh", false, "with --dir: replace the previous replay in it")
	fs.BoolVar(&f.cont, "continue", false, "with --dir: replay on top of the previous replay in it (later events; only the new anomalies are reported)")
	fs.BoolVar(&f.sort, "sort", false, "sort the input by event time in memory (about its size) instead of refusing an input out of order")
	fs.DurationVar(&f.tolerance, "order-tolerance", replay.DefaultTolerance, "how far an event's time may lie before the latest one above it (0: strictly in order)")
	fs.BoolVar(&f.skipLedger, "skip-ledger", false, "replay usage events only (with --nats: leave the running system's token ledger alone)")
	fs.BoolVar(&f.noProgress, "no-progress", false, "no progress output")
	fs.DurationVar(&f.wait, "wait", 2*time.Minute, "longest wait for the auditor to catch up")
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
	if err := f.check(pos, *format); err != nil {
		return err
	}
	var cfg detect.Config
	if !f.remote {
		if cfg, err = loadDetectors(f.policy); err != nil {
			return err
		}
	}
	stdin := os.Stdin
	if !f.remote {
		if stdin, err = keepStdinFromChDB(); err != nil {
			return err
		}
	}
	in, name, size, regular, closeIn, err := openInput(pos[0], stdin)
	if err != nil {
		return err
	}
	defer closeIn()
	tol := f.tolerance
	if tol == 0 {
		tol = time.Nanosecond // strictly in order (0 would mean the default)
	}
	o := replay.Options{Size: size, SkipLedger: f.skipLedger, Wait: f.wait, Log: env.Log, Sort: f.sort, Tolerance: tol}
	if !f.noProgress {
		o.Progress = env.Stderr
	}
	// A file is checked whole first: refused before anything starts, and
	// before --fresh removes the previous replay.
	if regular && !f.sort {
		co := o
		if f.cont {
			rec, err := replay.ReadRecord(f.dir)
			if err != nil {
				return err
			}
			if rec != nil {
				co.NotBefore = rec.LastEvent()
			}
		}
		res, err := replay.Check(in, co)
		if err != nil {
			return f.inputError(env, name, res, err, false)
		}
		if _, err := in.(io.Seeker).Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	var res *replay.Result
	if f.remote {
		res, err = f.replayRemote(ctx, in, o)
	} else {
		res, err = f.replayPrivate(ctx, env, in, name, cfg, o)
	}
	if err != nil {
		return f.inputError(env, name, res, err, true)
	}
	if *format == store.FormatJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(replayJSON(res)); err != nil {
			return err
		}
		if err := res.PrintSummary(env.Stderr); err != nil {
			return err
		}
		f.printWhere(env.Stderr)
		return nil
	}
	if err := replay.PrintAnomalies(env.Stdout, res.Anomalies); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	if err := res.PrintSummary(env.Stdout); err != nil {
		return err
	}
	f.printWhere(env.Stdout)
	return nil
}

// check validates the flags and arguments.
func (f *replayFlags) check(pos []string, format string) error {
	switch {
	case len(pos) != 1:
		return fmt.Errorf("%w: want one FILE.jsonl (or - for stdin)", errUsage)
	case f.wait <= 0:
		return fmt.Errorf("%w: --wait %s: want a positive duration", errUsage, f.wait)
	case f.tolerance < 0:
		return fmt.Errorf("%w: --order-tolerance %s: want 0 (strictly in order) or more", errUsage, f.tolerance)
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

// openInput opens the input: a file, or stdin for "-".
func openInput(arg string, stdin *os.File) (in io.Reader, name string, size int64, regular bool, closeIn func(), err error) {
	if arg == "-" {
		return stdin, "stdin", 0, false, func() {}, nil
	}
	file, err := os.Open(arg)
	if err != nil {
		return nil, "", 0, false, nil, fmt.Errorf("replay: %w", err)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, "", 0, false, nil, fmt.Errorf("replay: %w", err)
	}
	if fi.IsDir() {
		file.Close()
		return nil, "", 0, false, nil, fmt.Errorf("replay: %s is a directory; want a JSONL file of events", arg)
	}
	return file, arg, fi.Size(), fi.Mode().IsRegular(), func() { file.Close() }, nil
}

// inputError prints what the user needs to fix a failed replay (the bad
// lines of an input with nothing to replay) and adds the flag that helps;
// ran says the replay had started (streamed input found wanting midway).
func (f *replayFlags) inputError(env *Env, name string, res *replay.Result, err error, ran bool) error {
	var oe *replay.OrderError
	stopped := "nothing was replayed"
	if ran {
		stopped = "the replay stopped there"
	}
	switch {
	case errors.As(err, &oe) && oe.LatestLine == 0:
		return fmt.Errorf("%s: %w; %s\n(--continue takes events after those already in %s; --fresh replays this input alone)", name, err, stopped, f.dir)
	case errors.As(err, &oe):
		return fmt.Errorf("%s: %w; %s\n(sort the input by event time first, or pass --sort to sort it in memory; --order-tolerance sets the step back allowed)",
			name, err, stopped)
	case errors.Is(err, replay.ErrNoEvents):
		if res != nil && res.Bad > 0 {
			_ = res.PrintBadLines(env.Stderr)
		}
		return fmt.Errorf("%s: %w (want JSONL, one Cordon event envelope per line: see cordon replay -h)", name, err)
	case errors.Is(err, replay.ErrDirInUse):
		return fmt.Errorf("%w\n(pass --fresh to replace it, --continue to replay later events on top of it, or another --dir)", err)
	case errors.Is(err, replay.ErrDirUnfinished):
		return fmt.Errorf("%w\n(pass --fresh to start over)", err)
	}
	return err
}

// printWhere says where the replay's data is and how to query it.
func (f *replayFlags) printWhere(w io.Writer) {
	switch {
	case f.remote:
		fmt.Fprintln(w, "the running system's auditor analysed the events: query them with cordon sql and cordon anomalies")
	case f.dir != "":
		fmt.Fprintf(w, "replay data kept in %s; query it with:\n  cordon sql --replay-dir %s \"SELECT detector, count() FROM anomalies GROUP BY detector\"\n",
			f.dir, shellQuote(f.dir))
	default:
		fmt.Fprintln(w, "(the pipeline's data was temporary: pass --dir DIR to keep it and query it with cordon sql --replay-dir DIR)")
	}
}

// shellQuote quotes s for a shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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

// replayPrivate runs the replay through a private embedded pipeline, and
// records its outcome in the replay directory (--dir).
func (f *replayFlags) replayPrivate(ctx context.Context, env *Env, in io.Reader, name string, cfg detect.Config, o replay.Options) (*replay.Result, error) {
	mode := replay.DirRefuse
	switch {
	case f.fresh:
		mode = replay.DirFresh
	case f.cont:
		mode = replay.DirContinue
	}
	p, err := replay.Start(ctx, replay.PipelineOptions{Dir: f.dir, Reuse: mode, Input: name, Detectors: &cfg, Backend: pipelineBackend,
		Log: env.Log.Level(max(env.Log.GetLevel(), zerolog.WarnLevel))})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	o.JS, o.Auditor, o.NotBefore = p.JS, p.Watcher(), p.NotBefore()
	res, err := replay.Run(ctx, in, o)
	if ferr := p.Finish(res, err); ferr != nil && err == nil {
		err = ferr
	}
	return res, err
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
		Lines      int              `json:"lines"`
		Usage      int              `json:"usage"`
		Ledger     int              `json:"ledger"`
		Skipped    int              `json:"skipped"`
		Duplicates int              `json:"duplicates"`
		FirstEvent time.Time        `json:"first_event"`
		LastEvent  time.Time        `json:"last_event"`
		Sorted     bool             `json:"sorted"`
		Moved      int              `json:"moved"`
		Bad        int              `json:"bad"`
		BadLines   []replay.BadLine `json:"bad_lines"`
		Anomalies  []anomaly        `json:"anomalies"`
	}{Lines: r.Lines, Usage: r.Usage, Ledger: r.Ledger, Skipped: r.Skipped, Duplicates: r.Duplicates, FirstEvent: r.FirstEvent,
		LastEvent: r.LastEvent, Sorted: r.Sorted, Moved: r.Moved, Bad: r.Bad, BadLines: r.BadLines, Anomalies: []anomaly{}}
	if out.BadLines == nil {
		out.BadLines = []replay.BadLine{}
	}
	for _, a := range r.Anomalies {
		out.Anomalies = append(out.Anomalies, anomaly{a.Detector, a.Severity, a.TokenID, a.Tenant, a.Holder, a.EventTime, a.EventID,
			a.SourceIP, a.Evidence.Seen, a.Evidence.Baseline, a.AnomalyID})
	}
	return out
}
