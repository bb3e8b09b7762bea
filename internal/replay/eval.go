package replay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
)

// EvalOptions configure Eval.
type EvalOptions struct {
	// Scenario is simulated and replayed (simulate.DefaultScenario() when
	// it has no start).
	Scenario simulate.Scenario
	// Pipeline configures the embedded pipeline the scenario goes through.
	Pipeline PipelineOptions
	// Progress, when set, shows the replay's progress bar.
	Progress io.Writer
	Log      zerolog.Logger
}

// EvalResult is an evaluation: the data, the replay and the report.
type EvalResult struct {
	Dataset *simulate.Dataset
	Replay  *Result
	Report  simulate.Report
	// Generate is the time the simulation took.
	Generate time.Duration
}

// Eval generates a labelled scenario, replays it through a private embedded
// pipeline (JetStream → auditor → detectors → ANOMALIES and ClickHouse)
// and scores the anomalies that came out of the ANOMALIES stream against
// the labels: recall per attack variant, false alarms per benign variant.
// The wall latency of an attack is the time from publishing its first
// event to receiving its first detecting anomaly.
func Eval(ctx context.Context, o EvalOptions) (*EvalResult, error) {
	sc := o.Scenario
	if sc.Start.IsZero() {
		sc = simulate.DefaultScenario()
	}
	start := time.Now()
	ds, err := simulate.Generate(sc)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	gen := time.Since(start)
	var buf bytes.Buffer
	if err := ds.WriteJSONL(&buf); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	p, err := Start(ctx, o.Pipeline)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	res, err := Run(ctx, bytes.NewReader(buf.Bytes()), Options{
		JS: p.JS, Auditor: p.Watcher(), Progress: o.Progress, Size: int64(buf.Len()), RecordTimes: true, Log: o.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("eval: replay: %w", err)
	}
	return &EvalResult{Dataset: ds, Replay: res, Report: Score(ds, res), Generate: gen}, nil
}

// Score scores a replay of a dataset: the anomalies it produced against
// the dataset's labels, with the wall latency of each detection when the
// replay recorded publication times.
func Score(ds *simulate.Dataset, res *Result) simulate.Report {
	received := make(map[string]time.Time, len(res.Anomalies))
	for _, a := range res.Anomalies {
		received[a.AnomalyID] = a.Received
	}
	return simulate.ScoreLabels(ds.Labels(), res.AnomalyPayloads(), simulate.ScoreOptions{
		WallLatency: func(an events.AnomalyDetected, a simulate.Attack) (time.Duration, bool) {
			got, ok := received[an.AnomalyID]
			if !ok {
				return 0, false
			}
			first, ok := firstPublished(a, res.PublishedAt)
			if !ok {
				return 0, false
			}
			return got.Sub(first), true
		},
	})
}

// firstPublished returns when the first event of attack a was published.
func firstPublished(a simulate.Attack, published map[uuid.UUID]time.Time) (time.Time, bool) {
	var first time.Time
	for _, id := range a.EventIDs {
		u, err := uuid.Parse(id)
		if err != nil {
			continue
		}
		if t, ok := published[u]; ok && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	return first, !first.IsZero()
}
