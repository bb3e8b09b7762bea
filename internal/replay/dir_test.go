//go:build !nochdb

package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// startIn starts a pipeline in the replay directory dir with its store in
// database db of the shared chDB path.
func startIn(t *testing.T, dir string, mode replay.DirMode, db string) (*replay.Pipeline, error) {
	t.Helper()
	p, err := replay.Start(context.Background(), replay.PipelineOptions{
		Dir: dir, Reuse: mode, Input: "test.jsonl",
		Backend: func(ctx context.Context) (store.Backend, error) {
			return chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
		},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err == nil {
		t.Cleanup(func() { p.Close() })
	}
	return p, err
}

func newDB() string { return fmt.Sprintf("replay_%d", dbSeq.Add(1)) }

// replayInto runs a replay of envs into p and records it in its directory.
func replayInto(t *testing.T, p *replay.Pipeline, envs []events.Envelope) (*replay.Result, error) {
	t.Helper()
	var buf bytes.Buffer
	for _, e := range envs {
		b, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	res, err := replay.Run(context.Background(), &buf, replay.Options{JS: p.JS, Auditor: p.Watcher(), Wait: 60 * time.Second,
		NotBefore: p.NotBefore(), Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)})
	if ferr := p.Finish(res, err); ferr != nil {
		t.Fatal(ferr)
	}
	return res, err
}

func anomalyKeys(as []replay.Anomaly) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Detector + "/" + a.EventID
	}
	slices.Sort(out)
	return out
}

func record(t *testing.T, dir string) *replay.DirRecord {
	t.Helper()
	rec, err := replay.ReadRecord(dir)
	if err != nil || rec == nil {
		t.Fatalf("record of %s: %v, %v", dir, rec, err)
	}
	return rec
}

// TestSecondReplayIntoDir: a second replay into a directory that holds one
// is refused at once (no stall for --wait, nothing published), continued
// (only the new anomalies, the detectors resuming from what they learnt:
// the two runs together find exactly what one run over everything finds),
// or replaced (the previous run's anomalies are not reported again).
func TestSecondReplayIntoDir(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	// Split where both runs have something to find.
	want := inProcess(t, ds.Events)
	var first, second []events.Envelope
	var wantFirst []string
	for _, frac := range []float64{0.5, 0.6, 0.7, 0.8, 0.9} {
		cut := int(float64(len(ds.Events)) * frac)
		first, second = ds.Events[:cut], ds.Events[cut:]
		if wantFirst = inProcess(t, first); len(wantFirst) > 0 && len(wantFirst) < len(want) {
			break
		}
	}
	if len(wantFirst) == 0 || len(wantFirst) == len(want) {
		t.Fatalf("no split leaves some of the %d anomalies to each run: the test proves nothing", len(want))
	}

	dir := filepath.Join(t.TempDir(), "replay")
	db := newDB()
	p, err := startIn(t, dir, replay.DirRefuse, db)
	if err != nil {
		t.Fatal(err)
	}
	res1, err := replayInto(t, p, first)
	if err != nil {
		t.Fatal(err)
	}
	if got := anomalyKeys(res1.Anomalies); !slices.Equal(got, wantFirst) {
		t.Fatalf("first run: %v, want %v", got, wantFirst)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// Refused, at once and with the previous replay described.
	if _, err := startIn(t, dir, replay.DirRefuse, db); !errors.Is(err, replay.ErrDirInUse) ||
		!strings.Contains(err.Error(), fmt.Sprintf("%d events", len(first))) {
		t.Fatalf("second replay into the directory: %v, want ErrDirInUse describing the first", err)
	}
	if rec := record(t, dir); len(rec.Runs) != 1 || rec.Events() != len(first) || rec.Runs[0].Anomalies != len(wantFirst) {
		t.Fatalf("record after a refusal: %+v", rec)
	}

	// Continued: only the new anomalies; both runs together = one run.
	p, err = startIn(t, dir, replay.DirContinue, db)
	if err != nil {
		t.Fatal(err)
	}
	if !p.NotBefore().Equal(first[len(first)-1].Time) {
		t.Errorf("NotBefore = %v, want the first run's last event time %v", p.NotBefore(), first[len(first)-1].Time)
	}
	res2, err := replayInto(t, p, second)
	if err != nil {
		t.Fatal(err)
	}
	got2 := anomalyKeys(res2.Anomalies)
	for _, k := range got2 {
		if slices.Contains(wantFirst, k) {
			t.Errorf("the continued run reports the first run's anomaly %s", k)
		}
	}
	both := append(anomalyKeys(res1.Anomalies), got2...)
	slices.Sort(both)
	if !slices.Equal(both, want) {
		t.Errorf("two runs found\n %v\nwant (one run over everything)\n %v", both, want)
	}
	// A continued replay takes later events only: the first half again is
	// refused at its first line, and nothing of it is published.
	before := streamMsgs(t, p, events.StreamUsage)
	_, err = replayInto(t, p, first)
	var oe *replay.OrderError
	if !errors.As(err, &oe) || oe.Line != 1 || oe.LatestLine != 0 {
		t.Fatalf("earlier events on top of a replay: %v, want an *OrderError at line 1", err)
	}
	if after := streamMsgs(t, p, events.StreamUsage); after != before {
		t.Errorf("USAGE went from %d to %d messages: the refused events were published", before, after)
	}
	p.Close()

	// The failed run cannot be continued; --fresh starts over.
	if _, err := startIn(t, dir, replay.DirContinue, db); !errors.Is(err, replay.ErrDirUnfinished) {
		t.Fatalf("continuing a failed run: %v, want ErrDirUnfinished", err)
	}
	p, err = startIn(t, dir, replay.DirFresh, newDB())
	if err != nil {
		t.Fatal(err)
	}
	res3, err := replayInto(t, p, ds.Events)
	if err != nil {
		t.Fatal(err)
	}
	if got := anomalyKeys(res3.Anomalies); !slices.Equal(got, want) {
		t.Errorf("fresh run: %d anomalies %v, want %d (not the previous runs' again)", len(got), got, len(want))
	}
	if n := streamMsgs(t, p, events.StreamUsage); n != uint64(ds.UsageEvents) {
		t.Errorf("USAGE holds %d messages after a fresh replay of %d usage events", n, ds.UsageEvents)
	}
	if rec := record(t, dir); len(rec.Runs) != 1 || rec.Events() != len(ds.Events) || rec.Runs[0].Error != "" {
		t.Errorf("record after a fresh run: %+v", rec)
	}
}

// TestDuplicatesDoNotStall: replaying events the stream already holds
// (the same ids, within JetStream's de-duplication window) returns at once
// with the duplicates counted, instead of waiting for sequences that will
// never come; and no anomaly of the earlier run is reported again.
func TestDuplicatesDoNotStall(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := ds.WriteJSONL(&buf); err != nil {
		t.Fatal(err)
	}
	p := startPipeline(t)
	o := replay.Options{JS: p.JS, Auditor: p.Watcher(), Wait: 60 * time.Second}
	res, err := replay.Run(context.Background(), bytes.NewReader(buf.Bytes()), o)
	if err != nil || len(res.Anomalies) == 0 {
		t.Fatalf("first run: %v, %d anomalies", err, len(res.Anomalies))
	}
	res, err = replay.Run(context.Background(), bytes.NewReader(buf.Bytes()), o)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if res.Duplicates != len(ds.Events) || len(res.Anomalies) != 0 {
		t.Errorf("second run: %d duplicates of %d events, %d anomalies; want all duplicates, none", res.Duplicates, len(ds.Events), len(res.Anomalies))
	}
	var out bytes.Buffer
	if err := res.PrintSummary(&out); err != nil || !strings.Contains(out.String(), fmt.Sprintf("duplicates:        %d", len(ds.Events))) {
		t.Errorf("summary: %v\n%s", err, out.String())
	}
}

// TestRunStopsOutOfOrder: streamed input going back in time stops the
// replay at that line: nothing from it on is published.
func TestRunStopsOutOfOrder(t *testing.T) {
	var lines []string
	for i := 0; i < 50; i++ {
		lines = append(lines, usageLine(t, t0.Add(time.Duration(i)*time.Second), "tok-1"))
	}
	lines = append(lines, usageLine(t, t0.Add(-time.Hour), "tok-1"))
	for i := 50; i < 100; i++ {
		lines = append(lines, usageLine(t, t0.Add(time.Duration(i)*time.Second), "tok-1"))
	}
	p := startPipeline(t)
	res, err := replay.Run(context.Background(), strings.NewReader(jsonl(lines...)), replay.Options{JS: p.JS, Auditor: p.Watcher(), Wait: 30 * time.Second})
	var oe *replay.OrderError
	if !errors.As(err, &oe) || oe.Line != 51 || oe.LatestLine != 50 {
		t.Fatalf("err = %v, want an *OrderError at line 51 after line 50", err)
	}
	if res.Usage != 50 {
		t.Errorf("published %d events, want the 50 before the offending line", res.Usage)
	}
	if n := streamMsgs(t, p, events.StreamUsage); n != 50 {
		t.Errorf("USAGE holds %d messages, want 50", n)
	}
}

// TestSortedReplay: with Sort, an input out of order is replayed sorted
// by event time (stably) and yields what the detectors find on the sorted
// events; without, it is refused before anything is published.
func TestSortedReplay(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	// Move a block of a thousand events to the end, as a careless
	// concatenation of two files would.
	n := len(ds.Events)
	shuffled := slices.Concat(ds.Events[:n/3], ds.Events[n/3+1000:], ds.Events[n/3:n/3+1000])
	var buf bytes.Buffer
	for _, e := range shuffled {
		b, _ := events.Encode(e)
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if _, err := replay.Check(bytes.NewReader(buf.Bytes()), replay.Options{}); !errors.Is(err, replay.ErrOutOfOrder) {
		t.Fatalf("Check of a shuffled input: %v, want ErrOutOfOrder", err)
	}
	sorted := slices.Clone(shuffled)
	slices.SortStableFunc(sorted, func(a, b events.Envelope) int { return a.Time.Compare(b.Time) })
	want := inProcess(t, sorted)

	p := startPipeline(t)
	var progress bytes.Buffer
	res, err := replay.Run(context.Background(), bytes.NewReader(buf.Bytes()), replay.Options{JS: p.JS, Auditor: p.Watcher(),
		Wait: 60 * time.Second, Sort: true, Progress: &progress, ProgressEvery: time.Nanosecond, Size: int64(buf.Len())})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Sorted || res.Moved < 1000 || res.Events() != n {
		t.Errorf("sorted %v, moved %d, published %d of %d", res.Sorted, res.Moved, res.Events(), n)
	}
	if got := anomalyKeys(res.Anomalies); !slices.Equal(got, want) || len(want) == 0 {
		t.Errorf("sorted replay found %v, want %v", got, want)
	}
	// Plain progress (not a terminal): lines, no carriage return or colour.
	pr := progress.String()
	if !strings.Contains(pr, "reading: done 100%") || !strings.Contains(pr, "replaying: done 100%") || strings.ContainsAny(pr, "\r\x1b") {
		t.Errorf("progress output:\n%q", pr)
	}
}

// TestReplayDirGuards: a replay directory is never something else: a
// directory with other content is refused in every mode and left as it
// was; a record naming a store outside the directory is not followed when
// clearing it; a directory in use is refused; an interrupted replay must
// be started over explicitly.
func TestReplayDirGuards(t *testing.T) {
	t.Run("foreign content", func(t *testing.T) {
		dir := t.TempDir()
		precious := filepath.Join(dir, "admin.token")
		if err := os.WriteFile(precious, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []replay.DirMode{replay.DirRefuse, replay.DirFresh, replay.DirContinue} {
			if _, err := startIn(t, dir, mode, newDB()); !errors.Is(err, replay.ErrNotReplayDir) || !strings.Contains(err.Error(), "admin.token") {
				t.Errorf("mode %d: %v, want ErrNotReplayDir naming what is there", mode, err)
			}
		}
		if b, err := os.ReadFile(precious); err != nil || string(b) != "keep me" {
			t.Fatalf("the foreign file was touched: %q, %v", b, err)
		}
		if _, err := replay.OpenDir(dir); !errors.Is(err, replay.ErrNotReplayDir) {
			t.Errorf("OpenDir: %v", err)
		}
	})
	t.Run("store outside", func(t *testing.T) {
		base := t.TempDir()
		dir, outside := filepath.Join(base, "replay"), filepath.Join(base, "outside")
		if err := os.MkdirAll(outside, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, "data"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := startIn(t, dir, replay.DirRefuse, newDB())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := replayInto(t, p, []events.Envelope{mustDecode(t, usageLine(t, t0, "a"))}); err != nil {
			t.Fatal(err)
		}
		p.Close()
		rec := record(t, dir)
		rec.Store = &replay.DirStore{CHDB: "../outside", Database: "replay"}
		b, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(dir, replay.RecordFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := startIn(t, dir, replay.DirFresh, newDB()); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("fresh start with a record naming ../outside: %v", err)
		}
		if _, err := os.Stat(filepath.Join(outside, "data")); err != nil {
			t.Fatalf("the directory outside was removed: %v", err)
		}
	})
	t.Run("busy and interrupted", func(t *testing.T) {
		dir := t.TempDir()
		db := newDB()
		p, err := startIn(t, dir, replay.DirRefuse, db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := replay.OpenDir(dir); !errors.Is(err, replay.ErrDirBusy) {
			t.Errorf("OpenDir while a pipeline runs in it: %v, want ErrDirBusy", err)
		}
		if _, err := startIn(t, dir, replay.DirFresh, newDB()); !errors.Is(err, replay.ErrDirBusy) {
			t.Errorf("a second pipeline in it: %v, want ErrDirBusy", err)
		}
		p.Close() // without Finish: as if interrupted
		if _, err := startIn(t, dir, replay.DirRefuse, db); !errors.Is(err, replay.ErrDirInUse) || !strings.Contains(err.Error(), "did not finish") {
			t.Errorf("after an interrupted replay: %v, want ErrDirInUse saying it did not finish", err)
		}
		if _, err := startIn(t, dir, replay.DirContinue, db); !errors.Is(err, replay.ErrDirUnfinished) {
			t.Errorf("continuing an interrupted replay: %v, want ErrDirUnfinished", err)
		}
		d, err := replay.OpenDir(dir)
		if err != nil {
			t.Fatalf("OpenDir once the pipeline is closed: %v", err)
		}
		d.Close()
		if _, err := startIn(t, dir, replay.DirFresh, newDB()); err != nil {
			t.Errorf("fresh start after an interrupted replay: %v", err)
		}
	})
	t.Run("nothing replayed", func(t *testing.T) {
		dir := t.TempDir()
		p, err := startIn(t, dir, replay.DirRefuse, newDB())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := replayInto(t, p, nil); !errors.Is(err, replay.ErrNoEvents) {
			t.Fatalf("empty replay: %v", err)
		}
		p.Close()
		// A directory whose replays published nothing is reused without
		// ceremony.
		if _, err := startIn(t, dir, replay.DirRefuse, newDB()); err != nil {
			t.Errorf("replay into a directory that holds nothing: %v", err)
		}
	})
}

func mustDecode(t *testing.T, line string) events.Envelope {
	t.Helper()
	e, err := events.Decode([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return e
}
