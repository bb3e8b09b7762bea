// Package auditor turns the USAGE stream into analyst-queryable history and
// anomalies. USAGE is split into partitions by (tenant, holder)
// (events.UsagePartition); an Owner says which this auditor runs, and each
// runs in its own goroutine (runner.go): one ordered consumer, one decode
// per message, its own detector, rows written exactly once by intent and
// de-duplication token, and a checkpoint of its detector state and
// progress in a PartitionState, so a partition resumes anywhere without
// losing baselines, re-alerting or writing a row twice. Anomalies carry
// deterministic ids; they are published at once and made durable (on
// ANOMALIES and in the store) before a checkpoint covers them. Ledger rows
// come from a durable consumer shared by every instance, acknowledged
// after their write. The auditor also answers analysts' queries over NATS
// (QueryServer), since it owns the store.
package auditor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/privdir"
)

// Store is where the auditor writes, safe for concurrent use (pkg/store
// implements it). Usage rows are written exactly once: each insert group
// goes to InsertUsageOnce with a de-duplication token derived from its
// stream range, and a group written again after a crash carries the same
// token, so ClickHouse drops it; the rows of a group written again are
// then checked (MissingUsage), because a crash during an insert can leave
// the engine remembering the token of rows it never committed. Anomaly
// and ledger writes must be idempotent by event id; anomaly writes are
// checked the same way (MissingAnomalies).
type Store interface {
	// InsertUsageOnce writes evs as one insert de-duplicated by token.
	InsertUsageOnce(ctx context.Context, token string, evs []events.Envelope) error
	// MissingUsage returns the events of evs whose rows are not stored.
	MissingUsage(ctx context.Context, evs []events.Envelope) ([]events.Envelope, error)
	InsertAnomalies(ctx context.Context, evs []events.Envelope) error
	// InsertAnomaliesOnce writes evs as one insert de-duplicated by token.
	InsertAnomaliesOnce(ctx context.Context, token string, evs []events.Envelope) error
	// MissingAnomalies returns the anomalies of evs that are not stored.
	MissingAnomalies(ctx context.Context, evs []events.Envelope) ([]events.Envelope, error)
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
	DefaultBatchSize       = 50_000
	DefaultBatchWait       = time.Second
	DefaultAnomalyWait     = 100 * time.Millisecond
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
	// NewDetector makes the detector of one partition (parts is the
	// partition count: bounds divided by it keep the total). Nil, with
	// Detector nil too, disables detection.
	NewDetector func(p, parts int) (Detector, error)
	// Detector, when set (and NewDetector not), is the one detector of an
	// auditor that runs the whole USAGE stream as a single partition,
	// whatever the stream's partition count.
	Detector Detector
	// Knowledge, when set, is what the partitions' detectors share: each
	// runner reports its progress to it (the detectors' gates).
	Knowledge *Knowledge
	// Owner gives the partitions to run (default StaticOwner{}: all).
	Owner Owner
	// State keeps each partition's checkpoint and insert intent (default
	// DirState{StateDir}, or memory only when StateDir is empty too: a new
	// Auditor then starts from the beginning of the stream).
	State PartitionState
	// StateDir holds the partition checkpoints when State is nil.
	StateDir string
	// Durable is the consumer name prefix (default events.DurableAuditor,
	// "auditor"; see events.AuditorDurables). Only the ledger rows use a
	// durable consumer.
	Durable string
	// BatchSize is the most rows of one usage insert group (a group is
	// closed at the first message that reaches it; default
	// DefaultBatchSize). BatchWait is how long a usage group stays open
	// (default DefaultBatchWait): a larger group costs the store less per
	// row, and its rows reach ClickHouse later. Groups close on a beat of
	// their partition's, BatchWait apart, so that partitions write in turn;
	// the first group after a quiet spell lasts from half to 1.5 ×
	// BatchWait to fall on it (runner.groupWait).
	BatchSize int
	BatchWait time.Duration
	// AnomalyWait is how long an anomaly or a ledger event waits at most
	// to be written (default DefaultAnomalyWait); anomalies are published
	// on NATS at once whatever it is.
	AnomalyWait time.Duration
	// Writers is how many inserts run at once over every partition
	// (default DefaultWriters); each partition has one group in flight,
	// and combined inserts go one at a time.
	Writers int
	// SeparateInserts writes each partition's groups and anomalies in
	// inserts of their own, the groups on beats spread across BatchWait.
	// By default the groups that an auditor's partitions close together
	// (on one beat) go in one insert, and so do the anomalies they raise
	// within half an AnomalyWait: fewer, larger inserts cost the engine
	// less per row (combine.go, anomalywriter.go).
	SeparateInserts bool
	// CheckpointEvery is the partition checkpoint interval (default 5s).
	CheckpointEvery time.Duration
	// AckWait is how long JetStream waits for the acknowledgement of a
	// ledger row before it redelivers it (default 30s).
	AckWait time.Duration
	// ShutdownGrace bounds how long Run, once its context ends, keeps
	// writing what was analysed so that the final checkpoints cover it
	// (default 10s).
	ShutdownGrace time.Duration
	// Source names this instance in the events it emits.
	Source string
	Log    zerolog.Logger
	// OnAnomaly, if set, is called for each anomaly when it is published
	// (from a partition's goroutine; it is made durable shortly after).
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
	if o.AnomalyWait <= 0 {
		o.AnomalyWait = DefaultAnomalyWait
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
	if o.Owner == nil {
		o.Owner = StaticOwner{}
	}
	if o.State == nil {
		if o.StateDir != "" {
			o.State = DirState{Dir: o.StateDir}
		} else {
			o.State = &memState{}
		}
	}
	return nil
}

// pullMax is how many messages each consumer keeps buffered client side.
func (o *Options) pullMax() int { return min(max(o.BatchSize/2, 256), 10_000) }

// Stats are the auditor's counters.
type Stats struct {
	// Usage and Ledger count rows written; Anomalies those published (a
	// re-derived one again after a restart); Dead the messages moved to
	// the dead letters; Batches the inserts (of usage, each of one
	// partition's group or of several combined, and of ledger batches);
	// WriteErrors the failed write attempts (each retried).
	Usage       uint64 `json:"usage"`
	Ledger      uint64 `json:"ledger"`
	Anomalies   uint64 `json:"anomalies"`
	Dead        uint64 `json:"dead"`
	Batches     uint64 `json:"batches"`
	WriteErrors uint64 `json:"write_errors"`
	// CombinedInserts counts the usage inserts (of Batches) that carried
	// the groups of several partitions.
	CombinedInserts uint64 `json:"combined_inserts"`
	// AnomalyInserts counts the anomaly inserts: each carries the
	// anomalies of one partition, or with combined inserts those every
	// partition raised within a short linger.
	AnomalyInserts uint64 `json:"anomaly_inserts"`
	// Observed counts usage events analysed.
	Observed uint64 `json:"observed"`
	// LastUsageSeq is the USAGE sequence up to which every owned
	// partition's messages have their rows written and their anomalies
	// durable (on ANOMALIES and in the store); LastLedgerSeq the TOKENS
	// sequence up to which ledger rows are written and acknowledged.
	LastUsageSeq  uint64 `json:"last_usage_seq"`
	LastLedgerSeq uint64 `json:"last_ledger_seq"`
	// SeenUsageSeq and SeenLedgerSeq are the USAGE and TOKENS sequences up
	// to which every owned partition has handled the messages it reads
	// (analysed, or skipped as undecodable or seen before). A replay waits
	// on these to keep ledger and usage events in order.
	SeenUsageSeq  uint64 `json:"seen_usage_seq"`
	SeenLedgerSeq uint64 `json:"seen_ledger_seq"`
	// InFlight is the number of inserts being written.
	InFlight int `json:"in_flight"`
	// Partitions are the owned partitions, in order (PartitionCount of them
	// on the stream).
	PartitionCount int              `json:"partition_count,omitempty"`
	Partitions     []PartitionStats `json:"partitions,omitempty"`
}

// PartitionStats are one owned partition's counters.
type PartitionStats struct {
	Partition int `json:"partition"`
	// Seen and Written are its SeenUsageSeq and LastUsageSeq; Lag the
	// partition's messages not yet delivered (at its last message).
	Seen    uint64 `json:"seen"`
	Written uint64 `json:"written"`
	Lag     uint64 `json:"lag"`
	// Events analysed, Rows written, Anomalies raised, Dead letters and
	// Duplicates (batches seen before, skipped).
	Events     uint64 `json:"events"`
	Rows       uint64 `json:"rows"`
	Anomalies  uint64 `json:"anomalies"`
	Dead       uint64 `json:"dead"`
	Duplicates uint64 `json:"duplicates"`
	// Replayed counts insert groups rebuilt from an intent saved before a
	// restart and inserted again with their token.
	Replayed uint64 `json:"replayed,omitempty"`
}

// Steps of a partition's writes where the tests inject a crash (hook).
const (
	stepBeforeIntent     = "before-intent"
	stepAfterIntent      = "after-intent"
	stepAfterInsert      = "after-insert"
	stepBeforeCheckpoint = "before-checkpoint"
)

// hook runs the tests' fault injection at step: an error stops the write
// or checkpoint there, as a crash would.
func (a *Auditor) hook(step string, p int) error {
	if a.crash == nil {
		return nil
	}
	return a.crash(step, p)
}

// Auditor is the usage consumer and detection pipeline.
type Auditor struct {
	o        Options
	owner    Owner
	writeSem chan struct{}
	comb     *combiner                      // nil with SeparateInserts
	anw      *anomalyWriter                 // nil with SeparateInserts
	crash    func(step string, p int) error // tests only (hook)

	mu    sync.Mutex
	parts int // the stream's partition count (1 without partitions)
	// usageEpoch names the USAGE stream (its creation time, base 36) in
	// every usage insert's de-duplication token: a stream created again
	// starts its sequences over, and its first inserts must not be taken
	// for copies of the old stream's that ClickHouse still remembers.
	usageEpoch string
	runners    map[int]*runner
	streams    map[string]jetstream.Stream

	usage, ledger, anomalies, dead, batches, writeErrs, observed atomic.Uint64
	anomalyInserts                                               atomic.Uint64
	lastLedgerSeq                                                atomic.Uint64
	// caughtUp is closed (and replaced) when a partition that read
	// messages has caught up with the stream: the idle runners probe
	// then (idleProbe), so a replay's barrier does not wait on them.
	caughtUpSig    atomic.Pointer[caughtUpSignal]
	legacy         legacyMemo
	ledgerInflight atomic.Int64
}

// caughtUpRows is the least rows an open group holds for a caught-up
// partition to write it before BatchWait (runner.probe): a tenth of
// BatchSize. Each insert costs a fixed amount in the engine (parts in
// the raw table and each rollup, their later merges: about 70 ms of CPU
// on a 2-core machine with chDB, measured with usage published evenly at
// 3,500 events/s), so a partition that catches up between every two
// messages must not write every time it does.
func (o *Options) caughtUpRows() int { return max(1, o.BatchSize/10) }

// New validates the options.
func New(o Options) (*Auditor, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	a := &Auditor{o: o, owner: o.Owner, writeSem: make(chan struct{}, o.Writers), runners: map[int]*runner{}, streams: map[string]jetstream.Stream{}}
	if !o.SeparateInserts {
		a.comb = newCombiner(a)
		a.anw = newAnomalyWriter(a)
	}
	if o.StateDir != "" {
		// The detector state says which tokens are used from where.
		if err := privdir.EnsureLogged(o.StateDir, o.Log); err != nil {
			return nil, fmt.Errorf("auditor: state directory: %w", err)
		}
	}
	return a, nil
}

// Stats returns a snapshot of the counters.
func (a *Auditor) Stats() Stats {
	st := Stats{
		Usage: a.usage.Load(), Ledger: a.ledger.Load(), Anomalies: a.anomalies.Load(), Dead: a.dead.Load(),
		Batches: a.batches.Load(), WriteErrors: a.writeErrs.Load(), Observed: a.observed.Load(), AnomalyInserts: a.anomalyInserts.Load(),
		LastLedgerSeq: a.lastLedgerSeq.Load(), InFlight: int(a.ledgerInflight.Load()) + len(a.writeSem),
	}
	if a.comb != nil {
		st.CombinedInserts = a.comb.inserts.Load()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st.PartitionCount = a.parts
	first := true
	for _, p := range slices.Sorted(maps.Keys(a.runners)) {
		r := a.runners[p].st
		ps := PartitionStats{Partition: p, Seen: r.seen.Load(), Written: r.written.Load(), Lag: r.lag.Load(),
			Events: r.events.Load(), Rows: r.rows.Load(), Anomalies: r.anomalies.Load(), Dead: r.dead.Load(), Duplicates: r.dups.Load(), Replayed: r.replayed.Load()}
		st.Partitions = append(st.Partitions, ps)
		lseen := r.ledgerSeen.Load()
		if first {
			st.SeenUsageSeq, st.LastUsageSeq, st.SeenLedgerSeq = ps.Seen, ps.Written, lseen
			first = false
			continue
		}
		st.SeenUsageSeq, st.LastUsageSeq, st.SeenLedgerSeq = min(st.SeenUsageSeq, ps.Seen), min(st.LastUsageSeq, ps.Written), min(st.SeenLedgerSeq, lseen)
	}
	return st
}

// Run consumes the ledger and the owned usage partitions until ctx ends,
// then finishes writing what it analysed (within ShutdownGrace) and writes
// the final checkpoints.
func (a *Auditor) Run(ctx context.Context) error {
	parts, all, err := a.partitions(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.parts = parts
	a.mu.Unlock()
	ledger, err := a.consumer(ctx, events.AuditorLedgerDurable(a.o.Durable), events.SubjectTokenPrefix+">")
	if err != nil {
		return err
	}
	runErr := make(chan error, 1+events.MaxUsagePartitions)
	lctx, stopLedger := context.WithCancel(ctx)
	ledgerDone := make(chan struct{})
	go func() {
		defer close(ledgerDone)
		if err := a.ledgerRows(lctx, ledger); err != nil && lctx.Err() == nil {
			runErr <- err
		}
	}()
	if a.comb != nil {
		stop := make(chan struct{})
		combDone := make(chan struct{})
		go func() {
			defer close(combDone)
			a.comb.run(stop)
		}()
		anwDone := make(chan struct{})
		go func() {
			defer close(anwDone)
			a.anw.run(stop)
		}()
		// After own: every runner has stopped, none waits on the combiner.
		defer func() {
			close(stop)
			<-combDone
			<-anwDone
		}()
	}
	err = a.own(ctx, parts, all, runErr)
	stopLedger()
	<-ledgerDone
	return err
}

// partitions reads the USAGE stream's partition count: 1, reading every
// usage subject (all), for a stream without partitions or an auditor with
// a single Detector.
func (a *Auditor) partitions(ctx context.Context) (parts int, all bool, err error) {
	s, err := a.stream(ctx, events.StreamUsage)
	if err != nil {
		return 0, false, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("auditor: %s stream info: %w", events.StreamUsage, err)
	}
	a.usageEpoch = strconv.FormatInt(info.Created.UnixNano(), 36)
	p := events.UsagePartitionsOf(info.Config)
	if p == 0 || (a.o.Detector != nil && a.o.NewDetector == nil) {
		return 1, true, nil
	}
	return p, false, nil
}

// stream returns the handle of a stream (cached).
func (a *Auditor) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	a.mu.Lock()
	s, ok := a.streams[name]
	a.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := a.o.JS.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("auditor: stream %s: %w", name, err)
	}
	a.mu.Lock()
	a.streams[name] = s
	a.mu.Unlock()
	return s, nil
}

// runHandle is a running partition runner.
type runHandle struct {
	r      *runner
	cancel context.CancelFunc
	done   chan struct{}
}

// restartEvery is how often own looks for a partition of the owner's set
// whose runner stopped while it was not Valid.
const restartEvery = time.Second

// own runs the partitions the owner gives until ctx ends or one fails.
func (a *Auditor) own(ctx context.Context, parts int, all bool, runErr chan error) error {
	owned := make(chan []int, 1)
	// The owner outlives ctx until every runner has stopped (the deferred
	// stops below run first): a lease must stay valid while its runner
	// writes its last rows and final checkpoint.
	octx, stopOwner := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOwner()
	ownerParts := parts
	go func() {
		if err := a.owner.Run(octx, ownerParts, owned); err != nil && octx.Err() == nil {
			runErr <- fmt.Errorf("auditor: owner: %w", err)
		}
	}()
	running := map[int]*runHandle{}
	ended := make(chan *runHandle)
	// cur is the owner's last set. A runner that stopped because its
	// partition was not Valid (a renewal that came late) while the set
	// kept it is started again once Valid is back: the owner sends no new
	// set when it never lost the lease.
	var cur []int
	again := time.NewTicker(restartEvery)
	defer again.Stop()
	start := func(p int) error {
		if _, ok := running[p]; ok || p < 0 || p >= parts {
			return nil
		}
		h, err := a.startRunner(ctx, p, parts, all, runErr, ended)
		if err != nil {
			return err
		}
		running[p] = h
		return nil
	}
	stop := func(p int) {
		h := running[p]
		h.cancel()
		<-h.done
		delete(running, p)
		a.mu.Lock()
		delete(a.runners, p)
		a.mu.Unlock()
		if rel, ok := a.owner.(Releaser); ok {
			rel.Released(p)
		}
	}
	defer func() {
		for p := range running {
			running[p].cancel()
		}
		for p := range running {
			stop(p)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-runErr:
			return err
		case h := <-ended:
			if running[h.r.p] == h {
				delete(running, h.r.p)
				a.mu.Lock()
				delete(a.runners, h.r.p)
				a.mu.Unlock()
				h.cancel()
			}
		case <-again.C:
			for _, p := range cur {
				if _, ok := running[p]; !ok && a.owner.Valid(p) {
					if err := start(p); err != nil {
						return err
					}
				}
			}
		case set := <-owned:
			cur = slices.Clone(set)
			for p := range running {
				if !slices.Contains(set, p) {
					stop(p)
				}
			}
			for _, p := range set {
				if err := start(p); err != nil {
					return err
				}
			}
		}
	}
}

// startRunner loads partition p's state and starts its runner.
func (a *Auditor) startRunner(ctx context.Context, p, parts int, all bool, runErr chan<- error, ended chan<- *runHandle) (*runHandle, error) {
	rctx, cancel := context.WithCancel(ctx)
	wctx, abort := context.WithCancel(context.WithoutCancel(rctx))
	r := &runner{a: a, p: p, parts: parts, all: all, st: &partStats{}, ctx: rctx, wctx: wctx}
	if a.comb != nil {
		r.calls = a.comb.calls.Load() // the calls before it are not its own
	}
	switch {
	case a.o.NewDetector != nil:
		d, err := a.o.NewDetector(p, parts)
		if err != nil {
			cancel()
			abort()
			return nil, fmt.Errorf("auditor: partition %d detector: %w", p, err)
		}
		r.det = d
	case a.o.Detector != nil:
		r.det = a.o.Detector
	}
	if err := r.start(ctx); err != nil {
		cancel()
		abort()
		return nil, fmt.Errorf("auditor: %w", err)
	}
	h := &runHandle{r: r, cancel: cancel, done: make(chan struct{})}
	a.mu.Lock()
	a.runners[p] = r
	a.mu.Unlock()
	go func() {
		defer close(h.done)
		defer abort()
		// Writes outlive the runner's context by ShutdownGrace.
		stopGrace := context.AfterFunc(rctx, func() {
			t := time.AfterFunc(a.o.ShutdownGrace, abort)
			context.AfterFunc(wctx, func() { t.Stop() })
		})
		defer stopGrace()
		if a.comb != nil {
			a.comb.running.Add(1)
			defer a.comb.running.Add(-1)
		}
		err := r.run()
		if err != nil && rctx.Err() == nil {
			runErr <- fmt.Errorf("auditor: partition %d: %w", p, err)
			return
		}
		if rctx.Err() == nil {
			// Lost (the owner no longer finds it valid): own forgets it,
			// so that the owner can give it again.
			select {
			case ended <- h:
			case <-rctx.Done():
			}
		}
	}()
	return h, nil
}

// Detectors returns the detector of each running partition.
func (a *Auditor) Detectors() map[int]Detector {
	if a.o.Detector != nil && a.o.NewDetector == nil {
		return map[int]Detector{0: a.o.Detector}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[int]Detector, len(a.runners))
	for p, r := range a.runners {
		if r.det != nil {
			out[p] = r.det
		}
	}
	return out
}

// ordered reads stream in order, filtered on filters, from the sequence
// after covered.
func (a *Auditor) ordered(ctx context.Context, stream string, filters []string, covered uint64) (jetstream.Consumer, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
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

// fetchInto moves the messages of an ordered consumer to in until ctx ends.
func fetchInto(ctx context.Context, a *Auditor, c jetstream.Consumer, ledger bool, in chan<- runnerMsg) error {
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
			md, _ := m.Metadata() // nil when the message has none
			select {
			case in <- runnerMsg{m: m, md: md, ledger: ledger}:
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

// ledgerRows writes the ledger's rows from the durable consumer c (shared
// by every instance: each message goes to one), acknowledging each
// message after its batch is written.
func (a *Auditor) ledgerRows(ctx context.Context, c jetstream.Consumer) error {
	in := make(chan runnerMsg, 1024)
	fetchErr := make(chan error, 1)
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		if err := fetchInto(fctx, a, c, true, in); err != nil && fctx.Err() == nil {
			fetchErr <- err
		}
	}()
	return a.process(ctx, in, fetchErr)
}

// batch is a group of ledger messages written together.
type batch struct {
	id        uint64
	ledgerMsg []jetstream.Msg // every message to acknowledge
	ledger    []events.Envelope
	maxLedger uint64 // highest stream sequence in the batch
	started   time.Time
	due       bool // AnomalyWait has passed
	err       error
}

func (b *batch) size() int { return len(b.ledgerMsg) }

// pipeline is the state of the ledger rows' processing goroutine.
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

// process decodes ledger messages as they arrive and hands batches to the
// writers.
func (a *Auditor) process(ctx context.Context, in <-chan runnerMsg, fetchErr <-chan error) error {
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
	// Shutdown: write what was received, within the grace period.
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
func (p *pipeline) loop(in <-chan runnerMsg, fetchErr <-chan error) error {
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
				p.timer.Reset(a.o.AnomalyWait)
			}
			a.observe(p.cur, im.m)
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
			p.a.ledgerInflight.Store(int64(p.inflight))
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
	a.ledgerInflight.Store(int64(p.inflight))
	if b.err != nil {
		a.o.Log.Warn().Err(b.err).Int("events", b.size()).Msg("batch not written; it will be redelivered")
	} else {
		a.batches.Add(1)
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

// observe decodes one ledger message into the batch (dead-lettering what
// cannot be decoded).
func (a *Auditor) observe(b *batch, m jetstream.Msg) {
	var seq uint64
	if md, err := m.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	b.ledgerMsg = append(b.ledgerMsg, m)
	b.maxLedger = max(b.maxLedger, seq)
	e, err := decodeLedger(m.Data())
	if err != nil {
		a.deadLetter(m, err)
		return
	}
	b.ledger = append(b.ledger, e)
}

// decodeLedger decodes a token ledger event (issued, rotated, revoked,
// expired, and the graduated response's restricted and released),
// rejecting other types.
func decodeLedger(data []byte) (events.Envelope, error) {
	e, err := events.Decode(data)
	if err != nil {
		return e, err
	}
	switch e.Type {
	case events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired,
		events.TypeTokenRestricted, events.TypeTokenReleased:
		return e, nil
	default:
		return e, fmt.Errorf("%w: %s event on the token ledger", events.ErrTypeMismatch, e.Type)
	}
}

// write makes a ledger batch's rows durable, retrying until it succeeds or
// wctx ends, then acknowledges its messages unless ctx (Run's) has ended:
// a stopping auditor acknowledges nothing more, its last messages come
// back after AckWait and are de-duplicated.
func (a *Auditor) write(ctx, wctx context.Context, b *batch) error {
	err := a.retry(wctx, b.size(), func() error {
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
	if ctx.Err() != nil {
		return nil
	}
	for _, m := range b.ledgerMsg {
		if err := m.Ack(); err != nil {
			a.o.Log.Warn().Err(err).Msg("ack failed; the message will be redelivered and deduplicated")
			break
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
		if errors.Is(err, errLost) {
			return err
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
	id := events.DerivedID(an.EventTime, an.Detector+"\x00"+an.TokenID+"\x00"+an.EventID)
	an.AnomalyID = id.String()
	env := events.Envelope{ID: id, Type: events.TypeAnomalyDetected, Time: an.EventTime.UTC(), Source: a.o.Source, Version: events.SchemaVersion, Data: &an}
	return env, env.Validate()
}

// deadLetter moves a message that cannot be decoded aside with the reason.
// The original is acknowledged with its batch; it never blocks the stream.
func (a *Auditor) deadLetter(m jetstream.Msg, reason error) {
	a.dead.Add(1)
	a.o.Log.Warn().Str("subject", m.Subject()).Str("reason", reason.Error()).Msg("dead letter")
	dm := nats.NewMsg(events.DeadLetterSubject(events.DeadLetterAuditor))
	dm.Data = m.Data()
	dm.Header.Set(events.HeaderDeadReason, reason.Error())
	dm.Header.Set(events.HeaderDeadSubject, publishedSubject(m.Subject()))
	if _, err := a.o.JS.PublishMsg(context.Background(), dm); err != nil {
		a.o.Log.Error().Err(err).Msg("dead letter publish failed")
	}
}

// publishedSubject is the subject a usage batch was published on: the
// stored one without the partition the stream's transform added.
func publishedSubject(stored string) string {
	if _, tenant, enforcer, holder, err := events.ParseUsagePartSubject(stored); err == nil {
		return events.SubjectUsagePrefix + tenant + "." + enforcer + "." + holder
	}
	return stored
}
