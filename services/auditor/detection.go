package auditor

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// maxPendingAnomalies bounds the anomalies a runner published and has not
// yet made durable before it stops to make them so.
const maxPendingAnomalies = 1000

// pendingAnomaly is an anomaly published and not yet known to be durable.
type pendingAnomaly struct {
	env events.Envelope
	f   jetstream.PubAckFuture // nil when the publication failed at once
	// done: JetStream acknowledged the publication.
	done bool
}

// publish gives an anomaly its deterministic id and publishes it at once
// (a re-derived one is de-duplicated by JetStream and ClickHouse); it is
// made durable by flush, at the latest BatchWait later.
func (r *runner) publish(an events.AnomalyDetected) {
	a := r.a
	env, err := a.anomalyEnvelope(an)
	if err != nil {
		a.o.Log.Error().Err(err).Str("detector", an.Detector).Msg("anomaly rejected")
		return
	}
	var f jetstream.PubAckFuture
	if data, err := events.Encode(env); err == nil {
		// A failure here is retried by flush.
		f, _ = a.o.JS.PublishAsync(events.Subject(env), data, jetstream.WithMsgID(env.MsgID()))
	}
	r.pending = append(r.pending, pendingAnomaly{env: env, f: f})
	r.st.anomalies.Add(1)
	a.anomalies.Add(1)
	if a.o.OnAnomaly != nil {
		a.o.OnAnomaly(env)
	}
	if !r.armed {
		r.armed = true
		r.flushT.Reset(a.o.BatchWait)
	}
	if len(r.pending) >= maxPendingAnomalies {
		_ = r.flush(r.ctx) // on failure they stay pending
	}
}

// flush makes the pending anomalies durable: acknowledged by JetStream
// (publishing again, de-duplicated by message id, those that failed) and
// written to the store, retrying until it succeeds or ctx ends.
func (r *runner) flush(ctx context.Context) error {
	a := r.a
	if len(r.pending) == 0 {
		return nil
	}
	envs := make([]events.Envelope, len(r.pending))
	for i, p := range r.pending {
		envs[i] = p.env
	}
	err := a.retry(ctx, len(envs), func() error {
		for i := range r.pending {
			if err := confirm(ctx, a.o.JS, &r.pending[i]); err != nil {
				return err
			}
		}
		if err := a.o.Store.InsertAnomalies(ctx, envs); err != nil {
			return fmt.Errorf("insert anomalies: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.pending = r.pending[:0]
	r.anomDone = r.usageSeq
	r.progress()
	return nil
}

// confirm waits for an anomaly's publication to be acknowledged,
// publishing it again (de-duplicated by message id) if it failed.
func confirm(ctx context.Context, js jetstream.JetStream, p *pendingAnomaly) error {
	if p.done {
		return nil
	}
	if p.f != nil {
		select {
		case <-p.f.Ok():
			p.done = true
			return nil
		case <-p.f.Err():
		case <-ctx.Done():
			return ctx.Err()
		}
		p.f = nil
	}
	data, err := events.Encode(p.env)
	if err != nil {
		return fmt.Errorf("publish anomaly: %w", err)
	}
	if _, err := js.Publish(ctx, events.Subject(p.env), data, jetstream.WithMsgID(p.env.MsgID())); err != nil {
		return fmt.Errorf("publish anomaly: %w", err)
	}
	p.done = true
	return nil
}
