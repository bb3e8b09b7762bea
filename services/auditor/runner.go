package auditor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// A partition runner.
//
// Each owned USAGE partition has one runner: one goroutine that reads the
// partition's messages (its batches and the legacy per-event messages of
// its (tenant, holder) keys) with one ordered consumer, in stream order,
// from the sequence its checkpoint covers. Per message it decodes once,
// skips a batch id it has seen (the set covers BatchIDWindow of event
// time, so a spooled batch published again after JetStream's duplicate
// window is not counted twice), runs its own detector and appends the
// rows to an insert group. Nothing is acknowledged: progress is the
// partition's own state (PartitionState).
//
// Rows are written exactly once by intent and de-duplication token: an
// insert group is the partition's messages with stream sequences in
// [first, last]; before it is inserted the runner saves the intent
// (first, last), then inserts it with the token
// "usage:<epoch>:p<p>:<first>-<last>" (epoch: the stream's creation time),
// or, with the groups other partitions closed at the same time, in one
// insert under a token derived from every member's range (combine.go).
// One group is in flight at a time, so a saved intent implies that every
// earlier message's rows are written. After a crash the runner resumes at
// its checkpoint; messages before the intent's first are analysed again
// (their anomalies have deterministic ids) but not written, and the
// intent's group is rebuilt from exactly its range; the rows of it that
// the table lacks are written (writeMissing). A checkpoint covers a
// sequence only when every row up to it is written and every anomaly it
// raised is durable.

// BatchIDWindow is how much event time the set of seen batch ids covers.
const BatchIDWindow = 24 * time.Hour

// errLost: the owner says the partition is no longer ours; the runner
// stops writing.
var errLost = errors.New("partition no longer owned")

// groupToken is the de-duplication token of partition p's group [first,
// last] of the USAGE stream of this epoch (usageEpoch).
func groupToken(epoch string, p int, first, last uint64) string {
	return fmt.Sprintf("usage:%s:p%d:%d-%d", epoch, p, first, last)
}

// group is an insert group: the rows of the partition's messages with
// sequences in [first, last].
type group struct {
	first, last uint64
	envs        []events.Envelope
	// us holds the payloads of envs decoded from batches, in chunks of
	// rowChunk that never move (envs point into them), taken from and
	// given back to the runner's free chunks: a growing group copies
	// none of them, and a written group's chunks serve the next.
	us [][]events.UsageDecided
	// fixed: an intent found at start, rebuilt with exactly its range.
	fixed bool
}

func (g *group) empty() bool { return g.first == 0 }

// rowChunk is how many payloads one chunk of a group holds.
const rowChunk = 512

// initialEnvs is the capacity of a runner's first row buffers.
const initialEnvs = 4096

// keep copies u into g's chunks and returns the copy.
func (g *group) keep(u *events.UsageDecided, free *[][]events.UsageDecided) *events.UsageDecided {
	n := len(g.us)
	if n == 0 || len(g.us[n-1]) == cap(g.us[n-1]) {
		var c []events.UsageDecided
		if k := len(*free); k > 0 {
			c, (*free)[k-1] = (*free)[k-1], nil
			*free = (*free)[:k-1]
		} else {
			c = make([]events.UsageDecided, 0, rowChunk)
		}
		g.us = append(g.us, c)
		n++
	}
	c := &g.us[n-1]
	*c = append(*c, *u)
	return &(*c)[len(*c)-1]
}

// partStats are one partition's counters, read by Stats and the metrics.
type partStats struct {
	events, rows, anomalies, dead, dups, groups, replayed atomic.Uint64
	seen, written, ledgerSeen, lag                        atomic.Uint64
}

// runner runs one partition (see above). Its fields are its goroutine's
// own, except st.
type runner struct {
	a     *Auditor
	p     int
	parts int  // partition count the runner splits legacy events by
	all   bool // reads every usage subject (no partitions on the stream)
	det   Detector
	st    *partStats
	// ctx is the runner's; wctx its writes' (outlives ctx by ShutdownGrace).
	ctx, wctx context.Context

	usageSeq, ledgerSeq uint64 // handled (observed or skipped) up to
	saved               bool
	savedUsage, savedLg uint64
	batchIDs            map[uuid.UUID]int64 // seen batch id → base time (unix µs)
	maxEvent            int64               // newest batch base time seen (unix µs)

	// floor: messages below it have their rows written already (an intent
	// found at start); they are analysed again, not written.
	floor    uint64
	cur      group
	timer    *time.Timer
	inflight chan error // the group being written; nil when none
	infl     *group
	// unwritten: a group's write failed for good; its intent must stay
	// the partition's last, for the next start to write it again
	// (checkpoint writes nothing more).
	unwritten bool
	// closeDue: the open group is due to close (its wait ran out, or it
	// is full) while another is still being written; the loop closes it
	// when that write ends, so detection never waits on a write.
	closeDue bool
	// calls is the combiner's call count when this runner last answered
	// (combine.go).
	calls    uint64
	spare    group                   // a written group's empty buffers, for the next
	peak     int                     // rows of the largest group closed: a new buffer's capacity
	free     [][]events.UsageDecided // chunks of written groups, for the next
	rowsDone uint64
	anomDone uint64

	pending []pendingAnomaly
	flushT  *time.Timer
	armed   bool
	// raised counts the anomalies published; flushed is raised as of
	// the last flush (every one up to it durable).
	raised, flushed uint64
	// flight is the flush running (flushSoon), nil when none; flushAgain:
	// anomalies wait for it to end; spareAnoms a flushed slice, reused.
	flight     *anomalyFlight
	flushAgain bool
	spareAnoms []pendingAnomaly

	// A periodic checkpoint (see startCheckpoint): ckptWait is the
	// snapshot waiting for its rows and anomalies to be durable, saving
	// the one being saved by its goroutine (nil when none).
	ckptWait *pendingCheckpoint
	saving   chan error
	savingCp pendingCheckpoint
	ckptDue  bool // a checkpoint waits for the write in flight

	// evMax is the latest event time (Unix seconds) observed.
	evMax int64

	ub  events.UsageBatch
	env events.Envelope
	ud  events.UsageDecided
}

// runnerMsg is a message of a runner's consumers (or of the ledger rows' durable).
type runnerMsg struct {
	m      jetstream.Msg
	md     *jetstream.MsgMetadata // nil when the message has none
	ledger bool
}

// start loads the partition's checkpoint and intent.
func (r *runner) start(ctx context.Context) error {
	r.batchIDs = map[uuid.UUID]int64{}
	data, err := r.a.o.State.LoadCheckpoint(ctx, r.p)
	if err != nil {
		return fmt.Errorf("partition %d: load checkpoint: %w", r.p, err)
	}
	if data != nil {
		cp, err := decodeCheckpoint(data, r.p, r.parts, r.det)
		switch {
		case errors.Is(err, errOlderCheckpoint):
			r.a.o.Log.Warn().Err(err).Int("partition", r.p).Uint64("usage_seq", cp.UsageSeq).
				Msg("checkpoint from an older build, starting fresh: detector baselines are learnt again from here")
		case err != nil:
			return fmt.Errorf("partition %d: restore detector state: %w", r.p, err)
		}
		r.usageSeq, r.ledgerSeq = cp.UsageSeq, cp.LedgerSeq
		r.saved, r.savedUsage, r.savedLg = true, cp.UsageSeq, cp.LedgerSeq
		for _, b := range cp.Batches {
			r.batchIDs[b.ID] = b.At
			r.maxEvent = max(r.maxEvent, b.At)
		}
	}
	first, last, ok, err := r.a.o.State.LoadIntent(ctx, r.p)
	if err != nil {
		return fmt.Errorf("partition %d: load intent: %w", r.p, err)
	}
	if ok && last > r.usageSeq {
		if first <= r.usageSeq {
			// Never written by this code: a checkpoint only covers written groups.
			r.a.o.Log.Error().Int("partition", r.p).Uint64("first", first).Uint64("last", last).Uint64("checkpoint", r.usageSeq).
				Msg("insert intent overlaps the checkpoint; replaying it from the checkpoint")
		}
		r.floor = first
		r.cur = group{first: first, last: last, fixed: true}
		r.a.o.Log.Info().Int("partition", r.p).Uint64("first", first).Uint64("last", last).Msg("replaying the insert group of a saved intent")
	}
	r.rowsDone, r.anomDone = r.usageSeq, r.usageSeq
	r.st.seen.Store(r.usageSeq)
	r.st.written.Store(r.usageSeq)
	r.st.ledgerSeen.Store(r.ledgerSeq)
	return nil
}

// errUnwritten stops a partition's final checkpoint after a group's write
// failed.
var errUnwritten = errors.New("an insert group was not written: its intent is kept for the next start")

// ledgerFilters are the subjects a runner's ledger consumer reads.
var ledgerFilters = []string{events.SubjectTokenPrefix + ">"}

// filters are the subjects the runner's usage consumer reads.
func (r *runner) filters() []string {
	if r.all {
		return []string{events.SubjectUsagePrefix + ">"}
	}
	return []string{events.UsagePartitionFilter(r.p), events.SubjectUsageLegacy}
}

// run reads and analyses until ctx ends or the partition is lost, then
// writes what it analysed (within ShutdownGrace) and its final checkpoint.
func (r *runner) run() error {
	a := r.a
	a.o.Knowledge.Reading(r.p, r.ctx.Done())
	usage, err := a.ordered(r.ctx, events.StreamUsage, r.filters(), r.usageSeq)
	if err != nil {
		return err
	}
	ledger, err := a.ordered(r.ctx, events.StreamTokens, ledgerFilters, r.ledgerSeq)
	if err != nil {
		return err
	}
	fctx, stopFetch := context.WithCancel(r.ctx)
	defer stopFetch()
	in := make(chan runnerMsg, 256)
	fetchErr := make(chan error, 2)
	for _, f := range []struct {
		c      jetstream.Consumer
		ledger bool
	}{{ledger, true}, {usage, false}} {
		go func() {
			if err := fetchInto(fctx, a, f.c, f.ledger, in); err != nil && fctx.Err() == nil {
				fetchErr <- err
			}
		}()
	}
	r.timer = time.NewTimer(time.Hour)
	r.timer.Stop()
	r.flushT = time.NewTimer(time.Hour)
	r.flushT.Stop()
	err = r.loop(in, fetchErr)
	stopFetch()
	// A checkpoint being saved ends first: the final one must not be
	// overwritten by an older one.
	if r.saving != nil {
		_ = r.checkpointSaved(<-r.saving)
	}
	r.ckptWait = nil
	if r.flight != nil {
		// Given up: its anomalies are pending again, for the final
		// checkpoint (which has ShutdownGrace to make them durable).
		r.flight.cancel()
		r.flightEnded(<-r.flight.done)
	}
	if errors.Is(err, errLost) {
		a.o.Log.Warn().Int("partition", r.p).Msg("partition lost: stopped writing for it")
		return nil
	}
	// Shutdown: write what was analysed so the final checkpoint covers it.
	if cerr := r.checkpoint(); cerr != nil && !errors.Is(cerr, errLost) {
		a.o.Log.Warn().Err(cerr).Int("partition", r.p).Msg("final checkpoint skipped; the partition resumes from the previous one")
	}
	if r.inflight != nil {
		<-r.inflight
	}
	return err
}

// loop handles messages until ctx ends.
func (r *runner) loop(in <-chan runnerMsg, fetchErr <-chan error) error {
	a := r.a
	ckpt := time.NewTicker(a.o.CheckpointEvery)
	defer ckpt.Stop()
	idle := newIdleProbe()
	defer idle.t.Stop()
	moved := a.caughtUpSignal()
	poked := a.o.Knowledge.Poked(r.p)
	for {
		var inflight <-chan error
		if r.inflight != nil {
			inflight = r.inflight
		}
		// An insert being collected calls for the open group (combine.go),
		// also after a call this runner was too busy to wait for.
		var called <-chan struct{}
		if a.comb != nil {
			called = a.comb.closing() // a call from here on closes it
			if n := a.comb.calls.Load(); n != r.calls {
				r.calls = n
				if r.inflight == nil && !r.cur.empty() && !r.cur.fixed {
					if err := r.closeGroup(); err != nil {
						return err
					}
				}
			}
			if r.inflight != nil || r.cur.empty() || r.cur.fixed {
				called = nil
			}
		}
		var saving, flight <-chan error
		if r.saving != nil {
			saving = r.saving
		}
		if r.flight != nil {
			flight = r.flight.done
		}
		select {
		case <-r.ctx.Done():
			return nil
		case err := <-fetchErr:
			return err
		case m := <-in:
			idle.busy()
			if err := r.handle(m); err != nil {
				return err
			}
		case err := <-inflight:
			if err := r.written(err); err != nil {
				return err
			}
			if r.closeDue && !r.cur.fixed {
				if err := r.closeGroup(); err != nil {
					return err
				}
			}
			if r.ckptDue {
				if err := r.startCheckpoint(); err != nil {
					if errors.Is(err, errLost) || r.ctx.Err() != nil {
						return err
					}
					a.o.Log.Error().Err(err).Int("partition", r.p).Msg("checkpoint failed")
				}
			}
		case <-called:
			r.calls = a.comb.calls.Load()
			if err := r.closeGroup(); err != nil {
				return err
			}
		case <-r.timer.C:
			if !r.cur.fixed {
				if err := r.closeGroupSoon(); err != nil {
					return err
				}
			}
		case <-r.flushT.C:
			r.armed = false
			r.flushSoon()
		case err := <-flight:
			r.flightEnded(err)
			if err != nil && r.ctx.Err() != nil {
				return nil
			}
		case <-idle.t.C:
			if idle.tick() {
				if err := r.probe(idle); err != nil {
					return err
				}
			}
		case <-poked:
			// Another partition waits for this one to read further
			// (Knowledge): an idle one says at once that it caught up.
			if !idle.active {
				if err := r.probe(idle); err != nil {
					return err
				}
			}
		case <-moved.ch:
			// Kept across iterations, a generation signalled while this
			// runner was busy elsewhere is still seen here.
			own := moved.by == r.p && moved.next == a.caughtUpSignal()
			moved = a.caughtUpSignal()
			if !own && idle.nudged() {
				if err := r.probe(idle); err != nil {
					return err
				}
			}
		case <-ckpt.C:
			if err := r.startCheckpoint(); err != nil {
				if errors.Is(err, errLost) || r.ctx.Err() != nil {
					return err
				}
				a.o.Log.Error().Err(err).Int("partition", r.p).Msg("checkpoint failed")
			}
		case err := <-saving:
			if err := r.checkpointSaved(err); err != nil {
				return err
			}
		}
		r.maybeSave()
	}
}

// idleProbe paces the caught-up probes of a runner (probe). While
// messages arrive its timer ticks every probeTick to notice the first
// quiet tick, which probes: a partition that has read everything writes
// its open group at once. A quiet runner then backs off, doubling up to a
// second, and sleeps in between (an idle auditor costs next to nothing).
// A partition that read messages and caught up wakes the quiet runners of
// its auditor (caughtUpSignal): the stream moved, and a replay's barrier
// waits on every partition.
type idleProbe struct {
	t       *time.Timer
	active  bool // a message arrived since the last tick
	read    bool // a message arrived since the last probe
	backoff time.Duration
}

const probeTick = 20 * time.Millisecond

func newIdleProbe() *idleProbe {
	return &idleProbe{t: time.NewTimer(5 * time.Millisecond), backoff: probeTick}
}

// busy records a message. The first one after a quiet stretch brings the
// ticks back to probeTick.
func (p *idleProbe) busy() {
	if p.active {
		return
	}
	p.active, p.read = true, true
	if p.backoff > probeTick {
		p.backoff = probeTick
		p.t.Reset(probeTick)
	}
}

// tick reports whether this tick probes, and schedules the next one.
func (p *idleProbe) tick() bool {
	if p.active {
		p.active, p.backoff = false, probeTick
		p.t.Reset(probeTick)
		return false
	}
	p.t.Reset(p.backoff)
	p.backoff = min(2*p.backoff, time.Second)
	return true
}

// nudged reports whether a quiet runner probes now that another partition
// caught up; its backing off starts over.
func (p *idleProbe) nudged() bool {
	if p.active {
		return false
	}
	p.backoff = probeTick
	p.t.Reset(probeTick)
	return true
}

// caughtUpSignal is one generation of Auditor.caughtUpSig: ch is closed
// once, after by (the partition that caught up) and next (the generation
// that replaced it) are set.
type caughtUpSignal struct {
	ch   chan struct{}
	by   int
	next *caughtUpSignal
}

// caughtUpSignal returns the current generation.
func (a *Auditor) caughtUpSignal() *caughtUpSignal {
	if s := a.caughtUpSig.Load(); s != nil {
		return s
	}
	a.caughtUpSig.CompareAndSwap(nil, &caughtUpSignal{ch: make(chan struct{}), by: -1})
	return a.caughtUpSig.Load()
}

// signalCaughtUp wakes every runner waiting on the current generation.
func (a *Auditor) signalCaughtUp(p int) {
	old := a.caughtUpSignal()
	next := &caughtUpSignal{ch: make(chan struct{}), by: -1}
	if !a.caughtUpSig.CompareAndSwap(old, next) {
		return // another partition signalled this generation
	}
	old.by, old.next = p, next
	close(old.ch)
}

// probe runs when no message arrived for a while: a runner that has
// handled everything its consumers delivered, with nothing pending on
// the server, has handled its partition up to the stream's last sequence.
// It then makes its anomalies durable, and writes its open group at once
// if the group is large enough to pay for an insert (caughtUpRows): the
// end of a burst is written without waiting, while usage that trickles
// in (a partition caught up between every two messages) still waits out
// BatchWait, one insert a second rather than one every few messages. A
// partition that read messages since its last probe and caught up wakes
// the others (idleProbe).
func (r *runner) probe(idle *idleProbe) error {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	caught := false
	// seen and ledgerSeen are never below the sequences handled: nothing
	// of the partition's own lies before them.
	if l, ok := r.a.caughtUp(ctx, events.StreamUsage, r.filters(), r.st.seen.Load()); ok {
		caught = true
		r.a.o.Knowledge.CaughtUp(r.p, l)
		r.st.seen.Store(l)
		r.st.lag.Store(0)
		if !r.cur.empty() && !r.cur.fixed && len(r.cur.envs) >= r.a.o.caughtUpRows() {
			if err := r.closeGroupSoon(); err != nil {
				return err
			}
		}
	}
	if l, ok := r.a.caughtUp(ctx, events.StreamTokens, ledgerFilters, r.st.ledgerSeen.Load()); ok {
		r.st.ledgerSeen.Store(l)
	} else {
		caught = false
	}
	if idle.read && caught {
		idle.read = false
		r.a.signalCaughtUp(r.p)
	}
	r.flushSoon()
	r.progress()
	return nil
}

// caughtUp reports the stream's last sequence when no message on filters
// (the subjects a runner's consumer reads) lies between from and it: the
// runner has handled everything of its own up to the stream's end. from is
// the last sequence the runner handled, or the last it found caught up
// with (nothing of its own lies before it). The stream itself answers, a
// message lookup per filter, whatever the consumer's state: the
// consumer's pending count reads 0 for a while after new messages are
// stored (a chaos run lost rows to a check relying on it), its delivered
// stream sequence stops at its last message (a partition whose last
// message is not the stream's would never catch up), and messages taken
// from it may still wait in the client or the runner's channel.
func (a *Auditor) caughtUp(ctx context.Context, stream string, filters []string, from uint64) (uint64, bool) {
	s, err := a.stream(ctx, stream)
	if err != nil {
		return 0, false
	}
	si, err := s.Info(ctx)
	if err != nil {
		return 0, false
	}
	last := si.State.LastSeq
	if last <= from {
		return from, true // the stream has not moved past from
	}
	for _, f := range filters {
		_, err := s.GetMsg(ctx, from+1, jetstream.WithGetMsgSubject(f))
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, false // a message of its own not handled yet, or no answer
		}
	}
	return last, true
}

// handle analyses one message.
func (r *runner) handle(m runnerMsg) error {
	md := m.md
	if md == nil {
		return nil
	}
	seq := md.Sequence.Stream
	if m.ledger {
		r.observeLedger(m.m, seq)
		return nil
	}
	if seq <= r.usageSeq {
		return nil
	}
	r.st.lag.Store(md.NumPending)
	if r.cur.fixed && seq > r.cur.last {
		if err := r.closeGroup(); err != nil {
			return err
		}
	}
	keep := seq >= r.floor // rows not written yet
	if keep && r.cur.empty() {
		r.cur = r.newGroup(seq)
		r.timer.Reset(r.groupWait(time.Now()))
	}
	know := r.a.o.Knowledge
	know.Judging(r.p, seq)
	r.observeUsage(m.m, seq, keep)
	know.Read(r.p, r.evMax)
	r.usageSeq = seq
	r.st.seen.Store(seq)
	if keep {
		if r.cur.fixed {
			if seq >= r.cur.last {
				return r.closeGroup()
			}
			return nil
		}
		r.cur.last = seq
		if len(r.cur.envs) >= r.a.o.BatchSize && (r.inflight == nil || len(r.cur.envs) >= maxGroupFactor*r.a.o.BatchSize) {
			return r.closeGroup()
		} else if len(r.cur.envs) >= r.a.o.BatchSize {
			r.closeDue = true
		}
	}
	if len(r.pending) == 0 && r.flight == nil {
		r.anomDone = seq
	}
	return nil
}

// observeUsage decodes a usage message once, analyses its events and
// appends their rows (keep) to the open group.
func (r *runner) observeUsage(m jetstream.Msg, seq uint64, keep bool) {
	a := r.a
	subject := m.Subject()
	if isLegacyUsage(subject) {
		if p, ok := a.legacy.get(seq); ok && !r.all && p != r.p {
			return // another partition's, as the runner that decoded it found
		}
		e, u, err := decodeAttributedUsage(subject, m.Data())
		if err != nil {
			if r.p == 0 || r.all { // every runner reads legacy subjects: one dead-letters
				r.deadLetter(m, err)
			}
			return
		}
		if !r.all {
			p := events.UsagePartition(u.Tenant, u.Holder, r.parts)
			a.legacy.put(seq, p)
			if p != r.p {
				return // another partition's
			}
		}
		r.observe(e, u, keep, true)
		return
	}
	if !isBatchUsage(subject) || bytes.HasPrefix(m.Data(), []byte("{")) {
		// Neither shape an enforcer may publish: a per-event message on
		// a batch subject, or a subject of another length.
		r.deadLetter(m, fmt.Errorf("%w: subject %q is not %s<tenant>.<enforcer> (events) or %s<tenant>.<enforcer>.<holder> (batches)",
			events.ErrMisattributed, publishedSubject(subject), events.SubjectUsagePrefix, events.SubjectUsagePrefix))
		return
	}
	if err := events.DecodeUsageBatch(subject, m.Data(), &r.ub); err != nil {
		r.deadLetter(m, err)
		return
	}
	at := r.ub.Base.UnixMicro()
	if _, dup := r.batchIDs[r.ub.ID]; dup {
		r.st.dups.Add(1)
		a.o.Log.Debug().Int("partition", r.p).Str("batch", r.ub.ID.String()).Msg("batch seen before, skipped")
		return
	}
	r.batchIDs[r.ub.ID] = at
	r.maxEvent = max(r.maxEvent, at)
	for r.ub.Next(&r.env, &r.ud) {
		r.observe(r.env, &r.ud, keep, false)
	}
}

// legacyMemo remembers the partition of recent legacy per-event messages
// by stream sequence. Every runner reads every legacy message (its subject
// names no holder): the first to decode one records its partition, and
// the runners it is not for skip it without decoding it (a JSON decode
// each, P times over, before). A slot holds one sequence; a miss, or a
// slot taken by another sequence, means decoding as before.
type legacyMemo struct {
	slots [legacyMemoSlots]atomic.Uint64 // seq<<7 | partition+1
}

const legacyMemoSlots = 4096

func (m *legacyMemo) put(seq uint64, p int) {
	if p < 0 || p >= events.MaxUsagePartitions || seq >= 1<<57 {
		return
	}
	m.slots[seq%legacyMemoSlots].Store(seq<<7 | uint64(p+1))
}

func (m *legacyMemo) get(seq uint64) (int, bool) {
	v := m.slots[seq%legacyMemoSlots].Load()
	if v&127 == 0 || v>>7 != seq {
		return 0, false
	}
	return int(v&127) - 1, true
}

// isBatchUsage: a batch subject, as published or as stored.
func isBatchUsage(subject string) bool {
	if strings.HasPrefix(subject, events.SubjectUsagePartPrefix) {
		return true
	}
	rest, ok := strings.CutPrefix(subject, events.SubjectUsagePrefix)
	return ok && strings.Count(rest, ".") == 2
}

// isLegacyUsage: a per-event subject, cordon.usage.<tenant>.<enforcer>.
func isLegacyUsage(subject string) bool {
	rest, ok := strings.CutPrefix(subject, events.SubjectUsagePrefix)
	return ok && strings.Count(rest, ".") == 1
}

// observe analyses one event and appends its row. u is copied when kept;
// owned says u is already the caller's to keep.
func (r *runner) observe(e events.Envelope, u *events.UsageDecided, keep, owned bool) {
	if t := e.Time.Unix(); t > r.evMax {
		r.evMax = t
	}
	r.st.events.Add(1)
	r.a.observed.Add(1)
	if r.det != nil {
		found := r.det.ObserveUsage(e, u)
		if len(found) > 0 {
			attribute(found, e, u)
			for _, an := range found {
				r.publish(an)
			}
		}
	}
	if !keep {
		return
	}
	if !owned {
		u = r.cur.keep(u, &r.free)
	}
	e.Data = u
	if n := len(r.cur.envs); n == cap(r.cur.envs) {
		// Double: append grows a large slice by a quarter, copying the
		// group's rows again at every step.
		r.cur.envs = slices.Grow(r.cur.envs, max(n, initialEnvs))
	}
	r.cur.envs = append(r.cur.envs, e)
}

// observeLedger feeds a ledger event of this partition's keys (or of no
// key) to the detector.
func (r *runner) observeLedger(m jetstream.Msg, seq uint64) {
	if seq <= r.ledgerSeq {
		return
	}
	r.ledgerSeq = seq
	r.st.ledgerSeen.Store(seq)
	if r.det == nil {
		return
	}
	e, err := decodeLedger(m.Data())
	if err != nil {
		return // dead-lettered by the ledger's row consumer
	}
	if t, h, ok := events.PartitionKey(e.Data); ok && !r.all && events.UsagePartition(t, h, r.parts) != r.p {
		return
	}
	for _, an := range r.det.Observe(e) {
		r.publish(an)
	}
}

// closeGroup hands the open group to its writer, once the group before
// it is written (one in flight per partition).
func (r *runner) closeGroup() error {
	r.closeDue = false
	r.timer.Stop()
	if r.cur.empty() {
		return nil
	}
	if err := r.waitWritten(); err != nil {
		return err
	}
	g := r.cur
	r.cur = group{}
	r.peak = max(r.peak, len(g.envs))
	if len(g.envs) == 0 && !g.fixed {
		r.rowsDone = max(r.rowsDone, g.last)
		r.recycle(&g)
		r.progress()
		return nil
	}
	r.infl = &g
	ch := make(chan error, 1)
	r.inflight = ch
	go func() { ch <- r.write(&g) }()
	return nil
}

// maxGroupFactor bounds a group that keeps growing while the one before
// it is written: at maxGroupFactor × BatchSize rows the runner waits for
// that write (back-pressure on a store that cannot keep up). With the
// default BatchSize a partition holds at most 100,000 rows (about 30 MB).
const maxGroupFactor = 2

// closeGroupSoon closes the open group now if no group is being written,
// and otherwise marks it due: the loop closes it when the write in flight
// ends. Detection goes on meanwhile (a group's rows keep accumulating),
// where closeGroup would wait for the write.
func (r *runner) closeGroupSoon() error {
	if r.inflight != nil {
		r.closeDue = true
		return nil
	}
	return r.closeGroup()
}

// waitWritten waits for the group in flight.
func (r *runner) waitWritten() error {
	if r.inflight == nil {
		return nil
	}
	return r.written(<-r.inflight)
}

// written records the end of the in-flight group's write.
func (r *runner) written(err error) error {
	g := r.infl
	r.inflight, r.infl = nil, nil
	if err != nil {
		r.unwritten = true
		if r.ctx.Err() == nil && !errors.Is(err, errLost) {
			r.a.o.Log.Error().Err(err).Int("partition", r.p).Msg("insert group not written")
		}
		if errors.Is(err, errLost) {
			return err
		}
		return fmt.Errorf("partition %d: group [%d, %d] not written: %w", r.p, g.first, g.last, err)
	}
	r.rowsDone = max(r.rowsDone, g.last)
	r.st.rows.Add(uint64(len(g.envs)))
	r.st.groups.Add(1)
	r.a.usage.Add(uint64(len(g.envs)))
	if g.fixed {
		r.st.replayed.Add(1)
	}
	r.recycle(g)
	r.progress()
	return nil
}

// newGroup opens a group at seq on the spare buffers.
func (r *runner) newGroup(seq uint64) group {
	g := group{first: seq, envs: r.spare.envs, us: r.spare.us}
	if g.envs == nil {
		g.envs = make([]events.Envelope, 0, min(r.a.o.BatchSize, max(initialEnvs, r.peak)))
	}
	r.spare = group{}
	return g
}

// recycle keeps a written group's buffers for the next groups.
func (r *runner) recycle(g *group) {
	clear(g.envs)
	if cap(g.envs) > cap(r.spare.envs) {
		r.spare.envs = g.envs[:0]
	}
	for _, c := range g.us {
		clear(c)
		r.free = append(r.free, c[:0])
	}
	clear(g.us)
	if cap(g.us) > cap(r.spare.us) {
		r.spare.us = g.us[:0]
	}
	g.envs, g.us = nil, nil
}

// write saves g's intent and inserts it with its token (one insert with
// the groups of other partitions, unless SeparateInserts), retrying until
// it succeeds, wctx ends or the partition is lost. A group rebuilt from
// its intent is written by what the table lacks of it (writeMissing).
func (r *runner) write(g *group) error {
	a := r.a
	ctx := r.wctx
	if err := a.hook(stepBeforeIntent, r.p); err != nil {
		return err
	}
	if !g.fixed {
		if err := a.retry(ctx, len(g.envs), func() error {
			if !a.owner.Valid(r.p) {
				return errLost
			}
			return a.o.State.SaveIntent(ctx, r.p, g.first, g.last)
		}); err != nil {
			return err
		}
	}
	if err := a.hook(stepAfterIntent, r.p); err != nil {
		return err
	}
	var err error
	switch {
	case g.fixed:
		err = r.writeMissing(ctx, g)
	case a.comb != nil:
		err = a.comb.insert(ctx, r.p, g)
	default:
		err = r.insert(ctx, groupToken(r.a.usageEpoch, r.p, g.first, g.last), g.envs)
	}
	if err != nil {
		return err
	}
	return a.hook(stepAfterInsert, r.p)
}

// writeMissing writes the rows of a group rebuilt from its intent (after
// a crash, or a combined insert abandoned) that the table does not hold.
// The intent does not say which insert wrote the group, nor whether it
// landed: alone with its partition's token, or with other partitions'
// groups under a combined token (combine.go). So the rows are read back
// (Store.MissingUsage) rather than inserted again under a token. The
// check also covers an engine that remembers an insert it never
// committed (chDB does when the process is killed while it commits: its
// de-duplication log is written before the part), which the same token
// would have dropped. The rows missing go in one insert under a token of
// their own, new in each process (a crash during it leaves the next
// start to check again); retries in this process reuse it. When the
// previous owner of the partition is still alive and its insert of the
// group commits between this check and this insert, its rows are written
// twice: a lease is handed over only after it expired, and an owner
// stops writing when it loses its lease, so that takes an insert running
// for longer than the lease's TTL.
func (r *runner) writeMissing(ctx context.Context, g *group) error {
	a := r.a
	var missing []events.Envelope
	if err := a.retry(ctx, len(g.envs), func() (err error) {
		if !a.owner.Valid(r.p) {
			return errLost
		}
		missing, err = a.o.Store.MissingUsage(ctx, g.envs)
		return err
	}); err != nil {
		return fmt.Errorf("partition %d: check group [%d, %d]: %w", r.p, g.first, g.last, err)
	}
	if len(missing) == 0 {
		return nil
	}
	if len(missing) < len(g.envs) {
		a.o.Log.Warn().Int("partition", r.p).Uint64("first", g.first).Uint64("last", g.last).
			Int("rows", len(g.envs)).Int("missing", len(missing)).
			Msg("part of a replayed insert group was not stored (the engine remembered an insert its crash did not commit): writing the rest")
	}
	return r.insert(ctx, groupToken(r.a.usageEpoch, r.p, g.first, g.last)+":rest:"+uuid.NewString(), missing)
}

// insert writes envs as one insert de-duplicated by token, while the
// partition is the auditor's, one of at most Writers at a time, retrying
// until it succeeds, ctx ends or the partition is lost.
func (r *runner) insert(ctx context.Context, token string, envs []events.Envelope) error {
	a := r.a
	return a.retry(ctx, len(envs), func() error {
		if !a.owner.Valid(r.p) {
			return errLost
		}
		a.writeSem <- struct{}{}
		defer func() { <-a.writeSem }()
		if err := a.o.Store.InsertUsageOnce(ctx, token, envs); err != nil {
			return err
		}
		a.batches.Add(1)
		return nil
	})
}

// progress publishes how far the partition is durable.
func (r *runner) progress() {
	rows := r.rowsDone
	if r.cur.empty() && r.inflight == nil {
		rows = max(rows, r.st.seen.Load())
	}
	anom := r.anomDone
	if len(r.pending) == 0 && r.flight == nil {
		anom = max(anom, r.st.seen.Load())
	}
	r.st.written.Store(max(r.st.written.Load(), min(rows, anom)))
}

// pendingCheckpoint is a checkpoint encoded at usage sequence usage and
// ledger sequence ledger, with raised anomalies published by then.
type pendingCheckpoint struct {
	data          []byte
	usage, ledger uint64
	raised        uint64
}

// startCheckpoint is the periodic checkpoint, made without stopping
// detection. It snapshots the detector state in the loop (the state must
// be the one at these sequences) and closes the open group there, so
// that the group ends at the snapshot's sequence and every later intent
// starts after it. The open group can close at once only when no write
// is in flight: otherwise the snapshot waits for that write's end
// (ckptDue). The loop saves the snapshot (maybeSave, on another
// goroutine) once every row and anomaly it covers is durable. Before,
// the loop itself waited for the write in flight, the open group's
// write, the anomalies and the checkpoint's fsyncs while the partition's
// events queued up (detection latency).
func (r *runner) startCheckpoint() error {
	if r.cur.fixed || r.ckptWait != nil || r.saving != nil {
		return nil
	}
	if r.saved && r.savedUsage == r.usageSeq && r.savedLg == r.ledgerSeq {
		return nil
	}
	if !r.cur.empty() && r.inflight != nil {
		r.ckptDue = true
		return nil
	}
	r.ckptDue = false
	if !r.a.owner.Valid(r.p) {
		return errLost
	}
	r.pruneBatchIDs()
	data, err := encodeCheckpoint(checkpointV2{Partition: r.p, Partitions: r.parts, UsageSeq: r.usageSeq, LedgerSeq: r.ledgerSeq, Batches: r.batchList()}, r.det)
	if err != nil {
		return fmt.Errorf("partition %d: checkpoint: %w", r.p, err)
	}
	r.ckptWait = &pendingCheckpoint{data: data, usage: r.usageSeq, ledger: r.ledgerSeq, raised: r.raised}
	return r.closeGroup() // nothing in flight: it does not wait
}

// maybeSave starts saving the waiting checkpoint once what it covers is
// durable: every row of the messages up to its usage sequence written
// (the groups holding them, or nothing open nor in flight), and every
// anomaly published before it flushed.
func (r *runner) maybeSave() {
	c := r.ckptWait
	if c == nil || r.saving != nil {
		return
	}
	rows := r.rowsDone >= c.usage || (r.cur.empty() && r.inflight == nil)
	if !rows || r.flushed < c.raised {
		return
	}
	r.ckptWait = nil
	r.savingCp = *c
	done := make(chan error, 1)
	r.saving = done
	a, p, ctx := r.a, r.p, r.wctx
	go func() {
		done <- func() error {
			if !a.owner.Valid(p) {
				return errLost
			}
			if err := a.hook(stepBeforeCheckpoint, p); err != nil {
				return err
			}
			if err := a.o.State.SaveCheckpoint(ctx, p, c.data); err != nil {
				return fmt.Errorf("partition %d: checkpoint: %w", p, err)
			}
			return nil
		}()
	}()
}

// checkpointSaved records the end of a checkpoint's save.
func (r *runner) checkpointSaved(err error) error {
	r.saving = nil
	c := r.savingCp
	r.savingCp = pendingCheckpoint{}
	if err != nil {
		if errors.Is(err, errLost) || r.ctx.Err() != nil {
			return err
		}
		r.a.o.Log.Error().Err(err).Int("partition", r.p).Msg("checkpoint failed")
		return nil
	}
	r.saved, r.savedUsage, r.savedLg = true, c.usage, c.ledger
	return nil
}

// checkpoint writes the open group, makes the anomalies durable and saves
// the detector state with the sequences it covers, waiting for each: the
// final checkpoint of a stopping runner. An open replayed group is never
// cut short: the checkpoint waits for it to complete.
func (r *runner) checkpoint() error {
	a := r.a
	if r.cur.fixed {
		return nil
	}
	if r.unwritten {
		// Writing the open group would replace the failed group's
		// intent: the next start would take its rows for written.
		return errUnwritten
	}
	if err := r.closeGroup(); err != nil {
		return err
	}
	if err := r.waitWritten(); err != nil {
		return err
	}
	ctx := r.wctx
	if err := r.flush(ctx); err != nil {
		return err
	}
	r.progress()
	if r.saved && r.savedUsage == r.usageSeq && r.savedLg == r.ledgerSeq {
		return nil
	}
	if !a.owner.Valid(r.p) {
		return errLost
	}
	if err := a.hook(stepBeforeCheckpoint, r.p); err != nil {
		return err
	}
	r.pruneBatchIDs()
	data, err := encodeCheckpoint(checkpointV2{Partition: r.p, Partitions: r.parts, UsageSeq: r.usageSeq, LedgerSeq: r.ledgerSeq, Batches: r.batchList()}, r.det)
	if err != nil {
		return fmt.Errorf("partition %d: checkpoint: %w", r.p, err)
	}
	if err := a.o.State.SaveCheckpoint(ctx, r.p, data); err != nil {
		return fmt.Errorf("partition %d: checkpoint: %w", r.p, err)
	}
	r.saved, r.savedUsage, r.savedLg = true, r.usageSeq, r.ledgerSeq
	return nil
}

// pruneBatchIDs forgets batch ids older than BatchIDWindow before the
// newest batch seen.
func (r *runner) pruneBatchIDs() {
	floor := r.maxEvent - BatchIDWindow.Microseconds()
	for id, at := range r.batchIDs {
		if at < floor {
			delete(r.batchIDs, id)
		}
	}
}

func (r *runner) batchList() []seenBatch {
	out := make([]seenBatch, 0, len(r.batchIDs))
	for id, at := range r.batchIDs {
		out = append(out, seenBatch{ID: id, At: at})
	}
	return out
}

// deadLetter moves a message aside; it never stalls the partition.
func (r *runner) deadLetter(m jetstream.Msg, err error) {
	r.st.dead.Add(1)
	r.a.deadLetter(m, err)
}

// groupWait is how long a group opened at now stays open: until the
// first instant of this partition's beat at least half of BatchWait away.
// The beat is a grid of instants BatchWait apart. A partition that writes
// steadily writes every BatchWait, on its beat; after a quiet spell its
// first group lasts from half to 1.5 × BatchWait, BatchWait on average (a
// group cut short would cost a whole insert's fixed work). With combined
// inserts (the default) every partition has the same beat, so that their
// groups close together and go in one insert. With SeparateInserts the
// beat is shifted from the Unix epoch's by p/parts of BatchWait:
// partitions that receive usage together then write one after another
// across each BatchWait rather than all at once, where their inserts would
// queue in the engine together and take the cores from detection for as
// long.
func (r *runner) groupWait(now time.Time) time.Duration {
	w := int64(r.a.o.BatchWait)
	phase := w * int64(r.p) / int64(max(r.a.parts, 1))
	if r.a.comb != nil {
		phase = 0 // one beat for every partition: their groups go in one insert
	}
	from := now.UnixNano() + w/2 - phase
	k := from / w
	if k*w < from {
		k++ // the first beat at or after from
	}
	return time.Duration(k*w + phase - now.UnixNano())
}
