// Package auditor turns the USAGE stream into analyst-queryable history and
// anomalies. It is a durable JetStream consumer: usage events are batched
// into ClickHouse and acknowledged only after their batch is written (the
// store is idempotent by event id, so redelivery never duplicates a row);
// every event passes through the streaming detectors, whose anomalies are
// published to ANOMALIES and written to ClickHouse. Detector state is
// checkpointed with the stream sequence it covers, so a restart neither
// forgets baselines nor re-alerts.
package auditor

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
)

// Store is where the auditor writes. Writes must be idempotent by event id.
type Store interface {
	InsertUsage(ctx context.Context, evs []events.Envelope) error
	InsertAnomalies(ctx context.Context, evs []events.Envelope) error
	InsertLedger(ctx context.Context, evs []events.Envelope) error
}

// Detector is the streaming detection engine (pkg/detect implements it).
type Detector interface {
	// ObserveUsage analyses one usage event in event time.
	ObserveUsage(e events.Envelope, u *events.UsageDecided) []events.AnomalyDetected
	// Observe takes any other event (the token ledger).
	Observe(e events.Envelope) []events.AnomalyDetected
	Snapshot(w io.Writer) error
	Restore(r io.Reader) error
}

// Options configures an Auditor.
type Options struct {
	// JS is the JetStream context.
	JS jetstream.JetStream
	// Store receives usage, anomalies and ledger rows.
	Store Store
	// Detector analyses usage; nil disables detection.
	Detector Detector
	// StateDir holds the detector checkpoint; empty disables checkpoints.
	StateDir string
	// Durable is the consumer name prefix (default "auditor").
	Durable string
	// BatchSize and BatchWait bound a batch (defaults 4000 and 100ms).
	BatchSize int
	BatchWait time.Duration
	// CheckpointEvery is the detector checkpoint interval (default 5s).
	CheckpointEvery time.Duration
	// AckWait is how long JetStream waits for an acknowledgement before it
	// redelivers (default 30s): after a crash, the unacknowledged batch
	// comes back this long after it was delivered.
	AckWait time.Duration
	// Source names this instance in the events it emits.
	Source string
	Log    zerolog.Logger
	// OnAnomaly, if set, is called for each anomaly after it is published.
	OnAnomaly func(events.Envelope)
}

func (o *Options) defaults() error {
	if o.JS == nil || o.Store == nil {
		return errors.New("auditor: JetStream and Store are required")
	}
	if o.Durable == "" {
		o.Durable = "auditor"
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 4000
	}
	if o.BatchWait <= 0 {
		o.BatchWait = 100 * time.Millisecond
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 5 * time.Second
	}
	if o.Source == "" {
		o.Source = "auditor"
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	return nil
}

// Stats are the auditor's counters.
type Stats struct {
	Usage, Ledger, Anomalies, Dead, Batches, WriteErrors uint64
	// LastUsageSeq is the last USAGE stream sequence acknowledged.
	LastUsageSeq uint64
}

// Auditor is the usage consumer and detection pipeline.
type Auditor struct {
	o       Options
	detMu   sync.Mutex // guards Detector and the covered sequences
	covered checkpoint // what the detector state reflects
	// dirty is set when the detectors observed events that never became
	// durable; the state is then never checkpointed again by this process.
	dirty bool

	usage, ledger, anomalies, dead, batches, writeErrs, lastSeq atomic.Uint64
}

// New validates the options and restores the detector checkpoint.
func New(o Options) (*Auditor, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	a := &Auditor{o: o}
	if o.Detector != nil && o.StateDir != "" {
		cp, err := loadCheckpoint(o.StateDir, o.Detector)
		if err != nil {
			return nil, fmt.Errorf("auditor: restore detector state: %w", err)
		}
		a.covered = cp
		if cp.UsageSeq > 0 {
			o.Log.Info().Uint64("usage_seq", cp.UsageSeq).Uint64("ledger_seq", cp.LedgerSeq).Msg("detector state restored")
		}
	}
	return a, nil
}

// Stats returns a snapshot of the counters.
func (a *Auditor) Stats() Stats {
	return Stats{
		Usage: a.usage.Load(), Ledger: a.ledger.Load(), Anomalies: a.anomalies.Load(), Dead: a.dead.Load(),
		Batches: a.batches.Load(), WriteErrors: a.writeErrs.Load(), LastUsageSeq: a.lastSeq.Load(),
	}
}

// Run consumes the ledger and usage streams until ctx ends, then writes a
// final checkpoint.
func (a *Auditor) Run(ctx context.Context) error {
	usage, err := a.consumer(ctx, events.StreamUsage, a.o.Durable+"-usage", events.SubjectUsagePrefix+">")
	if err != nil {
		return err
	}
	ledger, err := a.consumer(ctx, events.StreamTokens, a.o.Durable+"-ledger", events.SubjectTokenPrefix+">")
	if err != nil {
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- a.loop(ctx, ledger, a.handleLedger) }()
	go func() { errc <- a.loop(ctx, usage, a.handleUsage) }()
	go func() { errc <- a.checkpointLoop(ctx) }()
	var first error
	for range 3 {
		if err := <-errc; err != nil && first == nil && !errors.Is(err, context.Canceled) {
			first = err
		}
	}
	if err := a.Checkpoint(); err != nil && first == nil {
		first = err
	}
	return first
}

func (a *Auditor) consumer(ctx context.Context, stream, durable, filter string) (jetstream.Consumer, error) {
	c, err := a.o.JS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "cordon auditor",
		FilterSubject: filter,
		// Explicit, per message: with AckAll, acknowledging the newest
		// message would also acknowledge older ones that were delivered to a
		// crashed instance and never written.
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       a.o.AckWait,
		MaxAckPending: 4 * a.o.BatchSize * 4,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("auditor: consumer %s on %s: %w", durable, stream, err)
	}
	return c, nil
}

type handler func(ctx context.Context, msgs []jetstream.Msg) error

// loop fetches messages, hands full or timed-out batches to h and acks
// every message of a batch only after h succeeded. h retries
// its writes itself while the store is down, and loop fetches nothing more
// meanwhile, so memory stays bounded by one batch.
func (a *Auditor) loop(ctx context.Context, c jetstream.Consumer, h handler) error {
	it, err := c.Messages(jetstream.PullMaxMessages(a.o.BatchSize * 2))
	if err != nil {
		return fmt.Errorf("auditor: messages: %w", err)
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	msgs := make([]jetstream.Msg, 0, a.o.BatchSize)
	var started time.Time
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if err := h(ctx, msgs); err != nil {
			return err // unacknowledged: redelivered after AckWait
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				a.o.Log.Warn().Err(err).Msg("ack failed; the message will be redelivered and deduplicated")
				break
			}
		}
		if md, err := msgs[len(msgs)-1].Metadata(); err == nil && md.Stream == events.StreamUsage {
			a.lastSeq.Store(md.Sequence.Stream)
		}
		a.batches.Add(1)
		msgs = msgs[:0]
		return nil
	}
	for {
		wait := a.o.BatchWait
		if len(msgs) > 0 {
			wait = max(time.Millisecond, a.o.BatchWait-time.Since(started))
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		switch {
		case err == nil:
			if len(msgs) == 0 {
				started = time.Now()
			}
			msgs = append(msgs, m)
			if len(msgs) >= a.o.BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
		case errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
			if err := flush(); err != nil {
				return err
			}
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("auditor: message iterator closed: %w", err)
		default:
			a.o.Log.Warn().Err(err).Msg("consumer error")
		}
		if len(msgs) > 0 && time.Since(started) >= a.o.BatchWait {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// handleUsage decodes a batch and runs the detectors on events the
// checkpoint does not already cover — once — then publishes the anomalies
// and writes usage and anomaly rows, retrying until they are durable.
func (a *Auditor) handleUsage(ctx context.Context, msgs []jetstream.Msg) error {
	evs := make([]events.Envelope, 0, len(msgs))
	var anomalies []events.Envelope
	// The lock spans observation and the durable writes: a checkpoint never
	// covers events whose anomalies and rows are not yet durable.
	a.detMu.Lock()
	defer a.detMu.Unlock()
	covered := a.covered.UsageSeq
	for _, m := range msgs {
		e, u, err := events.DecodeAs[*events.UsageDecided](m.Data())
		if err != nil {
			a.deadLetter(m, err)
			continue
		}
		evs = append(evs, e)
		if a.o.Detector == nil {
			continue
		}
		md, err := m.Metadata()
		if err != nil || md.Sequence.Stream <= covered {
			continue // already reflected in the restored detector state
		}
		covered = md.Sequence.Stream
		for _, an := range a.o.Detector.ObserveUsage(e, u) {
			env, err := a.anomalyEnvelope(an)
			if err != nil {
				a.o.Log.Error().Err(err).Str("detector", an.Detector).Msg("anomaly rejected")
				continue
			}
			anomalies = append(anomalies, env)
		}
	}
	err := a.retry(ctx, len(msgs), func() error {
		if err := a.publishAnomalies(ctx, anomalies); err != nil {
			return err
		}
		if len(evs) > 0 {
			if err := a.o.Store.InsertUsage(ctx, evs); err != nil {
				return fmt.Errorf("insert usage: %w", err)
			}
		}
		if len(anomalies) > 0 {
			if err := a.o.Store.InsertAnomalies(ctx, anomalies); err != nil {
				return fmt.Errorf("insert anomalies: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		// The detectors saw events that are not durable: a checkpoint of
		// this state would lose their anomalies on restart.
		a.dirty = covered > a.covered.UsageSeq
		return err
	}
	a.covered.UsageSeq = covered
	a.usage.Add(uint64(len(evs)))
	for _, an := range anomalies {
		a.anomalies.Add(1)
		if a.o.OnAnomaly != nil {
			a.o.OnAnomaly(an)
		}
	}
	return nil
}

// retry runs fn until it succeeds or ctx ends, backing off exponentially.
func (a *Auditor) retry(ctx context.Context, batch int, fn func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.writeErrs.Add(1)
		a.o.Log.Warn().Err(err).Int("batch", batch).Dur("retry_in", backoff).Msg("batch write failed, retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// anomalyEnvelope gives the anomaly a deterministic id derived from the
// detector, token and triggering event, so a re-derived anomaly after a
// restart is de-duplicated by JetStream and ClickHouse instead of alerting
// twice.
func (a *Auditor) anomalyEnvelope(an events.AnomalyDetected) (events.Envelope, error) {
	id := deterministicV7(an.EventTime, an.Detector+"\x00"+an.TokenID+"\x00"+an.EventID)
	an.AnomalyID = id.String()
	env := events.Envelope{ID: id, Type: events.TypeAnomalyDetected, Time: an.EventTime.UTC(), Source: a.o.Source, Version: events.SchemaVersion, Data: &an}
	return env, env.Validate()
}

// deterministicV7 builds a UUIDv7 whose timestamp is at and whose other
// bits are a hash of key.
func deterministicV7(at time.Time, key string) uuid.UUID {
	h := sha256.Sum256([]byte(key))
	var u uuid.UUID
	copy(u[:], h[:16])
	ms := uint64(at.UnixMilli())
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], ms)
	copy(u[0:6], ts[2:8])
	u[6] = (u[6] & 0x0f) | 0x70 // version 7
	u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
	return u
}

func (a *Auditor) publishAnomalies(ctx context.Context, anomalies []events.Envelope) error {
	if len(anomalies) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(anomalies))
	for _, env := range anomalies {
		b, err := events.Encode(env)
		if err != nil {
			return err
		}
		f, err := a.o.JS.PublishAsync(events.Subject(env), b, jetstream.WithMsgID(env.MsgID()))
		if err != nil {
			return fmt.Errorf("publish anomaly: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish anomaly: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// handleLedger writes token lifecycle events to the ledger table and tells
// the detectors (revocations, expiries, windows).
func (a *Auditor) handleLedger(ctx context.Context, msgs []jetstream.Msg) error {
	evs := make([]events.Envelope, 0, len(msgs))
	a.detMu.Lock()
	defer a.detMu.Unlock()
	covered := a.covered.LedgerSeq
	for _, m := range msgs {
		e, err := events.Decode(m.Data())
		if err != nil {
			a.deadLetter(m, err)
			continue
		}
		evs = append(evs, e)
		if a.o.Detector == nil {
			continue
		}
		md, err := m.Metadata()
		if err != nil || md.Sequence.Stream <= covered {
			continue
		}
		covered = md.Sequence.Stream
		a.o.Detector.Observe(e) // ledger events raise no anomalies
	}
	err := a.retry(ctx, len(msgs), func() error {
		if len(evs) == 0 {
			return nil
		}
		if err := a.o.Store.InsertLedger(ctx, evs); err != nil {
			return fmt.Errorf("insert ledger: %w", err)
		}
		return nil
	})
	if err != nil {
		a.dirty = a.dirty || covered > a.covered.LedgerSeq
		return err
	}
	a.covered.LedgerSeq = covered
	a.ledger.Add(uint64(len(evs)))
	return nil
}

// deadLetter moves a message that cannot be decoded aside with the reason.
// The original is acknowledged with its batch; it never blocks the stream.
func (a *Auditor) deadLetter(m jetstream.Msg, reason error) {
	a.dead.Add(1)
	a.o.Log.Warn().Str("subject", m.Subject()).Str("reason", reason.Error()).Msg("dead letter")
	dm := nats.NewMsg(events.DeadLetterSubject("auditor"))
	dm.Data = m.Data()
	dm.Header.Set(events.HeaderDeadReason, reason.Error())
	dm.Header.Set(events.HeaderDeadSubject, m.Subject())
	if _, err := a.o.JS.PublishMsg(context.Background(), dm); err != nil {
		a.o.Log.Error().Err(err).Msg("dead letter publish failed")
	}
}
