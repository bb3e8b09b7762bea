// Package follow reads a JetStream stream in order, applies each message
// once, and resumes from its last applied sequence on a fresh consumer when
// it falls behind.
//
// Cordon's projections of the ledger (the issuer's registry, the revoker's
// token index, the admin-ledger view of pkg/adminauth) ride on ordered
// consumers. An ordered consumer lives on one nats-server; when that server
// dies, nats.go notices only after missed idle heartbeats (seconds), and
// whoever waits for the projection to show a write waits as long. A Reader
// notices sooner: when a sequence known to exist (a publish
// acknowledgement, the stream's end) has not been applied after StallGrace
// without any progress, it re-creates the ordered consumer from the last
// applied sequence + 1 (in the background, retrying until JetStream has a
// meta leader to create it). Meanwhile, with Options.DirectReads, a waiter
// that still sees nothing reads the messages it waits for one by one,
// which needs only the stream's leader. The old consumer may still deliver
// late: anything at or below the last applied sequence is ignored, so no
// message is applied twice and none is skipped. A periodic check compares
// the stream's end with what was applied, for readers nobody waits on.
package follow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// StallGrace is how long a Reader behind a known sequence may go without
// applying anything before it asks for a new consumer (and, after another
// StallGrace, reads directly). A healthy consumer
// delivers a new message within milliseconds; one lost with its server
// never does.
const StallGrace = 250 * time.Millisecond

// DefaultCheckInterval is how often a Reader compares the stream's end
// with what it applied, by default.
const DefaultCheckInterval = time.Second

// attemptTimeout bounds the first three attempts at creating a consumer
// (later ones get longer, up to maxAttemptTimeout), and retryPause
// separates attempts. Right after a node loss the meta leader may still
// place a new consumer on the lost node, which never answers: the next
// attempt, placed elsewhere, should not wait long; and while JetStream has
// no meta leader, the attempt after one is elected should come soon.
const (
	attemptTimeout    = 500 * time.Millisecond
	maxAttemptTimeout = 5 * time.Second
	retryPause        = 100 * time.Millisecond
)

// ErrClosed is returned by a Reader used after Close.
var ErrClosed = errors.New("follow: reader closed")

// ApplyFunc applies one message: its stream sequence, higher than that of
// every message applied before, its subject and its data. Calls are
// serialised.
type ApplyFunc func(seq uint64, subject string, data []byte)

// EndFunc returns the stream sequence of the newest message the Reader
// would deliver (0 when there is none).
type EndFunc func(ctx context.Context) (uint64, error)

// Options configures a Reader.
type Options struct {
	// JS reads the stream (required).
	JS jetstream.JetStream
	// Stream is the stream's name (required).
	Stream string
	// FilterSubjects restrict the messages delivered; none delivers all.
	FilterSubjects []string
	// StartTime, when set, makes the first consumer start at the first
	// message stored at or after it; otherwise it starts at the stream's
	// first message.
	StartTime time.Time
	// Apply applies each message (required).
	Apply ApplyFunc
	// End is where the stream ends for this Reader (see Sync and the
	// periodic check). Default: the stream's last sequence without
	// filters, the last message of the filter with one; required with
	// several filters.
	End EndFunc
	// CheckInterval is how often the Reader checks, unasked, that it is
	// not behind End (default DefaultCheckInterval; negative: never).
	CheckInterval time.Duration
	// DirectReads lets a reader that stays stalled after asking for a new
	// consumer read the messages it waits for one by one (the stream's
	// message get API, which only needs the stream's leader), so that it
	// keeps up while no consumer can be created: right after a node loss
	// that took the JetStream meta leader, or when the new consumer was
	// placed on the lost node. The credentials must allow
	// $JS.API.STREAM.MSG.GET.<stream>.
	DirectReads bool
	// Name names the reader in logs (default the stream's name).
	Name string
	// Log receives the reader's logs.
	Log zerolog.Logger
}

// Reader follows a stream in order. Create it with Start; Close it.
type Reader struct {
	o   Options
	log zerolog.Logger

	mu      sync.Mutex // serialises Apply; guards applied, changed, closed
	applied uint64     // last stream sequence applied (or skipped as before the start)
	changed chan struct{}
	closed  bool

	consMu sync.Mutex // serialises consumer changes; guards cons, cc
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	gen    atomic.Uint64 // consumers created

	streamMu sync.Mutex
	stream   jetstream.Stream // cached for the default End and direct reads

	kicks chan stall // to the background rewatcher

	rewatches, duplicates, direct atomic.Uint64
	// delivered counts the messages consumers delivered (applied or not):
	// a consumer that delivers is alive, where direct reads move applied
	// past a silent one.
	delivered atomic.Uint64

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start creates the first consumer and starts the periodic check. It does
// not wait for the stream to be read: call Sync for that.
func Start(ctx context.Context, o Options) (*Reader, error) {
	switch {
	case o.JS == nil:
		return nil, errors.New("follow: JetStream is required")
	case o.Stream == "":
		return nil, errors.New("follow: a stream name is required")
	case o.Apply == nil:
		return nil, fmt.Errorf("follow %s: an apply function is required", o.Stream)
	case o.End == nil && len(o.FilterSubjects) > 1:
		return nil, fmt.Errorf("follow %s: an end function is required with %d filter subjects", o.Stream, len(o.FilterSubjects))
	}
	if o.Name == "" {
		o.Name = o.Stream
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	r := &Reader{
		o:       o,
		log:     o.Log.With().Str("reader", o.Name).Logger(),
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
		kicks:   make(chan stall, 1),
	}
	if r.o.End == nil {
		r.o.End = r.defaultEnd
	}
	r.consMu.Lock()
	_, err := r.watchRetryLocked(ctx)
	r.consMu.Unlock()
	if err != nil {
		return nil, err
	}
	if o.DirectReads {
		if _, err := r.streamHandle(ctx); err != nil {
			r.Close()
			return nil, fmt.Errorf("follow %s: %w", o.Stream, err)
		}
	}
	r.wg.Add(1)
	go r.rewatcher()
	if o.CheckInterval > 0 {
		r.wg.Add(1)
		go r.monitor()
	}
	return r, nil
}

// Close stops following the stream: once it returns, Apply is not called
// again. It is safe to call twice.
func (r *Reader) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		r.consMu.Lock()
		if r.cc != nil {
			r.cc.Stop()
		}
		r.consMu.Unlock()
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.wg.Wait()
	})
}

// Stats are a Reader's counters.
type Stats struct {
	// Applied is the last stream sequence applied.
	Applied uint64
	// Rewatches counts consumers re-created because the reader fell
	// behind (or Rewatch was called).
	Rewatches uint64
	// Duplicates counts deliveries ignored because their sequence was
	// already applied (late deliveries of a replaced consumer).
	Duplicates uint64
	// DirectReads counts messages read one by one while no consumer
	// delivered (Options.DirectReads).
	DirectReads uint64
}

// Stats returns the reader's counters.
func (r *Reader) Stats() Stats {
	return Stats{Applied: r.Applied(), Rewatches: r.rewatches.Load(), Duplicates: r.duplicates.Load(),
		DirectReads: r.direct.Load()}
}

// Applied is the last stream sequence applied.
func (r *Reader) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

// ConsumerInfo is the current consumer's last known state (nil before it
// exists), for tests that find which server hosts it.
func (r *Reader) ConsumerInfo() *jetstream.ConsumerInfo {
	r.consMu.Lock()
	defer r.consMu.Unlock()
	if r.cons == nil {
		return nil
	}
	return r.cons.CachedInfo()
}

// Sync returns once the reader has applied everything up to End as of the
// call.
func (r *Reader) Sync(ctx context.Context) error {
	end, err := r.o.End(ctx)
	if err != nil {
		return fmt.Errorf("%s: find the end of the stream: %w", r.o.Name, err)
	}
	return r.WaitSeq(ctx, end)
}

// WaitSeq returns once the message at seq, which must be one the reader
// delivers (or lower), has been applied, or ctx ends. seq is known to
// exist, so a healthy consumer delivers something soon: when nothing is
// applied for StallGrace, the reader asks for a new consumer from the last
// applied sequence + 1 (in the background), and with Options.DirectReads,
// if a further StallGrace brings nothing either, reads the messages up to
// seq one by one.
func (r *Reader) WaitSeq(ctx context.Context, seq uint64) error {
	stalls := 0
	for {
		r.mu.Lock()
		applied, changed, closed := r.applied, r.changed, r.closed
		r.mu.Unlock()
		switch {
		case applied >= seq:
			return nil
		case closed:
			return ErrClosed
		}
		gen, delivered := r.gen.Load(), r.delivered.Load()
		t := time.NewTimer(StallGrace)
		select {
		case <-changed:
			t.Stop()
			stalls = 0
			continue
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s applied up to sequence %d, waiting for %d: %w", r.o.Name, applied, seq, ctx.Err())
		case <-r.stop:
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
		stalls++
		r.kick(stall{why: fmt.Sprintf("no progress for %s behind sequence %d", StallGrace, seq), delivered: delivered, gen: gen})
		if stalls > 1 && r.o.DirectReads {
			if err := r.catchUp(ctx, seq); err != nil && ctx.Err() == nil {
				r.log.Debug().Err(err).Uint64("seq", seq).Msg("read missed messages by sequence")
			}
		}
	}
}

// stall is what a waiter saw when it asked for a new consumer: the
// consumers' deliveries and the consumer generation when it began to wait.
type stall struct {
	why            string
	delivered, gen uint64
}

// kick asks the background rewatcher for a new consumer; a request made
// while one is pending is dropped.
func (r *Reader) kick(s stall) {
	select {
	case r.kicks <- s:
	default:
	}
}

// rewatcher re-creates the consumer on request, retrying until it
// succeeds (waiters meanwhile keep up with direct reads, if allowed).
func (r *Reader) rewatcher() {
	defer r.wg.Done()
	ctx, cancel := r.untilClosed()
	defer cancel()
	for {
		select {
		case <-r.stop:
			return
		case s := <-r.kicks:
			if err := r.rewatch(ctx, s.why, s.delivered, s.gen); err != nil && ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("re-create the consumer")
			}
		}
	}
}

// maxCatchUp bounds the messages read one by one at a time: a reader that
// far behind waits for its new consumer.
const maxCatchUp = 1000

// catchUp applies the messages after the last applied one up to seq,
// read one by one.
func (r *Reader) catchUp(ctx context.Context, seq uint64) error {
	from := r.Applied() + 1
	if seq < from {
		return nil
	}
	if seq-from >= maxCatchUp {
		return fmt.Errorf("%d messages behind, more than %d to read one by one", seq-from+1, maxCatchUp)
	}
	s, err := r.streamHandle(ctx)
	if err != nil {
		return err
	}
	for q := from; q <= seq; q++ {
		m, err := s.GetMsg(ctx, q)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound): // deleted
			r.apply(q, "", nil, false)
		case err != nil:
			return fmt.Errorf("get message %d: %w", q, err)
		default:
			if r.apply(q, m.Subject, m.Data, r.matches(m.Subject)) {
				r.direct.Add(1)
			}
		}
	}
	return nil
}

// matches reports whether subject is one the reader's filters deliver.
func (r *Reader) matches(subject string) bool {
	if len(r.o.FilterSubjects) == 0 {
		return true
	}
	for _, f := range r.o.FilterSubjects {
		if subjectMatch(f, subject) {
			return true
		}
	}
	return false
}

// subjectMatch reports whether subject matches filter, with NATS
// wildcards: * is one token, > one or more trailing tokens.
func subjectMatch(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, f := range ft {
		switch {
		case f == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case f != "*" && f != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}

// streamHandle is the stream, looked up once.
func (r *Reader) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	r.streamMu.Lock()
	defer r.streamMu.Unlock()
	if r.stream == nil {
		s, err := r.o.JS.Stream(ctx, r.o.Stream)
		if err != nil {
			return nil, err
		}
		r.stream = s
	}
	return r.stream, nil
}

// Rewatch re-creates the consumer from the last applied sequence + 1,
// retrying until it succeeds or ctx ends.
func (r *Reader) Rewatch(ctx context.Context, why string) error {
	return r.rewatch(ctx, why, 0, 0)
}

// rewatch re-creates the consumer unless, when gen > 0, another rewatch
// happened since generation gen or a consumer delivered a message since
// the count delivered. What direct reads applied meanwhile does not
// count: they keep a waiter current past a silent consumer, which must
// still be replaced (a CI run beside a CPU job saw a reader stay on the
// consumer of a killed server for a minute, each rewatch skipped because
// the waiter's direct reads had moved applied on before it ran).
func (r *Reader) rewatch(ctx context.Context, why string, delivered, gen uint64) error {
	r.consMu.Lock()
	defer r.consMu.Unlock()
	if gen > 0 && (r.gen.Load() != gen || r.delivered.Load() != delivered) {
		return nil // someone else re-watched, or the consumer delivered
	}
	attempts, err := r.watchRetryLocked(ctx)
	if err != nil {
		return fmt.Errorf("%s: re-create the consumer (%s): %w", r.o.Name, why, err)
	}
	r.rewatches.Add(1)
	r.log.Warn().Str("reason", why).Uint64("applied", r.Applied()).Int("attempts", attempts).
		Msg("reader fell behind, following again on a new consumer")
	return nil
}

// watchRetryLocked calls watchLocked until it succeeds, ctx ends, the
// reader is closed or the stream is found missing. Callers hold consMu.
func (r *Reader) watchRetryLocked(ctx context.Context) (attempts int, err error) {
	for attempt := 1; ; attempt++ {
		select {
		case <-r.stop:
			return attempt, ErrClosed
		default:
		}
		err := r.watchLocked(ctx, min(time.Duration(max(attempt-2, 1))*attemptTimeout, maxAttemptTimeout))
		switch {
		case err == nil:
			return attempt, nil
		case ctx.Err() != nil, errors.Is(err, jetstream.ErrStreamNotFound):
			return attempt, err
		case attempt == 1:
			r.log.Debug().Err(err).Msg("create the consumer; retrying")
		}
		t := time.NewTimer(retryPause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return attempt, err
		case <-r.stop:
			t.Stop()
			return attempt, ErrClosed
		}
	}
}

// watchLocked creates an ordered consumer starting after the last applied
// sequence (or at the configured start when nothing was applied), then
// stops the previous one. Callers hold consMu.
func (r *Reader) watchLocked(ctx context.Context, timeout time.Duration) error {
	from := r.Applied()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.o.FilterSubjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case from > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	case !r.o.StartTime.IsZero():
		start := r.o.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cons, err := r.o.JS.OrderedConsumer(actx, r.o.Stream, cfg)
	if err != nil {
		return fmt.Errorf("follow %s: create a consumer from sequence %d: %w", r.o.Stream, from+1, err)
	}
	r.gen.Add(1)
	cc, err := cons.Consume(r.deliver,
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			r.log.Debug().Err(err).Msg("consumer")
		}))
	if err != nil {
		return fmt.Errorf("follow %s: consume: %w", r.o.Stream, err)
	}
	if from == 0 {
		// Nothing before where the first consumer starts will be
		// delivered: that is as good as applied.
		if info := cons.CachedInfo(); info != nil {
			r.mu.Lock()
			if info.Delivered.Stream > r.applied {
				r.applied = info.Delivered.Stream
				r.wakeLocked()
			}
			r.mu.Unlock()
		}
	}
	old, oldCC := r.cons, r.cc
	r.cons, r.cc = cons, cc
	if oldCC != nil {
		oldCC.Stop()
		if info := old.CachedInfo(); info != nil {
			// The old consumer is unacknowledged and in memory; delete it
			// rather than wait for its inactivity threshold. Its server
			// may be gone: best effort.
			name := info.Name
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				dctx, dcancel := context.WithTimeout(context.Background(), maxAttemptTimeout)
				defer dcancel()
				if err := r.o.JS.DeleteConsumer(dctx, r.o.Stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
					r.log.Debug().Err(err).Str("consumer", name).Msg("old consumer not deleted; it expires on its own")
				}
			}()
		}
	}
	return nil
}

// deliver applies a consumer's message unless its sequence was applied
// already (a late delivery of a replaced consumer, or one overlapping the
// new one).
func (r *Reader) deliver(m jetstream.Msg) {
	r.delivered.Add(1)
	md, err := m.Metadata()
	if err != nil {
		r.log.Warn().Err(err).Str("subject", m.Subject()).Msg("message without metadata skipped")
		return
	}
	r.apply(md.Sequence.Stream, m.Subject(), m.Data(), true)
}

// apply applies the message at seq (or, when use is false, only records
// it as passed) unless seq was applied already; it reports whether it
// applied it.
func (r *Reader) apply(seq uint64, subject string, data []byte, use bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if seq <= r.applied {
		r.duplicates.Add(1)
		return false
	}
	if use {
		r.o.Apply(seq, subject, data)
	}
	r.applied = seq
	r.wakeLocked()
	return use
}

// untilClosed is a context that ends when the reader is closed (or the
// returned cancel is called).
func (r *Reader) untilClosed() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// wakeLocked wakes the waiters on changed. Callers hold mu.
func (r *Reader) wakeLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// monitor checks every CheckInterval that the reader is not behind End.
func (r *Reader) monitor() {
	defer r.wg.Done()
	ctx, cancel := r.untilClosed()
	defer cancel()
	tick := time.NewTicker(r.o.CheckInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		sctx, scancel := context.WithTimeout(ctx, max(5*time.Second, r.o.CheckInterval))
		err := r.Sync(sctx)
		scancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			r.log.Warn().Err(err).Msg("reader cannot catch up with the stream")
		case err == nil && failing:
			failing = false
			r.log.Info().Uint64("applied", r.Applied()).Msg("reader is current again")
		}
	}
}

// defaultEnd is the stream's last sequence, or the last message of the one
// filter subject.
func (r *Reader) defaultEnd(ctx context.Context) (uint64, error) {
	if len(r.o.FilterSubjects) == 0 {
		s, err := r.o.JS.Stream(ctx, r.o.Stream) // fresh info: its state is the point
		if err != nil {
			return 0, err
		}
		return s.CachedInfo().State.LastSeq, nil
	}
	s, err := r.streamHandle(ctx)
	if err != nil {
		return 0, err
	}
	m, err := s.GetLastMsgForSubject(ctx, r.o.FilterSubjects[0])
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}
