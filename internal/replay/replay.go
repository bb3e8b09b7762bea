// Package replay feeds recorded events through Cordon's real pipeline —
// JetStream, the auditor, its detectors, the ANOMALIES stream and
// ClickHouse — as fast as the pipeline takes them, and collects the
// anomalies it produces: the way to try a detector or a threshold on last
// month's traffic (`cordon replay`), and to score the detectors against a
// labelled simulation (`cordon eval`).
//
// The input is JSONL: one pkg/events envelope per line, as simulate writes
// it and as the streams carry it. Usage events go to the USAGE stream,
// token ledger events to TOKENS; other valid events are counted and
// skipped; a line that is not a valid event is counted, the first few kept
// with their numbers (Result.BadLines), and skipped. An input with nothing
// to replay (empty, every line bad) is an error (ErrNoEvents), not an empty
// result.
//
// The detectors work in event time and in input order, so a replay yields
// the anomalies the live run would have only when the input is in time
// order. Run checks it: an event more than Options.Tolerance before the
// latest one above it stops the replay with an *OrderError naming both
// lines (Check finds it before anything is published; Options.Sort sorts
// an input that fits in memory instead). Ledger and usage events go
// through two streams consumed separately, so Run keeps their order with a
// barrier: at each switch between usage and ledger events it waits until
// the auditor has handled everything published before (auditor.Stats
// Seen*Seq). Runs of one kind are published without waiting.
//
// Run works against any running auditor (given a Watcher for its
// progress); Start runs a private embedded pipeline, in a temporary
// directory or in a replay directory that records its runs (dir.go) so
// that a second replay into it is refused, started afresh or continued as
// the caller chose, never mixed up with the first.
package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// ErrAuditorStalled is returned when the auditor does not catch up with
// the published events within Options.Wait.
var ErrAuditorStalled = errors.New("the auditor did not catch up")

// Watcher reports the progress of the auditor that consumes the replay.
type Watcher interface {
	// Status returns the auditor's counters (the sequences matter).
	Status(ctx context.Context) (auditor.Stats, error)
}

// AuditorWatcher watches an in-process auditor.
type AuditorWatcher struct{ A *auditor.Auditor }

// Status implements Watcher.
func (w AuditorWatcher) Status(context.Context) (auditor.Stats, error) { return w.A.Stats(), nil }

// Options configure Run.
type Options struct {
	// JS publishes the events and reads the ANOMALIES stream.
	JS jetstream.JetStream
	// Auditor reports the consuming auditor's progress.
	Auditor Watcher
	// Progress, when set, receives the progress: a bar on a terminal,
	// otherwise (a file, a pipe, a buffer) a plain line every
	// ProgressEvery and one at the end.
	Progress io.Writer
	// ProgressEvery is how often a plain progress line is written (default
	// 10 s).
	ProgressEvery time.Duration
	// Size is the input's size in bytes for the progress; 0 or negative
	// means unknown.
	Size int64
	// Sort reads the whole input into memory (about its size) and replays
	// its events sorted by event time, stably, instead of refusing an
	// input out of order.
	Sort bool
	// Tolerance is how far an event's time may lie before the latest event
	// time above it (DefaultTolerance when 0; negative turns the check
	// off). Beyond it Run stops with an *OrderError.
	Tolerance time.Duration
	// NotBefore, when set, is the earliest event time accepted (the end of
	// the previous replay into a directory that this one continues).
	NotBefore time.Time
	// SkipLedger publishes usage events only (a running system's ledger is
	// its own history; replaying someone else's into it is rarely wanted).
	SkipLedger bool
	// Wait bounds each wait for the auditor (default 2 minutes).
	Wait time.Duration
	// Shared says the system is not private to this replay: anomalies are
	// read from now on and kept only when a replayed event triggered them
	// (the ids of the replayed events are kept for that: about 30 bytes an
	// event).
	Shared bool
	// RecordTimes keeps the wall time each event was published
	// (Result.PublishedAt), for latency measurements.
	RecordTimes bool
	// MaxBadLines bounds Result.BadLines (default 10); all are counted.
	MaxBadLines int
	// Log receives warnings (failed publications); bad lines are not
	// logged one by one but summarised in the Result.
	Log zerolog.Logger
}

// Anomaly is an anomaly the replay produced and when it was received from
// the ANOMALIES stream.
type Anomaly struct {
	events.AnomalyDetected
	Received time.Time
}

// Result is what a replay did.
type Result struct {
	// Lines read (blank ones included); Usage and Ledger events published;
	// Skipped valid events of other types (and ledger events with
	// SkipLedger); Bad lines (the first Options.MaxBadLines in BadLines);
	// Failed publications; Duplicates, events the stream already held
	// (same id), which the auditor does not see again.
	Lines, Usage, Ledger, Skipped, Bad, Failed, Duplicates int
	BadLines                                               []BadLine
	// FirstEvent and LastEvent are the earliest and latest event times
	// published.
	FirstEvent, LastEvent time.Time
	// Sorted says the events were sorted in memory (Options.Sort); Moved
	// is how many were not in time order in the input.
	Sorted bool
	Moved  int
	// Barriers is how often the replay waited for the auditor to keep
	// ledger and usage events in order.
	Barriers int
	// Anomalies produced, by detection time then id.
	Anomalies []Anomaly
	// PublishedAt is when each event was published (Options.RecordTimes).
	PublishedAt map[uuid.UUID]time.Time
	// Publish is the time spent reading and publishing; Elapsed the whole
	// run, waiting for the auditor included.
	Publish, Elapsed time.Duration
}

// Events returns the number of events published.
func (r *Result) Events() int { return r.Usage + r.Ledger }

// AnomalyPayloads returns the anomalies without their receive times.
func (r *Result) AnomalyPayloads() []events.AnomalyDetected {
	out := make([]events.AnomalyDetected, len(r.Anomalies))
	for i, a := range r.Anomalies {
		out[i] = a.AnomalyDetected
	}
	return out
}

// publishWindow is how many publications are awaited together.
const publishWindow = 4096

// run is the state of one Run.
type run struct {
	o       Options
	res     *Result
	pending []jetstream.PubAckFuture
	kinds   []kind    // of each pending publication
	lastSeq [3]uint64 // by kind: the highest stream sequence published
	// replayed holds the ids of the usage events published (Shared).
	replayed map[uuid.UUID]struct{}
	prev     kind
	prog     progress
}

// defaults fills in the zero options.
func (o Options) defaults() Options {
	if o.Wait <= 0 {
		o.Wait = 2 * time.Minute
	}
	if o.MaxBadLines <= 0 {
		o.MaxBadLines = 10
	}
	if o.Tolerance == 0 {
		o.Tolerance = DefaultTolerance
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 10 * time.Second
	}
	return o
}

// Check reads the input as Run would and publishes nothing: the counts of
// the Result are what Run would publish, skip and refuse. It returns
// ErrNoEvents when nothing would be replayed and an *OrderError (with
// Options.Sort unset) at the first step back in event time beyond the
// tolerance, so that a caller can refuse an input before starting anything.
func Check(r io.Reader, o Options) (*Result, error) {
	o = o.defaults()
	start := time.Now()
	res := &Result{}
	src := newSource(r, res, o)
	if o.Sort {
		src.tolerance = -1
	}
	for {
		rec, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, err
		}
		if rec.kind == kindUsage {
			res.Usage++
		} else {
			res.Ledger++
		}
	}
	res.Elapsed = time.Since(start)
	if res.Events() == 0 {
		return res, nothingError(res)
	}
	return res, nil
}

// Run reads JSONL events from r, publishes them, waits until the auditor
// has written them all and returns the anomalies they produced.
//
// An input out of time order stops the replay at the offending line with
// an *OrderError (what was published before it stays published: Check an
// input first to refuse it whole), unless Options.Sort is set. An input
// with nothing to replay returns ErrNoEvents. Either way the Result so far
// comes back with the error.
func Run(ctx context.Context, r io.Reader, o Options) (*Result, error) {
	if o.JS == nil || o.Auditor == nil {
		return nil, errors.New("replay: JetStream and an auditor watcher are required")
	}
	o = o.defaults()
	start := time.Now()
	ru := &run{o: o, res: &Result{}}
	if o.RecordTimes {
		ru.res.PublishedAt = map[uuid.UUID]time.Time{}
	}
	if o.Shared {
		ru.replayed = map[uuid.UUID]struct{}{}
	}
	col, err := collect(ctx, o.JS)
	if err != nil {
		return nil, err
	}
	defer col.stop()
	src := newSource(r, ru.res, o)
	if o.Progress != nil {
		desc := "replaying"
		if o.Sort {
			desc = "reading"
		}
		ru.prog = newProgress(o, desc, o.Size, true, ru.res)
		src.consumed = ru.prog.add
	}
	if o.Sort {
		err = ru.publishSorted(ctx, src)
	} else {
		err = ru.publishAll(ctx, src)
	}
	if err != nil {
		return ru.res, err
	}
	ru.res.Publish = time.Since(start)
	if ru.res.Events() == 0 {
		return ru.res, nothingError(ru.res)
	}

	// Everything durable: every anomaly is then on the stream too (the
	// auditor acknowledges a batch only after its anomalies are).
	if err := ru.waitFor(ctx, "written", func(st auditor.Stats) bool {
		return st.LastUsageSeq >= ru.lastSeq[kindUsage] && st.LastLedgerSeq >= ru.lastSeq[kindLedger]
	}); err != nil {
		return ru.res, err
	}
	if err := col.catchUp(ctx, o.Wait); err != nil {
		return ru.res, err
	}
	ru.res.Anomalies = col.result(ru.replayed)
	ru.res.Elapsed = time.Since(start)
	return ru.res, nil
}

// publishAll reads and publishes every record in input order, keeping
// ledger and usage in order through the auditor.
func (ru *run) publishAll(ctx context.Context, src *source) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Out of order: what was published stays consistent.
			return errors.Join(err, ru.drain(ctx))
		}
		if err := ru.send(ctx, rec); err != nil {
			return err
		}
	}
	if err := ru.drain(ctx); err != nil {
		return err
	}
	if ru.prog != nil {
		ru.prog.finish()
	}
	return nil
}

// publishSorted reads the whole input, sorts its records by event time
// (stably: equal times keep their input order) and publishes them.
func (ru *run) publishSorted(ctx context.Context, src *source) error {
	src.tolerance = -1
	var recs []record
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := src.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rec.raw = bytes.Clone(rec.raw)
		recs = append(recs, rec)
	}
	if ru.prog != nil {
		ru.prog.finish()
	}
	ru.res.Sorted = true
	if !slices.IsSortedFunc(recs, byTime) {
		var latest time.Time
		for _, r := range recs {
			if r.time.Before(latest) {
				ru.res.Moved++
			} else {
				latest = r.time
			}
		}
		slices.SortStableFunc(recs, byTime)
	}
	if ru.o.Progress != nil {
		ru.prog = newProgress(ru.o, "replaying", int64(len(recs)), false, ru.res)
	}
	for i := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := ru.send(ctx, recs[i]); err != nil {
			return err
		}
		recs[i] = record{} // let the bytes go
		if ru.prog != nil {
			ru.prog.add(1)
		}
	}
	if err := ru.drain(ctx); err != nil {
		return err
	}
	if ru.prog != nil {
		ru.prog.finish()
	}
	return nil
}

func byTime(a, b record) int { return a.time.Compare(b.time) }

// send publishes a record, after a barrier when its kind differs from the
// previous one's.
func (ru *run) send(ctx context.Context, rec record) error {
	if ru.prev != kindNone && rec.kind != ru.prev {
		if err := ru.barrier(ctx, ru.prev); err != nil {
			return err
		}
	}
	ru.prev = rec.kind
	return ru.publish(ctx, rec)
}

// publish sends one event, de-duplicated by its id.
func (ru *run) publish(ctx context.Context, rec record) error {
	f, err := ru.o.JS.PublishAsync(rec.subject, rec.raw, jetstream.WithMsgID(rec.id.String()))
	if err != nil {
		return fmt.Errorf("publish line %d: %w", rec.line, err)
	}
	if ru.res.PublishedAt != nil {
		ru.res.PublishedAt[rec.id] = time.Now()
	}
	if ru.replayed != nil && rec.kind == kindUsage {
		ru.replayed[rec.id] = struct{}{}
	}
	if rec.kind == kindUsage {
		ru.res.Usage++
	} else {
		ru.res.Ledger++
	}
	ru.pending = append(ru.pending, f)
	ru.kinds = append(ru.kinds, rec.kind)
	if len(ru.pending) >= publishWindow {
		return ru.drain(ctx)
	}
	return nil
}

// drain waits for the outstanding publications and notes the last stream
// sequence of each kind. A duplicate (an id the stream already holds) is
// not delivered again, so its sequence is not waited for.
func (ru *run) drain(ctx context.Context) error {
	for i, f := range ru.pending {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				ru.res.Duplicates++
				continue
			}
			k := ru.kinds[i]
			ru.lastSeq[k] = max(ru.lastSeq[k], ack.Sequence)
		case err := <-f.Err():
			ru.res.Failed++
			ru.o.Log.Warn().Err(err).Msg("publish failed")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ru.pending, ru.kinds = ru.pending[:0], ru.kinds[:0]
	if ru.res.Failed > 0 && ru.res.Failed == ru.res.Events() {
		return errors.New("replay: every publication failed")
	}
	return nil
}

// barrier publishes nothing more until the auditor has handled every event
// of kind k published so far.
func (ru *run) barrier(ctx context.Context, k kind) error {
	if err := ru.drain(ctx); err != nil {
		return err
	}
	ru.res.Barriers++
	seq := ru.lastSeq[k]
	return ru.waitFor(ctx, "caught up", func(st auditor.Stats) bool {
		if k == kindUsage {
			return st.SeenUsageSeq >= seq
		}
		return st.SeenLedgerSeq >= seq
	})
}

// waitFor polls the auditor until done holds.
func (ru *run) waitFor(ctx context.Context, what string, done func(auditor.Stats) bool) error {
	deadline := time.Now().Add(ru.o.Wait)
	poll := 200 * time.Microsecond
	for {
		st, err := ru.o.Auditor.Status(ctx)
		if err != nil {
			return fmt.Errorf("replay: auditor status: %w", err)
		}
		if done(st) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: not %s after %v (usage seen %d, written %d; ledger seen %d, written %d; want usage %d, ledger %d)",
				ErrAuditorStalled, what, ru.o.Wait, st.SeenUsageSeq, st.LastUsageSeq, st.SeenLedgerSeq, st.LastLedgerSeq,
				ru.lastSeq[kindUsage], ru.lastSeq[kindLedger])
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		poll = min(poll*2, 20*time.Millisecond)
	}
}

// collector reads the ANOMALIES stream while the replay runs.
type collector struct {
	js     jetstream.JetStream
	cc     jetstream.ConsumeContext
	mu     sync.Mutex
	byID   map[string]Anomaly
	maxSeq uint64
	bad    int
}

// collect reads the anomalies published from now on: a private pipeline
// that holds a previous replay's anomalies (a continued replay directory)
// reports only this run's, and a shared system's are filtered further by
// the events replayed (collector.result).
func collect(ctx context.Context, js jetstream.JetStream) (*collector, error) {
	s, err := js.Stream(ctx, events.StreamAnomalies)
	if err != nil {
		return nil, fmt.Errorf("replay: %s: %w", events.StreamAnomalies, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("replay: %s: %w", events.StreamAnomalies, err)
	}
	from := info.State.LastSeq
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectAnomalyPrefix + ">"},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from + 1}
	c, err := js.OrderedConsumer(ctx, events.StreamAnomalies, cfg)
	if err != nil {
		return nil, fmt.Errorf("replay: read %s: %w", events.StreamAnomalies, err)
	}
	// What was on the stream before counts as read.
	col := &collector{js: js, byID: map[string]Anomaly{}, maxSeq: from}
	col.cc, err = c.Consume(func(m jetstream.Msg) {
		now := time.Now()
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		_, an, err := events.DecodeAs[*events.AnomalyDetected](m.Data())
		col.mu.Lock()
		defer col.mu.Unlock()
		col.maxSeq = max(col.maxSeq, seq)
		if err != nil {
			col.bad++
			return
		}
		if _, dup := col.byID[an.AnomalyID]; !dup {
			col.byID[an.AnomalyID] = Anomaly{AnomalyDetected: *an, Received: now}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("replay: read %s: %w", events.StreamAnomalies, err)
	}
	return col, nil
}

func (c *collector) stop() { c.cc.Stop() }

// catchUp waits until the collector has read the stream up to its current
// last message.
func (c *collector) catchUp(ctx context.Context, wait time.Duration) error {
	s, err := c.js.Stream(ctx, events.StreamAnomalies)
	if err != nil {
		return fmt.Errorf("replay: %s: %w", events.StreamAnomalies, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay: %s: %w", events.StreamAnomalies, err)
	}
	last := info.State.LastSeq
	deadline := time.Now().Add(wait)
	for {
		c.mu.Lock()
		got := c.maxSeq
		c.mu.Unlock()
		if got >= last {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replay: read anomalies up to %d of %d after %v", got, last, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// result returns the anomalies; with only set, those triggered by the
// events it holds.
func (c *collector) result(only map[uuid.UUID]struct{}) []Anomaly {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Anomaly, 0, len(c.byID))
	for _, a := range c.byID {
		if only != nil {
			id, err := uuid.Parse(a.EventID)
			if _, ok := only[id]; err != nil || !ok {
				continue
			}
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].EventTime.Equal(out[j].EventTime) {
			return out[i].EventTime.Before(out[j].EventTime)
		}
		return out[i].AnomalyID < out[j].AnomalyID
	})
	return out
}
