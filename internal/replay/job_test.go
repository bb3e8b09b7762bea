//go:build !nochdb

package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// pipelineOn returns pipeline options in dir whose store is a fresh
// database of this process's chDB path.
func pipelineOn(t *testing.T, dir string, mode replay.DirMode) replay.PipelineOptions {
	db := newDB()
	return replay.PipelineOptions{Dir: dir, Reuse: mode, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Backend: func(ctx context.Context) (store.Backend, error) {
			return chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
		}}
}

// TestJobs runs what `cordon simulate` and `cordon replay` run: a
// simulation into a directory, its replay into a replay directory with the
// JSON result, and the second replays into that directory that the Job
// refuses with the way out.
func TestJobs(t *testing.T) {
	out := t.TempDir()
	var simOut bytes.Buffer
	ds, err := replay.SimulateJob{Scenario: smallScenario(), Out: out, Stdout: &simOut}.Run()
	if err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(out, replay.EventsFile)
	for _, want := range []string{"scenario default (the default scenario)", "wrote " + strconv.Itoa(len(ds.Events)) + " events", "labelled attacks",
		"replay it with: cordon replay " + events} {
		if !strings.Contains(simOut.String(), want) {
			t.Errorf("simulate output lacks %q:\n%s", want, simOut.String())
		}
	}
	f, err := os.Open(filepath.Join(out, replay.LabelsFile))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := simulate.ReadLabels(f)
	f.Close()
	if err != nil || len(labels.Attacks) != len(ds.Attacks) {
		t.Fatalf("labels: %d attacks of %d, %v", len(labels.Attacks), len(ds.Attacks), err)
	}

	dir := filepath.Join(t.TempDir(), "r")
	job := func(input string, mode replay.DirMode) (replay.Job, *bytes.Buffer, *bytes.Buffer) {
		var stdout, stderr bytes.Buffer
		return replay.Job{Input: input, Pipeline: pipelineOn(t, dir, mode), JSON: true, Stdout: &stdout, Stderr: &stderr,
			Options: replay.Options{Wait: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}}, &stdout, &stderr
	}
	j, stdout, stderr := job(events, replay.DirRefuse)
	res, err := j.Run(context.Background())
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	var got replay.ResultJSON
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, stdout.String())
	}
	if got.Usage != ds.UsageEvents || got.Ledger != ds.LedgerEvents || got.Bad != 0 || got.BadLines == nil ||
		len(got.Anomalies) == 0 || len(got.Anomalies) != len(res.Anomalies) || got.Anomalies[0].AnomalyID != res.Anomalies[0].AnomalyID {
		t.Errorf("json result: %d usage, %d ledger, %d bad, %d anomalies; want %d usage, %d ledger, %d anomalies",
			got.Usage, got.Ledger, got.Bad, len(got.Anomalies), ds.UsageEvents, ds.LedgerEvents, len(res.Anomalies))
	}
	if !strings.Contains(stderr.String(), "events published:") || !strings.Contains(stderr.String(), "cordon sql --replay-dir "+dir) {
		t.Errorf("summary and where on stderr:\n%s", stderr.String())
	}

	// The same input again: refused at once with the way out; continued:
	// refused before anything starts, since nothing in it is later.
	j, _, _ = job(events, replay.DirRefuse)
	if _, err := j.Run(context.Background()); !errors.Is(err, replay.ErrDirInUse) || !strings.Contains(err.Error(), "pass --fresh") {
		t.Errorf("second replay: %v, want ErrDirInUse with the way out", err)
	}
	j, _, _ = job(events, replay.DirContinue)
	var oe *replay.OrderError
	if _, err := j.Run(context.Background()); !errors.As(err, &oe) || !strings.Contains(err.Error(), "nothing was replayed") ||
		!strings.Contains(err.Error(), "--continue takes events after those already in "+dir) {
		t.Errorf("continue with the same events: %v", err)
	}
	if rec := record(t, dir); len(rec.Runs) != 1 {
		t.Errorf("the refused replays were recorded: %+v", rec.Runs)
	}
}

// TestJobInput: an input with nothing to replay names itself, lists its
// first bad lines on Stderr and says what a replay wants; a directory and a
// missing file are refused.
func TestJobInput(t *testing.T) {
	var stderr bytes.Buffer
	j := replay.Job{Input: "-", Stdin: strings.NewReader(strings.Repeat("{\"eventName\":\"GetPasswordData\"}\n", 12)),
		Pipeline: pipelineOn(t, "", replay.DirRefuse), Stdout: &bytes.Buffer{}, Stderr: &stderr,
		Options: replay.Options{Wait: time.Minute, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)}}
	res, err := j.Run(context.Background())
	if !errors.Is(err, replay.ErrNoEvents) || !strings.HasPrefix(err.Error(), "stdin: ") || !strings.Contains(err.Error(), "see cordon replay -h") ||
		res == nil || res.Bad != 12 {
		t.Fatalf("all bad: %v, %+v", err, res)
	}
	if !strings.Contains(stderr.String(), "bad lines:         12") || !strings.Contains(stderr.String(), "… and 2 more") {
		t.Errorf("bad lines on stderr:\n%s", stderr.String())
	}
	for _, in := range []string{t.TempDir(), filepath.Join(t.TempDir(), "none.jsonl")} {
		j.Input = in
		if _, err := j.Run(context.Background()); err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("input %s: %v", in, err)
		}
	}
}

// TestEvalJob: the JSON form of an evaluation is written, then the gate is
// held: a bar no detector can meet fails with ErrBelowGate and the
// variants that miss it.
func TestEvalJob(t *testing.T) {
	sc, err := simulate.LoadScenario("../../testdata/scenarios/small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	j := replay.EvalJob{Eval: replay.EvalOptions{Scenario: sc, Pipeline: pipelineOn(t, t.TempDir(), replay.DirRefuse),
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)},
		ScenarioFile: "small.yaml", Gate: replay.Gate{MinRecall: 1.01, MaxFalseAlarms: 1e6}, JSON: true, Stdout: &stdout, Stderr: &stderr}
	res, err := j.Run(context.Background())
	if !errors.Is(err, replay.ErrBelowGate) || res == nil {
		t.Fatalf("eval: %v, want ErrBelowGate", err)
	}
	var got replay.EvalJSON
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, stdout.String())
	}
	if got.Scenario.Name != "small" || got.Gate.Passed || got.Gate.MinRecall != 1.01 || len(got.Gate.Failures) != len(res.Report.AttackVariants) ||
		got.Replay.Events != res.Replay.Events() || len(got.Report.AttackVariants) != len(sc.Attacks) {
		t.Errorf("json: %+v", got)
	}
	for _, want := range []string{"scenario small (small.yaml)", "detectors: default thresholds",
		"quality bar (recall ≥ 1.01 per attack variant, ≤ 1e+06 false alarms per 1,000 benign token-days per benign variant): FAILED"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestOpenStoreRefuses: only the store of a replay directory is opened.
func TestOpenStoreRefuses(t *testing.T) {
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "admin.token"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "r") // its store was elsewhere (a Backend was given)
	p, err := startIn(t, outside, replay.DirRefuse, newDB())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Finish(&replay.Result{}, nil); err != nil {
		t.Fatal(err)
	}
	p.Close()
	for _, c := range []struct{ dir, want string }{
		{foreign, "not a replay directory"},
		{filepath.Join(t.TempDir(), "none"), "does not exist"},
		{outside, "the replay kept its store outside the directory"},
	} {
		noticed := false
		s, closeStore, err := replay.OpenStore(context.Background(), c.dir, store.Options{}, func(string) { noticed = true })
		if err == nil || s != nil || closeStore != nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.dir, err, c.want)
		}
		if noticed {
			t.Errorf("%s: a notice for a directory that was refused", c.dir)
		}
		if res, err := replay.Query(context.Background(), c.dir, "SELECT 1", time.Minute, nil); err == nil || res != nil ||
			!strings.HasPrefix(err.Error(), "--replay-dir: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("query %s: %v, want %q", c.dir, err, c.want)
		}
	}
	// The refusal released the directory's lock.
	d, err := replay.OpenDir(outside)
	if err != nil {
		t.Fatalf("the directory stayed locked: %v", err)
	}
	d.Close()
}
