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
	// zero).
	Scenario simulate.Scenario
	// Pipeline configures the embedded pipeline the scenario goes through.
	Pipeline PipelineOptions
	// Progress, when set, shows the replay's progress bar.
	Progress io.Writer
	Log      zerolog.Logger
}

// EvalResult is an evaluation: the data, the replay and the score.
type EvalResult struct {
	Dataset *simulate.Dataset
	Replay  *Result
	Score   simulate.Result
}

// Eval generates a labelled scenario, replays it through a private embedded
// pipeline (JetStream → auditor → detectors → ANOMALIES and ClickHouse)
// and scores the anomalies that came out of the ANOMALIES stream. The wall
// latency of an attack is the time from publishing its first event to
// receiving its first matching anomaly.
func Eval(ctx context.Context, o EvalOptions) (*EvalResult, error) {
	sc := o.Scenario
	if sc.Start.IsZero() {
		sc = simulate.DefaultScenario()
	}
	ds, err := simulate.Generate(sc)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
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
	received := make(map[string]time.Time, len(res.Anomalies))
	for _, a := range res.Anomalies {
		received[a.AnomalyID] = a.Received
	}
	score := simulate.ScoreWith(ds.Attacks, res.AnomalyPayloads(), simulate.ScoreOptions{
		WallLatency: func(an events.AnomalyDetected) (time.Duration, bool) {
			got, ok := received[an.AnomalyID]
			if !ok {
				return 0, false
			}
			first, ok := attackStart(ds.Attacks, an, res.PublishedAt)
			if !ok {
				return 0, false
			}
			return got.Sub(first), true
		},
	})
	return &EvalResult{Dataset: ds, Replay: res, Score: score}, nil
}

// attackStart returns when the first event of the attack an belongs to was
// published, matching anomalies to attacks as simulate.Score does.
func attackStart(attacks []simulate.Attack, an events.AnomalyDetected, published map[uuid.UUID]time.Time) (time.Time, bool) {
	for _, a := range attacks {
		if a.TokenID != an.TokenID {
			continue
		}
		in := false
		for _, id := range a.EventIDs {
			if id == an.EventID {
				in = true
				break
			}
		}
		if !in && (an.EventTime.Before(a.Start) || an.EventTime.After(a.End)) {
			continue
		}
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
	return time.Time{}, false
}
