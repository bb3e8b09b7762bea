package auditor

import (
	"context"
	"fmt"

	"github.com/google/uuid"
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
// made durable by flush, at the latest AnomalyWait later (the runner
// flushes anomalyFlushWait after its first pending one).
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
	r.raised++
	r.st.anomalies.Add(1)
	a.anomalies.Add(1)
	if a.o.OnAnomaly != nil {
		a.o.OnAnomaly(env)
	}
	if !r.armed {
		r.armed = true
		r.flushT.Reset(a.o.anomalyFlushWait())
	}
	if len(r.pending) >= maxPendingAnomalies {
		_ = r.flush(r.ctx) // on failure they stay pending
	}
}

// anomalyFlight is a flush running on its own goroutine: the anomalies
// raised up to raised, pending when it started at usage sequence seq.
type anomalyFlight struct {
	anoms  []pendingAnomaly
	seq    uint64
	raised uint64
	done   chan error
	cancel context.CancelFunc // gives up (the runner is stopping)
}

// flushSoon starts making the pending anomalies durable on another
// goroutine, so that detection goes on meanwhile (a store insert and
// JetStream acknowledgements can take long on a loaded machine); the loop
// records the end (flushed). With a flush running already, the pending
// ones follow when it ends.
func (r *runner) flushSoon() {
	if r.flight != nil {
		r.flushAgain = true
		return
	}
	if len(r.pending) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	f := &anomalyFlight{anoms: r.pending, seq: r.usageSeq, raised: r.raised, done: make(chan error, 1), cancel: cancel}
	r.pending = r.spareAnoms[:0]
	r.spareAnoms = nil
	r.flight = f
	a := r.a
	go func() { f.done <- a.durable(ctx, f.anoms) }()
}

// flightEnded records the end of the flush in flight: on success its
// anomalies are durable; otherwise (ctx ended) they are pending again.
func (r *runner) flightEnded(err error) {
	f := r.flight
	r.flight = nil
	f.cancel()
	if err != nil {
		r.pending = append(f.anoms, r.pending...)
		return
	}
	r.flushed = max(r.flushed, f.raised)
	r.anomDone = max(r.anomDone, f.seq)
	clear(f.anoms)
	r.spareAnoms = f.anoms[:0]
	if r.flushAgain {
		r.flushAgain = false
		r.flushSoon()
	}
	r.progress()
}

// flush makes the pending anomalies durable, waiting for it (and first for
// the flush in flight): the final checkpoint, and the back-pressure of
// too many pending ones.
func (r *runner) flush(ctx context.Context) error {
	if r.flight != nil {
		r.flushAgain = false
		r.flightEnded(<-r.flight.done)
	}
	if len(r.pending) == 0 {
		return nil
	}
	if err := r.a.durable(ctx, r.pending); err != nil {
		return err
	}
	clear(r.pending)
	r.pending = r.pending[:0]
	r.flushed = r.raised
	r.anomDone = r.usageSeq
	r.progress()
	return nil
}

// makeDurable makes anomalies durable: acknowledged by JetStream
// (publishing again, de-duplicated by message id, those that failed) and
// written to the store, retrying until it succeeds or ctx ends. The
// groups (one partition's pending anomalies each) go in one insert.
//
// The rows are checked after the insert. An anomaly raised again after a
// crash has the same rows, and the insert is de-duplicated by their hash:
// when the crash came while the engine committed the first insert, its
// de-duplication log can name a part that was never committed, and the
// insert again is dropped. Rows missing after an insert that succeeded
// are therefore written again under a token of their own.
func (a *Auditor) makeDurable(ctx context.Context, groups ...[]pendingAnomaly) error {
	var envs []events.Envelope
	for _, g := range groups {
		for _, p := range g {
			envs = append(envs, p.env)
		}
	}
	rest := "anomalies:rest:" + uuid.NewString() // the same across retries
	return a.retry(ctx, len(envs), func() error {
		for _, g := range groups {
			for i := range g {
				if err := confirm(ctx, a.o.JS, &g[i]); err != nil {
					return err
				}
			}
		}
		if err := a.o.Store.InsertAnomalies(ctx, envs); err != nil {
			return fmt.Errorf("insert anomalies: %w", err)
		}
		a.anomalyInserts.Add(1)
		missing, err := a.o.Store.MissingAnomalies(ctx, envs)
		if err != nil {
			return fmt.Errorf("check anomalies: %w", err)
		}
		if len(missing) == 0 {
			return nil
		}
		a.o.Log.Warn().Int("anomalies", len(envs)).Int("missing", len(missing)).
			Msg("anomalies not stored after their insert (the engine dropped it as a copy of an insert its crash did not commit): writing them again")
		if err := a.o.Store.InsertAnomaliesOnce(ctx, rest, missing); err != nil {
			return fmt.Errorf("insert anomalies again: %w", err)
		}
		return nil
	})
}

// durable makes a partition's anomalies durable: through the anomaly
// writer, with the other partitions' (anomalywriter.go), or alone with
// SeparateInserts.
func (a *Auditor) durable(ctx context.Context, anoms []pendingAnomaly) error {
	if a.anw != nil {
		return a.anw.write(ctx, anoms)
	}
	return a.makeDurable(ctx, anoms)
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
