// Package auditor turns the USAGE stream into analyst-queryable history and
// anomalies. Rows come from durable JetStream consumers: usage and ledger
// events are batched into ClickHouse and acknowledged only after their batch
// is written (the store is idempotent by event id, so redelivery never
// duplicates a row). The streaming detectors read the streams themselves,
// through ordered consumers that start after the sequences their checkpoint
// covers, so detection is a deterministic function of stream order however
// often the auditor crashes; their anomalies (with deterministic ids) are
// published to ANOMALIES at once and written to ClickHouse, and the
// detector state is checkpointed with the sequences it covers only when
// those anomalies are durable, so a restart neither forgets baselines nor
// misses or duplicates an anomaly. The auditor also answers analysts'
// queries over NATS (QueryServer), since it owns the store.
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
	"github.com/cordonhq/cordon/pkg/privdir"
)

// Store is where the auditor writes. Writes must be idempotent by event id
// and safe for concurrent use (Options.Writers batches are written at once).
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

// Defaults of Options.
const (
	DefaultBatchSize       = 20_000
	DefaultBatchWait       = 100 * time.Millisecond
	DefaultWriters         = 2
	DefaultCheckpointEvery = 5 * time.Second
	DefaultAckWait         = 30 * time.Second
	DefaultShutdownGrace   = 10 * time.Second
)

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
	// Durable is the consumer name prefix (default events.DurableAuditor,
	// "auditor"; see events.AuditorDurables).
	Durable string
	// BatchSize is the most events written in one insert (default
	// DefaultBatchSize). BatchWait is how long an event waits at most for
	// its batch to start being written while a writer is free (default
	// DefaultBatchWait). Under light traffic a batch is written when its
	// first event is BatchWait old; under heavy traffic, while every writer
	// is busy, batches grow up to BatchSize, so inserts get large and few
	// exactly when that matters. Detection never waits for a batch: the
	// detectors read the stream themselves and publish an event's anomalies
	// when it arrives; BatchWait is also the longest an anomaly waits to be
	// made durable (acknowledged by JetStream and written).
	BatchSize int
	BatchWait time.Duration
	// Writers is how many batches are written concurrently (default
	// DefaultWriters). Each message is still acknowledged only after the
	// write of its own batch.
	Writers int
	// CheckpointEvery is the detector checkpoint interval (default 5s).
	CheckpointEvery time.Duration
	// AckWait is how long JetStream waits for an acknowledgement before it
	// redelivers (default 30s): after a crash, the unacknowledged batch
	// comes back this long after it was delivered.
	AckWait time.Duration
	// ShutdownGrace bounds how long Run, once its context ends, keeps
	// writing the batches already received, and making the anomalies
	// already raised durable so that the final checkpoint covers them
	// (default 10s). Messages are not acknowledged after the
	// context ended: they come back after AckWait and are de-duplicated.
	ShutdownGrace time.Duration
	// Source names this instance in the events it emits.
	Source string
	Log    zerolog.Logger
	// OnAnomaly, if set, is called for each anomaly when it is published
	// (from the detection goroutine; it is made durable shortly after).
	// After a crash, an anomaly raised but not yet covered by a checkpoint
	// is raised again.
	OnAnomaly func(events.Envelope)
}

func (o *Options) defaults() error {
	if o.JS == nil || o.Store == nil {
		return errors.New("auditor: JetStream and Store are required")
	}
	if o.Durable == "" {
		o.Durable = events.DurableAuditor
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchWait <= 0 {
		o.BatchWait = DefaultBatchWait
	}
	if o.Writers <= 0 {
		o.Writers = DefaultWriters
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.Source == "" {
		o.Source = "auditor"
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = DefaultShutdownGrace
	}
	return nil
}

// pullMax is how many messages each consumer keeps buffered client side.
func (o *Options) pullMax() int { return min(max(o.BatchSize/2, 256), 10_000) }

// Stats are the auditor's counters.
type Stats struct {
	// Usage and Ledger count events written; Anomalies those published
	// (a re-derived one again after a restart); Dead the messages
	// moved to the dead letters; Batches the batches written; WriteErrors
	// the failed write attempts (each retried).
	Usage       uint64 `json:"usage"`
	Ledger      uint64 `json:"ledger"`
	Anomalies   uint64 `json:"anomalies"`
	Dead        uint64 `json:"dead"`
	Batches     uint64 `json:"batches"`
	WriteErrors uint64 `json:"write_errors"`
	// Observed counts usage events analysed by the detectors.
	Observed uint64 `json:"observed"`
	// LastUsageSeq and LastLedgerSeq are the USAGE and TOKENS stream
	// sequences up to which every message the auditor consumes has been
	// written and acknowledged; with detectors, a message is acknowledged
	// only once detection has passed it too and its anomalies are durable
	// (on ANOMALIES and in the store).
	LastUsageSeq  uint64 `json:"last_usage_seq"`
	LastLedgerSeq uint64 `json:"last_ledger_seq"`
	// SeenUsageSeq and SeenLedgerSeq are the highest USAGE and TOKENS
	// stream sequences the detectors have handled: analysed (their
	// anomalies published), covered by the restored checkpoint, or
	// skipped as undecodable. The detectors read in stream order, so
	// everything below was handled too. Without detectors, they are the
	// highest sequences the row consumers received. A replay waits on
	// these to keep ledger and usage events in order.
	SeenUsageSeq  uint64 `json:"seen_usage_seq"`
	SeenLedgerSeq uint64 `json:"seen_ledger_seq"`
	// InFlight is the number of batches being written.
	InFlight int `json:"in_flight"`
}

// Auditor is the usage consumer and detection pipeline.
type Auditor struct {
	o     Options
	detMu sync.Mutex // guards Detector, covered and settled
	// covered is what the detector state reflects (observed events, in
	// stream order).
	covered checkpoint
	// settled is true when every anomaly the detectors raised is durable
	// (acknowledged by JetStream and written): only then may the state be
	// checkpointed.
	settled bool
	// front is how far detection is durable; the row writers acknowledge
	// nothing beyond it.
	front frontier
	// savedCP is what the checkpoint file holds (saved: one exists).
	savedCP checkpoint
	saved   bool

	usage, ledger, anomalies, dead, batches, writeErrs, observed atomic.Uint64
	lastSeq, lastLedgerSeq, seenSeq, seenLedgerSeq               atomic.Uint64
	inflight                                                     atomic.Int64
}

// New validates the options and restores the detector checkpoint.
func New(o Options) (*Auditor, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	a := &Auditor{o: o, settled: true}
	if o.StateDir != "" {
		// The detector state says which tokens are used from where.
		if err := privdir.EnsureLogged(o.StateDir, o.Log); err != nil {
			return nil, fmt.Errorf("auditor: state directory: %w", err)
		}
	}
	if o.Detector != nil && o.StateDir != "" {
		cp, err := loadCheckpoint(o.StateDir, o.Detector)
		if errors.Is(err, errOlderCheckpoint) {
			o.Log.Warn().Err(err).Uint64("usage_seq", cp.UsageSeq).Uint64("ledger_seq", cp.LedgerSeq).
				Msg("checkpoint from an older build, starting fresh: detector baselines are learnt again from here")
		} else if err != nil {
			return nil, fmt.Errorf("auditor: restore detector state: %w", err)
		}
		a.covered = cp
		a.savedCP, a.saved = cp, cp != (checkpoint{})
		a.front.advance(cp.UsageSeq, cp.LedgerSeq)
		a.seenSeq.Store(cp.UsageSeq)
		a.seenLedgerSeq.Store(cp.LedgerSeq)
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
		Batches: a.batches.Load(), WriteErrors: a.writeErrs.Load(), Observed: a.observed.Load(),
		LastUsageSeq: a.lastSeq.Load(), LastLedgerSeq: a.lastLedgerSeq.Load(),
		SeenUsageSeq: a.seenSeq.Load(), SeenLedgerSeq: a.seenLedgerSeq.Load(), InFlight: int(a.inflight.Load()),
	}
}

// Run consumes the ledger and usage streams until ctx ends, then finishes
// writing what it analysed (within ShutdownGrace) and writes a final
// checkpoint.
func (a *Auditor) Run(ctx context.Context) error {
	usage, err := a.consumer(ctx, events.AuditorUsageDurable(a.o.Durable), events.SubjectUsagePrefix+">")
	if err != nil {
		return err
	}
	ledger, err := a.consumer(ctx, events.AuditorLedgerDurable(a.o.Durable), events.SubjectTokenPrefix+">")
	if err != nil {
		return err
	}
	// A failing fetcher or detection loop stops Run.
	fetchErr := make(chan error, 3)
	detDone := make(chan error, 1)
	detCtx, stopDet := context.WithCancel(ctx)
	defer stopDet()
	if a.o.Detector != nil {
		go func() {
			err := a.detect(detCtx)
			if err != nil && detCtx.Err() == nil {
				fetchErr <- err
				err = nil
			}
			detDone <- err
		}()
	} else {
		detDone <- nil
	}
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	in := make(chan inMsg, 1024)
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
	err = a.process(ctx, in, fetchErr)
	stopFetch()
	fetchers.Wait()
	stopDet()
	if derr := <-detDone; err == nil {
		err = derr
	}
	return err
}

func (a *Auditor) consumer(ctx context.Context, d events.Durable, filter string) (jetstream.Consumer, error) {
	c, err := a.o.JS.CreateOrUpdateConsumer(ctx, d.Stream, jetstream.ConsumerConfig{
		Durable:       d.Name,
		Description:   "cordon auditor",
		FilterSubject: filter,
		// Explicit, per message: with AckAll, acknowledging the newest
		// message would also acknowledge older ones that were delivered to a
		// crashed instance and never written.
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   a.o.AckWait,
		// Room for the batches being written, the one filling and the
		// client-side buffers; beyond it JetStream stops delivering, which
		// is the back-pressure when the store is slow.
		MaxAckPending: (a.o.Writers+2)*a.o.BatchSize + 4*a.o.pullMax(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("auditor: consumer %s on %s: %w", d.Name, d.Stream, err)
	}
	return c, nil
}

// inMsg is a delivered message and the stream it came from.
type inMsg struct {
	m      jetstream.Msg
	ledger bool
}

// fetch moves messages of one consumer to in until ctx ends.
func (a *Auditor) fetch(ctx context.Context, c jetstream.Consumer, ledger bool, in chan<- inMsg) error {
	it, err := c.Messages(jetstream.PullMaxMessages(a.o.pullMax()))
	if err != nil {
		return fmt.Errorf("auditor: messages: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		switch {
		case err == nil:
			select {
			case in <- inMsg{m: m, ledger: ledger}:
			case <-ctx.Done():
				return ctx.Err()
			}
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("auditor: message iterator closed: %w", err)
		default:
			a.o.Log.Warn().Err(err).Bool("ledger", ledger).Msg("consumer error")
			select { // back off instead of spinning on a persistent error
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// batch is a group of messages analysed together and written together.
type batch struct {
	id                   uint64
	usageMsgs, ledgerMsg []jetstream.Msg // every message to acknowledge
	usage, ledger        []events.Envelope
	maxUsage, maxLedger  uint64 // highest stream sequences in the batch
	started              time.Time
	due                  bool // BatchWait has passed
	err                  error
}

func (b *batch) size() int { return len(b.usageMsgs) + len(b.ledgerMsg) }

// pipeline is the state of one Run's processing goroutine.
type pipeline struct {
	a        *Auditor
	ctx      context.Context // Run's context
	wctx     context.Context // writers': outlives ctx by ShutdownGrace
	work     chan *batch
	done     chan *batch
	cur      *batch
	timer    *time.Timer
	nextID   uint64
	inflight int
	// Batches complete out of order; the acknowledged frontier advances
	// over the completed prefix.
	pending  map[uint64]*batch
	frontier uint64 // id of the next batch the frontier waits for
}

// process analyses messages as they arrive and hands batches to the
// writers. It owns the current batch; the detectors see every event in the
// order the messages arrive, which is what a checkpoint covers.
func (a *Auditor) process(ctx context.Context, in <-chan inMsg, fetchErr <-chan error) error {
	wctx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	p := &pipeline{
		a: a, ctx: ctx, wctx: wctx,
		work:    make(chan *batch),
		done:    make(chan *batch, a.o.Writers),
		timer:   time.NewTimer(time.Hour),
		pending: map[uint64]*batch{},
	}
	p.timer.Stop()
	p.cur = p.newBatch()
	var writers sync.WaitGroup
	for range a.o.Writers {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for b := range p.work {
				b.err = a.write(ctx, wctx, b)
				p.done <- b
			}
		}()
	}
	err := p.loop(in, fetchErr)
	// Shutdown: write what was analysed, within the grace period, so the
	// final checkpoint covers it.
	grace := time.AfterFunc(a.o.ShutdownGrace, abort)
	defer grace.Stop()
	if p.cur.size() > 0 {
		_ = p.send(wctx) // not sent: redelivered after AckWait
	}
	for p.inflight > 0 {
		p.finish(<-p.done)
	}
	close(p.work)
	writers.Wait()
	return err
}

func (p *pipeline) newBatch() *batch {
	p.nextID++
	return &batch{id: p.nextID}
}

// loop runs until ctx ends or a fetcher fails.
func (p *pipeline) loop(in <-chan inMsg, fetchErr <-chan error) error {
	a := p.a
	for {
		var timerC <-chan time.Time
		if p.cur.size() > 0 && !p.cur.due {
			timerC = p.timer.C
		}
		select {
		case <-p.ctx.Done():
			return nil
		case err := <-fetchErr:
			return err
		case im := <-in:
			if p.cur.size() == 0 {
				p.cur.started = time.Now()
				p.timer.Reset(a.o.BatchWait)
			}
			a.observe(p.cur, im)
			if p.cur.size() >= a.o.BatchSize {
				if err := p.send(p.ctx); err != nil {
					return nil
				}
			}
		case <-timerC:
			p.cur.due = true
			if p.inflight < a.o.Writers {
				if err := p.send(p.ctx); err != nil {
					return nil
				}
			}
		case b := <-p.done:
			p.finish(b)
			if p.cur.due && p.inflight < a.o.Writers {
				if err := p.send(p.ctx); err != nil {
					return nil
				}
			}
		}
	}
}

// send hands the current batch to a writer, waiting for one to be free
// (back-pressure) while collecting finished batches.
func (p *pipeline) send(ctx context.Context) error {
	b := p.cur
	p.timer.Stop()
	for {
		select {
		case p.work <- b:
			p.inflight++
			p.a.inflight.Store(int64(p.inflight))
			p.pending[b.id] = nil
			p.cur = p.newBatch()
			return nil
		case d := <-p.done:
			p.finish(d)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish records a batch the writers are done with.
func (p *pipeline) finish(b *batch) {
	a := p.a
	p.inflight--
	a.inflight.Store(int64(p.inflight))
	if b.err != nil {
		a.o.Log.Warn().Err(b.err).Int("events", b.size()).Msg("batch not written; it will be redelivered")
	} else {
		a.batches.Add(1)
		a.usage.Add(uint64(len(b.usage)))
		a.ledger.Add(uint64(len(b.ledger)))
	}
	p.pending[b.id] = b
	for {
		id := p.frontier + 1
		d, ok := p.pending[id]
		if !ok || d == nil {
			break
		}
		delete(p.pending, id)
		p.frontier = id
		if d.err == nil && p.ctx.Err() == nil {
			storeMax(&a.lastSeq, d.maxUsage)
			storeMax(&a.lastLedgerSeq, d.maxLedger)
		}
	}
}

// storeMax raises v to x.
func storeMax(v *atomic.Uint64, x uint64) {
	if x > v.Load() {
		v.Store(x)
	}
}

// observe decodes one message into the batch (rejecting what cannot be
// decoded, and usage whose enforcer is not the one of its subject:
// ErrMisattributed). Detection does not happen here: the detectors read the streams
// themselves, in order (detect).
func (a *Auditor) observe(b *batch, im inMsg) {
	m := im.m
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	if im.ledger {
		if a.o.Detector == nil {
			defer storeMax(&a.seenLedgerSeq, seq)
		}
		b.ledgerMsg = append(b.ledgerMsg, m)
		b.maxLedger = max(b.maxLedger, seq)
		e, err := decodeLedger(m.Data())
		if err != nil {
			a.deadLetter(m, err)
			return
		}
		b.ledger = append(b.ledger, e)
		return
	}
	if a.o.Detector == nil {
		defer storeMax(&a.seenSeq, seq)
	}
	b.usageMsgs = append(b.usageMsgs, m)
	b.maxUsage = max(b.maxUsage, seq)
	e, _, err := decodeAttributedUsage(m.Subject(), m.Data())
	if err != nil {
		a.deadLetter(m, err)
		return
	}
	b.usage = append(b.usage, e)
}

// decodeLedger decodes a token ledger event, rejecting other types.
func decodeLedger(data []byte) (events.Envelope, error) {
	e, err := events.Decode(data)
	if err != nil {
		return e, err
	}
	switch e.Type {
	case events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired:
		return e, nil
	default:
		return e, fmt.Errorf("%w: %s event on the token ledger", events.ErrTypeMismatch, e.Type)
	}
}

// write makes a batch's rows durable, retrying until it succeeds or wctx
// ends; then, once detection is durable past the batch too (its anomalies
// acknowledged by JetStream and written), it acknowledges the batch's
// messages, unless ctx (Run's) has ended: a stopping auditor acknowledges
// nothing more, its last messages come back after AckWait and are
// de-duplicated.
func (a *Auditor) write(ctx, wctx context.Context, b *batch) error {
	err := a.retry(wctx, b.size(), func() error {
		if len(b.usage) > 0 {
			if err := a.o.Store.InsertUsage(wctx, b.usage); err != nil {
				return fmt.Errorf("insert usage: %w", err)
			}
		}
		if len(b.ledger) > 0 {
			if err := a.o.Store.InsertLedger(wctx, b.ledger); err != nil {
				return fmt.Errorf("insert ledger: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if a.o.Detector != nil {
		if a.front.wait(ctx, b.maxUsage, b.maxLedger) != nil {
			return nil // stopping: acknowledge nothing more
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	for _, msgs := range [][]jetstream.Msg{b.ledgerMsg, b.usageMsgs} {
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				a.o.Log.Warn().Err(err).Msg("ack failed; the message will be redelivered and deduplicated")
				break
			}
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

// deadLetter moves a message that cannot be decoded aside with the reason.
// The original is acknowledged with its batch; it never blocks the stream.
func (a *Auditor) deadLetter(m jetstream.Msg, reason error) {
	a.dead.Add(1)
	a.o.Log.Warn().Str("subject", m.Subject()).Str("reason", reason.Error()).Msg("dead letter")
	dm := nats.NewMsg(events.DeadLetterSubject(events.DeadLetterAuditor))
	dm.Data = m.Data()
	dm.Header.Set(events.HeaderDeadReason, reason.Error())
	dm.Header.Set(events.HeaderDeadSubject, m.Subject())
	if _, err := a.o.JS.PublishMsg(context.Background(), dm); err != nil {
		a.o.Log.Error().Err(err).Msg("dead letter publish failed")
	}
}
