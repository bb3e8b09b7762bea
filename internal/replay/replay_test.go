//go:build !nochdb

package replay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/services/auditor"
)

// chdbPath is shared by every pipeline of this test binary: chDB holds one
// data path per process, so pipelines are told apart by database name.
var (
	chdbPath string
	dbSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "replay-chdb-")
	if err != nil {
		panic(err)
	}
	chdbPath = dir
	release := chdbstore.Hold(dir) // the session stays open throughout
	code := m.Run()
	release()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startPipeline(t *testing.T) *replay.Pipeline {
	t.Helper()
	db := fmt.Sprintf("replay_%d", dbSeq.Add(1))
	p, err := replay.Start(context.Background(), replay.PipelineOptions{
		Dir: t.TempDir(),
		Backend: func(ctx context.Context) (store.Backend, error) {
			return chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
		},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// smallScenario is a week of 12 holders, one attack of each kind. Under
// the race detector it has a third of the usage: the detector looks for
// unsynchronised access, which the same code paths show at any volume
// (make race runs on two cores in CI).
func smallScenario() simulate.Scenario {
	sc := simulate.DefaultScenario()
	sc.Days, sc.Holders, sc.UsageEvents, sc.AttacksPerKind = 7, 12, 15_000, 1
	if natstest.RaceDetector {
		sc.UsageEvents = 5_000
	}
	return sc
}

// inProcess runs the events through detection engines directly: what the
// pipeline must reproduce. The pipeline's USAGE stream has
// events.DefaultUsagePartitions partitions, each with its own engine
// (auditor.PartitionBounds) fed the usage and ledger events of its
// (tenant, holder) keys, so this does the same.
func inProcess(t *testing.T, envs []events.Envelope) []string {
	t.Helper()
	parts := events.DefaultUsagePartitions
	engines := make([]*detect.Engine, parts)
	shared := detect.NewShared(nil)
	for p := range engines {
		e, err := detect.New(auditor.PartitionBounds(detect.DefaultConfig(), parts))
		if err != nil {
			t.Fatal(err)
		}
		e.Share(shared, nil)
		engines[p] = e
	}
	var ids []string
	for _, env := range envs {
		tenant, holder, _ := events.PartitionKey(env.Data)
		for _, an := range engines[events.UsagePartition(tenant, holder, parts)].Observe(env) {
			ids = append(ids, an.Detector+"/"+an.EventID)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestReplayThroughPipeline replays a generated scenario, with bad lines
// mixed in, through the embedded pipeline: the bad lines are counted and
// skipped, every event reaches ClickHouse, and the anomalies that come out
// of the ANOMALIES stream are exactly those the detectors find when fed
// the same events in order in-process — the replay kept ledger and usage
// events in order through two streams.
func TestReplayThroughPipeline(t *testing.T) {
	ds, err := simulate.Generate(smallScenario())
	if err != nil {
		t.Fatal(err)
	}
	var clean bytes.Buffer
	if err := ds.WriteJSONL(&clean); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(clean.String(), "\n"), "\n")
	anomaly, _ := events.New("test", time.Now(), &events.AnomalyDetected{AnomalyID: "a1", Detector: "x", Severity: "low", TokenID: "t",
		Tenant: "acme", EventID: "e", EventTime: time.Now(), Evidence: events.Evidence{Seen: "s"}})
	other, err := events.Encode(anomaly)
	if err != nil {
		t.Fatal(err)
	}
	// Line numbers (1-based) of the injected lines.
	var in bytes.Buffer
	inject := map[int]string{3: "not json at all", 10: "", 11: `{"id":"x"}`, 50: string(other), 51: lines[7][:40]}
	n := 0
	for _, l := range lines {
		for {
			extra, ok := inject[n+1]
			if !ok {
				break
			}
			in.WriteString(extra + "\n")
			n++
		}
		in.WriteString(l + "\n")
		n++
	}

	p := startPipeline(t)
	var progress bytes.Buffer
	res, err := replay.Run(context.Background(), bytes.NewReader(in.Bytes()), replay.Options{
		JS: p.JS, Auditor: p.Watcher(), Progress: &progress, Size: int64(in.Len()), Wait: 30 * time.Second,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Lines != n {
		t.Errorf("lines = %d, want %d", res.Lines, n)
	}
	if res.Bad != 3 || len(res.BadLines) != 3 {
		t.Fatalf("bad = %d %v, want lines 3, 11, 51", res.Bad, res.BadLines)
	}
	for i, want := range []int{3, 11, 51} {
		if res.BadLines[i].Line != want || res.BadLines[i].Err == "" {
			t.Errorf("bad line %d = %+v, want line %d with a reason", i, res.BadLines[i], want)
		}
	}
	if res.Skipped != 1 {
		t.Errorf("skipped = %d, want 1 (the anomaly line)", res.Skipped)
	}
	if res.Usage != ds.UsageEvents || res.Ledger != ds.LedgerEvents {
		t.Errorf("published %d usage, %d ledger; want %d, %d", res.Usage, res.Ledger, ds.UsageEvents, ds.LedgerEvents)
	}
	if res.Barriers == 0 {
		t.Error("no ordering barrier for a scenario mixing ledger and usage")
	}
	if !strings.Contains(progress.String(), "replaying") {
		t.Errorf("no progress bar written: %q", progress.String())
	}
	rows, err := p.Store.CountUsage(context.Background())
	if err != nil || rows != uint64(ds.UsageEvents) {
		t.Errorf("usage rows = %d (%v), want %d", rows, err, ds.UsageEvents)
	}

	want := inProcess(t, ds.Events)
	var got []string
	for _, a := range res.Anomalies {
		got = append(got, a.Detector+"/"+a.EventID)
	}
	slices.Sort(got)
	if len(want) == 0 {
		t.Fatal("the scenario raises no anomaly in-process: the test proves nothing")
	}
	if !slices.Equal(got, want) {
		t.Errorf("pipeline anomalies differ from in-process detection:\n got  %d %v\n want %d %v", len(got), got, len(want), want)
	}
	score := simulate.Score(ds.Attacks, res.AnomalyPayloads())
	if score.Detected == 0 {
		t.Errorf("no attack detected: %+v", score)
	}

	var out bytes.Buffer
	if err := replay.PrintAnomalies(&out, res.Anomalies); err != nil {
		t.Fatal(err)
	}
	if err := res.PrintSummary(&out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"DETECTOR", res.Anomalies[0].Detector, "bad lines:         3", "line 3:", fmt.Sprintf("anomalies:         %d", len(res.Anomalies))} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}

// TestReplayOnlyBadLines: a file of nothing but bad lines replays nothing
// and says so (ErrNoEvents), with the bad lines counted and the first ones
// kept with their numbers; nothing reaches the streams.
func TestReplayOnlyBadLines(t *testing.T) {
	p := startPipeline(t)
	long := strings.Repeat("x", replay.MaxLineBytes+10)
	in := "garbage\n\n{\"v\":1}\n" + long + "\n[1,2,3]"
	res, err := replay.Run(context.Background(), strings.NewReader(in), replay.Options{JS: p.JS, Auditor: p.Watcher(), Wait: 10 * time.Second})
	if !errors.Is(err, replay.ErrNoEvents) || !strings.Contains(err.Error(), "none of the 4 non-empty lines") {
		t.Fatalf("err = %v, want ErrNoEvents", err)
	}
	if res.Bad != 4 || res.Events() != 0 || res.Lines != 5 {
		t.Fatalf("result %+v, want 4 bad lines of 5, no events", res)
	}
	if res.BadLines[2].Line != 4 || !strings.Contains(res.BadLines[2].Err, "longer than") {
		t.Errorf("long line reported as %+v", res.BadLines[2])
	}
	if n := streamMsgs(t, p, events.StreamUsage) + streamMsgs(t, p, events.StreamTokens); n != 0 {
		t.Errorf("%d messages on the streams after a replay of nothing", n)
	}
}

// streamMsgs is the number of messages a stream of the pipeline holds.
func streamMsgs(t *testing.T, p *replay.Pipeline, name string) uint64 {
	t.Helper()
	s, err := p.JS.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
