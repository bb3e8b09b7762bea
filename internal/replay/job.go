package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/services/auditor"
)

// Help is what `cordon replay -h` says beyond its flags: the input format,
// the order it needs, where the data goes and what comes out (a Job).
const Help = `Replays recorded events through Cordon's real pipeline — JetStream, the
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

// Job is a replay as `cordon replay` runs it once its flags are parsed: an
// input file or stdin, checked whole first when it is a file, replayed
// into a private pipeline (in a temporary directory or a replay directory)
// or into a running system, with the result written for people or as JSON
// and errors that say what to do.
type Job struct {
	// Input is the JSONL file to replay, or "-" for stdin.
	Input string
	// Stdin is read for "-"; nil reads the process's stdin (moved away
	// from chDB first for a private pipeline: see chdbstore.KeepStdin).
	Stdin io.Reader
	// Remote, when set, connects to the running system to replay into, once
	// the input has passed its check: that system's auditor analyses the
	// events, and only anomalies of replayed events are reported. Nil
	// replays into a private pipeline.
	Remote func() (c *auditor.Client, closeConn func(), err error)
	// StatusTimeout bounds the status request that checks that the remote
	// auditor answers (default one minute).
	StatusTimeout time.Duration
	// Pipeline configures the private pipeline (Dir, Reuse, Detectors,
	// Backend, Log); Run names the input in it.
	Pipeline PipelineOptions
	// PolicyFile names the policy file whose detectors: section
	// Pipeline.Detectors holds ("": the default thresholds); the caller
	// loads it.
	PolicyFile string
	// Options configure the replay (Sort, Tolerance, SkipLedger, Wait,
	// Progress, Log); Run sets JS, Auditor, Shared, Size and NotBefore.
	Options Options
	// JSON writes the result to Stdout as JSON (ResultJSON), the summary to
	// Stderr; otherwise the anomaly table and the summary go to Stdout.
	JSON           bool
	Stdout, Stderr io.Writer

	flags *jobFlags // RegisterFlags
}

// Run runs the job and writes its result. An input the replay cannot use
// fails with an error naming it and the way out (the first bad lines of an
// input with nothing to replay go to Stderr first); errors of the remote
// auditor come back as the auditor.Client returned them. The Result so far
// comes back with an error, as Run's does. A job whose flags were
// registered (RegisterFlags) runs as they say.
func (j Job) Run(ctx context.Context) (*Result, error) {
	j = j.withFlags()
	in, err := j.open()
	if err != nil {
		return nil, err
	}
	defer in.close()
	o := j.Options
	o.Size = in.size
	// A file is checked whole first: refused before anything starts, and
	// before DirFresh removes the previous replay.
	if in.regular && !o.Sort {
		co := o
		if j.Remote == nil && j.Pipeline.Reuse == DirContinue {
			rec, err := ReadRecord(j.Pipeline.Dir)
			if err != nil {
				return nil, err
			}
			if rec != nil {
				co.NotBefore = rec.LastEvent()
			}
		}
		if res, err := Check(in.r, co); err != nil {
			return res, j.explain(in.name, res, err, false)
		}
		if _, err := in.r.(io.Seeker).Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
	}
	var res *Result
	if j.Remote != nil {
		res, err = j.runRemote(ctx, in.r, o)
	} else {
		res, err = j.runPrivate(ctx, in, o)
	}
	if err != nil {
		return res, j.explain(in.name, res, err, true)
	}
	return res, j.write(res)
}

// input is an opened input.
type input struct {
	r       io.Reader
	name    string
	size    int64
	regular bool
	close   func()
}

// open opens the input: a file, or stdin for "-".
func (j Job) open() (*input, error) {
	if j.Input == "-" {
		in := &input{r: j.Stdin, name: "stdin", close: func() {}}
		if in.r == nil {
			f := os.Stdin
			if j.Remote == nil {
				var err error
				if f, err = keepStdin(); err != nil {
					return nil, err
				}
			}
			in.r = f
		}
		return in, nil
	}
	f, err := os.Open(j.Input)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("replay: %w", err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("replay: %s is a directory; want a JSONL file of events", j.Input)
	}
	return &input{r: f, name: j.Input, size: fi.Size(), regular: fi.Mode().IsRegular(), close: func() { f.Close() }}, nil
}

// runPrivate replays through a private embedded pipeline and records the
// outcome in the replay directory, if any.
func (j Job) runPrivate(ctx context.Context, in *input, o Options) (*Result, error) {
	po := j.Pipeline
	po.Input = in.name
	p, err := Start(ctx, po)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	o.JS, o.Auditor, o.NotBefore = p.JS, p.Watcher(), p.NotBefore()
	res, err := Run(ctx, in.r, o)
	if ferr := p.Finish(res, err); ferr != nil && err == nil {
		err = ferr
	}
	return res, err
}

// runRemote replays into a running system, once its auditor answers.
func (j Job) runRemote(ctx context.Context, in io.Reader, o Options) (*Result, error) {
	cl, closeConn, err := j.Remote()
	if err != nil {
		return nil, err
	}
	defer closeConn()
	timeout := j.StatusTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	_, err = cl.Status(sctx)
	cancel()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(cl.NC, jetstream.WithPublishAsyncMaxPending(publishWindow))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	o.JS, o.Auditor, o.Shared = js, ClientWatcher{C: cl}, true
	return Run(ctx, in, o)
}

// ClientWatcher follows a remote auditor through its status requests.
type ClientWatcher struct{ C *auditor.Client }

// Status implements Watcher.
func (w ClientWatcher) Status(ctx context.Context) (auditor.Stats, error) { return w.C.Status(ctx) }

// explain adds to a failed replay what the user needs to fix it: the bad
// lines of an input with nothing to replay (on Stderr), and the flag that
// helps; ran says the replay had started (a streamed input found wanting
// midway).
func (j Job) explain(name string, res *Result, err error, ran bool) error {
	var oe *OrderError
	stopped := "nothing was replayed"
	if ran {
		stopped = "the replay stopped there"
	}
	switch {
	case errors.As(err, &oe) && oe.LatestLine == 0:
		return fmt.Errorf("%s: %w; %s\n(--continue takes events after those already in %s; --fresh replays this input alone)", name, err, stopped, j.Pipeline.Dir)
	case errors.As(err, &oe):
		return fmt.Errorf("%s: %w; %s\n(sort the input by event time first, or pass --sort to sort it in memory; --order-tolerance sets the step back allowed)",
			name, err, stopped)
	case errors.Is(err, ErrNoEvents):
		if res != nil && res.Bad > 0 && j.Stderr != nil {
			_ = res.PrintBadLines(j.Stderr)
		}
		return fmt.Errorf("%s: %w (want JSONL, one Cordon event envelope per line: see cordon replay -h)", name, err)
	case errors.Is(err, ErrDirInUse):
		return fmt.Errorf("%w\n(pass --fresh to replace it, --continue to replay later events on top of it, or another --dir)", err)
	case errors.Is(err, ErrDirUnfinished):
		return fmt.Errorf("%w\n(pass --fresh to start over)", err)
	}
	return err
}

// write writes the result: the anomaly table and the summary, or the JSON
// form and the summary on Stderr; then where the data is.
func (j Job) write(res *Result) error {
	summary := j.Stdout
	if j.JSON {
		enc := json.NewEncoder(j.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res.JSON()); err != nil {
			return err
		}
		summary = j.Stderr
	} else {
		if err := PrintAnomalies(j.Stdout, res.Anomalies); err != nil {
			return err
		}
		fmt.Fprintln(j.Stdout)
	}
	if err := res.PrintSummary(summary); err != nil {
		return err
	}
	dir := j.Pipeline.Dir
	var err error
	switch {
	case j.Remote != nil:
		_, err = fmt.Fprintln(summary, "the running system's auditor analysed the events: query them with cordon sql and cordon anomalies")
	case dir != "":
		_, err = fmt.Fprintf(summary, "replay data kept in %s; query it with:\n  cordon sql --replay-dir %s \"SELECT detector, count() FROM anomalies GROUP BY detector\"\n",
			dir, shellQuote(dir))
	default:
		_, err = fmt.Fprintln(summary, "(the pipeline's data was temporary: pass --dir DIR to keep it and query it with cordon sql --replay-dir DIR)")
	}
	return err
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

// ResultJSON is the JSON form of a replay's result (`cordon replay -o
// json`): the counts of Result, the bad lines and the anomalies.
type ResultJSON struct {
	Lines      int           `json:"lines"`
	Usage      int           `json:"usage"`
	Ledger     int           `json:"ledger"`
	Skipped    int           `json:"skipped"`
	Duplicates int           `json:"duplicates"`
	FirstEvent time.Time     `json:"first_event"`
	LastEvent  time.Time     `json:"last_event"`
	Sorted     bool          `json:"sorted"`
	Moved      int           `json:"moved"`
	Bad        int           `json:"bad"`
	BadLines   []BadLine     `json:"bad_lines"`
	Anomalies  []AnomalyJSON `json:"anomalies"`
}

// AnomalyJSON is an anomaly in ResultJSON.
type AnomalyJSON struct {
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

// JSON returns the JSON form of the result; its lists are empty, not null,
// when there is nothing in them.
func (r *Result) JSON() ResultJSON {
	out := ResultJSON{Lines: r.Lines, Usage: r.Usage, Ledger: r.Ledger, Skipped: r.Skipped, Duplicates: r.Duplicates, FirstEvent: r.FirstEvent,
		LastEvent: r.LastEvent, Sorted: r.Sorted, Moved: r.Moved, Bad: r.Bad, BadLines: r.BadLines, Anomalies: []AnomalyJSON{}}
	if out.BadLines == nil {
		out.BadLines = []BadLine{}
	}
	for _, a := range r.Anomalies {
		out.Anomalies = append(out.Anomalies, AnomalyJSON{a.Detector, a.Severity, a.TokenID, a.Tenant, a.Holder, a.EventTime, a.EventID,
			a.SourceIP, a.Evidence.Seen, a.Evidence.Baseline, a.AnomalyID})
	}
	return out
}
