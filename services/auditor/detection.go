package auditor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// maxPendingAnomalies bounds the anomalies published and not yet made
// durable before detection stops to make them so.
const maxPendingAnomalies = 1000

// pendingAnomaly is an anomaly published and not yet known to be durable.
type pendingAnomaly struct {
	env events.Envelope
	f   jetstream.PubAckFuture // nil when the publication failed at once
	// done: JetStream acknowledged the publication.
	done bool
}

// detection is the state of one Run's detection loop.
type detection struct {
	a       *Auditor
	pending []pendingAnomaly
	timer   *time.Timer
	armed   bool
}

// detect drives the detectors from their own ordered (ephemeral) consumers
// on USAGE and TOKENS, which start after the sequences the checkpoint
// covers and deliver strictly in stream order, so detection is a
// deterministic function of each stream however often the auditor
// crashes. Anomalies are published at once (their ids are deterministic,
// so a re-derived one is de-duplicated); they are made durable —
// acknowledged by JetStream and written to the store — at least every
// BatchWait, and the detector state is checkpointed only when every
// anomaly it reflects is durable. It runs until ctx ends, then makes the
// pending anomalies durable within ShutdownGrace and writes a final
// checkpoint.
func (a *Auditor) detect(ctx context.Context) error {
	a.detMu.Lock()
	from := a.covered
	a.detMu.Unlock()
	usage, err := a.orderedConsumer(ctx, events.StreamUsage, events.SubjectUsagePrefix+">", from.UsageSeq)
	if err != nil {
		return err
	}
	ledger, err := a.orderedConsumer(ctx, events.StreamTokens, events.SubjectTokenPrefix+">", from.LedgerSeq)
	if err != nil {
		return err
	}
	fetchCtx, stopFetch := context.WithCancel(ctx)
	in := make(chan inMsg, 1024)
	fetchErr := make(chan error, 2)
	var fetchers sync.WaitGroup
	for _, f := range []struct {
		c      jetstream.Consumer
		ledger bool
	}{{ledger, true}, {usage, false}} {
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			if err := a.fetch(fetchCtx, f.c, f.ledger, in); err != nil && fetchCtx.Err() == nil {
				fetchErr <- err
			}
		}()
	}
	d := &detection{a: a, timer: time.NewTimer(time.Hour)}
	d.timer.Stop()
	err = d.loop(ctx, in, fetchErr)
	stopFetch()
	fetchers.Wait()

	// Shutdown: make what was detected durable so that the final checkpoint
	// covers it.
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.ShutdownGrace)
	defer cancel()
	if ferr := d.flush(gctx); ferr != nil {
		a.o.Log.Warn().Err(ferr).Int("anomalies", len(d.pending)).Msg("anomalies not made durable; they are re-derived after a restart")
	}
	if cerr := a.Checkpoint(); cerr != nil {
		if errors.Is(cerr, errUnsettled) {
			a.o.Log.Warn().Err(cerr).Msg("final checkpoint skipped")
		} else if err == nil {
			err = cerr
		}
	}
	return err
}

// orderedConsumer reads stream in order from the sequence after covered.
func (a *Auditor) orderedConsumer(ctx context.Context, stream, filter string, covered uint64) (jetstream.Consumer, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if covered > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = covered + 1
	}
	c, err := a.o.JS.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("auditor: ordered consumer on %s: %w", stream, err)
	}
	return c, nil
}

// loop observes messages until ctx ends or a fetcher fails.
func (d *detection) loop(ctx context.Context, in <-chan inMsg, fetchErr <-chan error) error {
	a := d.a
	ckpt := time.NewTicker(a.o.CheckpointEvery)
	defer ckpt.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-fetchErr:
			return err
		case im := <-in:
			d.observe(im)
			if len(d.pending) >= maxPendingAnomalies {
				if d.flush(ctx) != nil {
					return nil
				}
			}
		case <-d.timer.C:
			d.armed = false
			if d.flush(ctx) != nil {
				return nil
			}
		case <-ckpt.C:
			if d.flush(ctx) != nil {
				return nil
			}
			if err := a.Checkpoint(); err != nil {
				a.o.Log.Error().Err(err).Msg("checkpoint failed")
			}
		}
	}
}

// observe runs the detectors on one message, in stream order, and
// publishes their anomalies.
func (d *detection) observe(im inMsg) {
	a := d.a
	var seq uint64
	if md, err := im.m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	var found []events.AnomalyDetected
	a.detMu.Lock()
	if im.ledger {
		if seq > a.covered.LedgerSeq {
			a.covered.LedgerSeq = seq
			// Undecodable messages are dead-lettered by the row consumer.
			if e, err := decodeLedger(im.m.Data()); err == nil {
				found = a.o.Detector.Observe(e)
			}
		}
	} else if seq > a.covered.UsageSeq {
		a.covered.UsageSeq = seq
		// Undecodable and misattributed events are dead-lettered by the
		// row consumer; the detectors never see them.
		if e, u, err := decodeAttributedUsage(im.m.Subject(), im.m.Data()); err == nil {
			found = a.o.Detector.ObserveUsage(e, u)
			attribute(found, e, u)
			a.observed.Add(1)
		}
	}
	for _, an := range found {
		d.publish(an)
	}
	if len(d.pending) == 0 {
		a.front.advance(a.covered.UsageSeq, a.covered.LedgerSeq)
	} else {
		a.settled = false
		if !d.armed {
			d.armed = true
			d.timer.Reset(a.o.BatchWait)
		}
	}
	a.detMu.Unlock()
	if im.ledger {
		storeMax(&a.seenLedgerSeq, seq)
	} else {
		storeMax(&a.seenSeq, seq)
	}
}

// publish gives an anomaly its deterministic id and publishes it.
func (d *detection) publish(an events.AnomalyDetected) {
	a := d.a
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
	d.pending = append(d.pending, pendingAnomaly{env: env, f: f})
	a.anomalies.Add(1)
	if a.o.OnAnomaly != nil {
		a.o.OnAnomaly(env)
	}
}

// flush makes the pending anomalies durable: acknowledged by JetStream
// (publishing again, de-duplicated by message id, those that failed) and
// written to the store, retrying until it succeeds or ctx ends. Then
// detection is durable up to what it observed.
func (d *detection) flush(ctx context.Context) error {
	a := d.a
	if len(d.pending) == 0 {
		return nil
	}
	envs := make([]events.Envelope, len(d.pending))
	for i, p := range d.pending {
		envs[i] = p.env
	}
	err := a.retry(ctx, len(envs), func() error {
		for i := range d.pending {
			if err := confirm(ctx, a.o.JS, &d.pending[i]); err != nil {
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
	d.pending = d.pending[:0]
	a.detMu.Lock()
	a.settled = true
	a.front.advance(a.covered.UsageSeq, a.covered.LedgerSeq)
	a.detMu.Unlock()
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

// frontier is how far, in each stream, detection is durable: every event
// up to it was observed and every anomaly it raised acknowledged by
// JetStream and written. Writers wait on it before acknowledging rows.
type frontier struct {
	mu            sync.Mutex
	usage, ledger uint64
	waiters       chan struct{} // closed on the next advance; nil when nobody waits
}

// advance raises the frontier and wakes the waiters.
func (f *frontier) advance(usage, ledger uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if usage <= f.usage && ledger <= f.ledger {
		return
	}
	f.usage, f.ledger = max(f.usage, usage), max(f.ledger, ledger)
	if f.waiters != nil {
		close(f.waiters)
		f.waiters = nil
	}
}

// wait blocks until the frontier reaches usage and ledger or ctx ends.
func (f *frontier) wait(ctx context.Context, usage, ledger uint64) error {
	for {
		f.mu.Lock()
		if f.usage >= usage && f.ledger >= ledger {
			f.mu.Unlock()
			return nil
		}
		if f.waiters == nil {
			f.waiters = make(chan struct{})
		}
		ch := f.waiters
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
