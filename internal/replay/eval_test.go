//go:build !nochdb

package replay_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// TestEvalThroughPipeline: Eval's report over the anomalies that came out
// of the ANOMALIES stream is the report over the anomalies the detectors
// raise when fed the same events in-process — the pipeline adds nothing
// and loses nothing — and every detected attack has its wall latency.
func TestEvalThroughPipeline(t *testing.T) {
	sc, err := simulate.LoadScenario("../../testdata/scenarios/small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	db := fmt.Sprintf("replay_%d", dbSeq.Add(1))
	res, err := replay.Eval(context.Background(), replay.EvalOptions{
		Scenario: sc,
		Pipeline: replay.PipelineOptions{Dir: t.TempDir(), Backend: func(ctx context.Context) (store.Backend, error) {
			return chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: db})
		}, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ds, rep := res.Dataset, res.Report
	if res.Replay.Events() != len(ds.Events) || res.Replay.Bad != 0 {
		t.Fatalf("replayed %d of %d events, %d bad", res.Replay.Events(), len(ds.Events), res.Replay.Bad)
	}
	if rep.Attacks != len(ds.Attacks) || rep.TruePositives+rep.FalseAlarms+rep.Late != rep.Anomalies || rep.Anomalies != len(res.Replay.Anomalies) {
		t.Fatalf("report %d attacks, %d anomalies = %d + %d + %d", rep.Attacks, rep.Anomalies, rep.TruePositives, rep.FalseAlarms, rep.Late)
	}
	e, err := detect.New(detect.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var local []events.AnomalyDetected
	for _, env := range ds.Events {
		local = append(local, e.Observe(env)...)
	}
	want := simulate.ScoreLabels(ds.Labels(), local, simulate.ScoreOptions{})
	if len(local) == 0 {
		t.Fatal("the scenario raises no anomaly in-process: the test proves nothing")
	}
	if !reflect.DeepEqual(summary(rep), summary(want)) {
		t.Errorf("through the pipeline %+v\nin-process          %+v", summary(rep), summary(want))
	}
	for _, p := range rep.PerAttack {
		if p.Detected && (!p.HasWallLatency || p.WallLatency <= 0) {
			t.Errorf("attack %s detected without a wall latency", p.ID)
		}
	}
	t.Logf("%d events, %d attacks, %d detected, %d anomalies, wall latency %s", len(ds.Events), rep.Attacks, rep.Detected, rep.Anomalies, rep.WallLatency)
}

// summary is what must not depend on how the anomalies were produced.
func summary(r simulate.Report) []string {
	var out []string
	for _, v := range r.AttackVariants {
		out = append(out, fmt.Sprintf("%s %d/%d %v", v.Variant, v.Detected, v.Attacks, v.Detectors))
	}
	for _, v := range r.BenignVariants {
		out = append(out, fmt.Sprintf("%s %d/%d", v.Variant, v.FalseAlarms, v.TokenDays))
	}
	return append(out, fmt.Sprintf("anomalies %d tp %d fa %d late %d", r.Anomalies, r.TruePositives, r.FalseAlarms, r.Late))
}
