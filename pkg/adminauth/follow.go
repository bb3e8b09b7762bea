package adminauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
)

// Defaults of FollowOptions.
const (
	DefaultMaxTokens     = 10_000
	DefaultCheckInterval = time.Second
)

// stallAfter is how long a view may see the ledger ahead of it without
// making progress before its consumer is re-created (normally messages
// arrive within milliseconds; a consumer lost with its server never
// delivers again).
const stallAfter = time.Second

// Subjects are the TOKENS subjects of one tenant's tokens: issued, rotated,
// revoked and expired. They are four filters rather than one wildcard so
// that the consumer is created without a filter in its API subject, which
// every role's NATS permissions allow.
func Subjects(tenant string) []string {
	var out []string
	for _, kind := range []string{"issued", "rotated", "revoked", "expired"} {
		out = append(out, events.SubjectTokenPrefix+kind+"."+tenant+".>")
	}
	return out
}

// FollowOptions configures a Follower.
type FollowOptions struct {
	// JS reads the TOKENS stream (required).
	JS jetstream.JetStream
	// Tenant whose tokens are followed (default events.AdminTenant).
	Tenant string
	// MaxTokens bounds the records held (default DefaultMaxTokens). Over
	// the bound, expired records go first, then those expiring soonest:
	// an evicted token is refused (fail closed).
	MaxTokens int
	// CheckInterval is how often the view checks, without a lookup, that
	// it is not behind the ledger (default DefaultCheckInterval).
	CheckInterval time.Duration
	// Log receives the follower's logs.
	Log zerolog.Logger
	// Now is the clock (default time.Now), for pruning expired records.
	Now func() time.Time
}

// Follower is a Ledger on JetStream: it follows one tenant's TOKENS events
// with an ordered consumer and brings itself up to date before every
// lookup. Create it with Follow; Close it when done.
type Follower struct {
	o   FollowOptions
	log zerolog.Logger

	mu      sync.RWMutex
	recs    map[string]*Record
	applied uint64 // last stream sequence applied
	changed chan struct{}

	consMu sync.Mutex
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	closed bool // no consumer is created once set

	evicted   atomic.Uint64
	rewatches atomic.Uint64

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Follow starts following the ledger and returns once the view holds
// everything the ledger held when it was called (or ctx ends).
func Follow(ctx context.Context, o FollowOptions) (*Follower, error) {
	if o.JS == nil {
		return nil, errors.New("adminauth: follow the ledger: JetStream is required")
	}
	if o.Tenant == "" {
		o.Tenant = events.AdminTenant
	}
	if err := events.ValidateName(o.Tenant); err != nil {
		return nil, fmt.Errorf("adminauth: follow the ledger: tenant: %w", err)
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = DefaultMaxTokens
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := &Follower{
		o:       o,
		log:     o.Log.With().Str("component", "admin-ledger").Str("tenant", o.Tenant).Logger(),
		recs:    map[string]*Record{},
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
	}
	if err := f.watch(ctx, 0); err != nil {
		return nil, err
	}
	if err := f.sync(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("adminauth: replay the ledger: %w", err)
	}
	f.wg.Add(1)
	go f.monitor()
	f.log.Debug().Int("tokens", f.Len()).Msg("admin ledger view ready")
	return f, nil
}

// Close stops following the ledger. It is safe to call twice.
func (f *Follower) Close() {
	f.closeOnce.Do(func() {
		close(f.stop)
		f.wg.Wait()
		f.consMu.Lock()
		f.closed = true
		if f.cc != nil {
			f.cc.Stop()
		}
		f.consMu.Unlock()
	})
}

// errClosed is returned by a Follower used after Close.
var errClosed = errors.New("adminauth: the ledger view is closed")

// Lookup implements Ledger: it brings the view up to date with the ledger
// (bounded by ctx), then returns the token's record.
func (f *Follower) Lookup(ctx context.Context, id string) (Record, bool, error) {
	select {
	case <-f.stop:
		return Record{}, false, errClosed
	default:
	}
	if err := f.sync(ctx); err != nil {
		return Record{}, false, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.recs[id]
	if !ok {
		return Record{}, false, nil
	}
	return r.clone(), true, nil
}

// FollowStats are a Follower's counters and bound.
type FollowStats struct {
	// Tokens records are held, at most MaxTokens; Evicted were dropped
	// over the bound (those tokens are refused).
	Tokens, MaxTokens int
	Evicted           uint64
	// Rewatches counts consumers re-created because the view fell behind.
	Rewatches uint64
	// Applied is the last TOKENS sequence applied.
	Applied uint64
}

// Stats returns the follower's counters.
func (f *Follower) Stats() FollowStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return FollowStats{Tokens: len(f.recs), MaxTokens: f.o.MaxTokens, Evicted: f.evicted.Load(),
		Rewatches: f.rewatches.Load(), Applied: f.applied}
}

// Len is the number of records held.
func (f *Follower) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.recs)
}

// watch (re)creates the ordered consumer, starting after sequence from
// (from the beginning when 0), and stops the previous one.
func (f *Follower) watch(ctx context.Context, from uint64) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: Subjects(f.o.Tenant), DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from + 1
	}
	cons, err := f.o.JS.OrderedConsumer(ctx, events.StreamTokens, cfg)
	if err != nil {
		return fmt.Errorf("adminauth: follow %s: %w", events.StreamTokens, err)
	}
	cc, err := cons.Consume(f.onMsg, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		f.log.Debug().Err(err).Msg("admin ledger consumer")
	}))
	if err != nil {
		return fmt.Errorf("adminauth: follow %s: %w", events.StreamTokens, err)
	}
	f.consMu.Lock()
	if f.closed {
		f.consMu.Unlock()
		cc.Stop()
		return errClosed
	}
	old := f.cc
	f.cons, f.cc = cons, cc
	f.consMu.Unlock()
	if old != nil {
		old.Stop()
	}
	return nil
}

func (f *Follower) consumer() jetstream.Consumer {
	f.consMu.Lock()
	defer f.consMu.Unlock()
	return f.cons
}

// rewatch re-creates the consumer from the last applied sequence: what was
// applied stays, nothing after it is missed.
func (f *Follower) rewatch(ctx context.Context, why string) error {
	f.rewatches.Add(1)
	f.log.Warn().Str("reason", why).Uint64("applied", f.appliedSeq()).Msg("admin ledger view fell behind, following again")
	return f.watch(ctx, f.appliedSeq())
}

func (f *Follower) appliedSeq() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// sync returns once the view has applied every event of the tenant the
// ledger held when it was called.
func (f *Follower) sync(ctx context.Context) error {
	target, err := f.ledgerEnd(ctx)
	if err != nil {
		return err
	}
	lastApplied, since := f.appliedSeq(), time.Now()
	for {
		f.mu.RLock()
		applied, changed := f.applied, f.changed
		f.mu.RUnlock()
		if applied >= target {
			return nil
		}
		if applied != lastApplied {
			lastApplied, since = applied, time.Now()
		} else if time.Since(since) > stallAfter {
			if err := f.rewatch(ctx, "no progress"); err != nil {
				return err
			}
			since = time.Now()
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return fmt.Errorf("admin ledger view at sequence %d, behind the ledger's %d: %w", applied, target, ctx.Err())
		}
	}
}

// ledgerEnd is the stream sequence of the tenant's newest event on the
// ledger (0 when there is none), read from the store itself: a consumer's
// pending count trails new messages (the server updates it
// asynchronously), and direct gets are not every role's right, but
// creating a consumer is. A consumer delivering the last message of the
// filters starts at exactly that message; it is deleted at once (and
// would expire on its own).
func (f *Follower) ledgerEnd(ctx context.Context) (uint64, error) {
	c, err := f.o.JS.CreateConsumer(ctx, events.StreamTokens, jetstream.ConsumerConfig{
		Description:       "cordon adminauth: where the admin ledger ends",
		DeliverPolicy:     jetstream.DeliverLastPolicy,
		FilterSubjects:    Subjects(f.o.Tenant),
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return 0, fmt.Errorf("admin ledger view: find the ledger's end: %w", err)
	}
	info := c.CachedInfo()
	if err := f.o.JS.DeleteConsumer(ctx, events.StreamTokens, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		f.log.Debug().Err(err).Str("consumer", info.Name).Msg("probe consumer not deleted; it expires on its own")
	}
	if info.NumPending == 0 {
		return 0, nil
	}
	return info.Delivered.Stream + 1, nil
}

// monitor keeps the view current between lookups and prunes expired
// records.
func (f *Follower) monitor() {
	defer f.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-f.stop
		cancel()
	}()
	tick := time.NewTicker(f.o.CheckInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		sctx, scancel := context.WithTimeout(ctx, max(5*time.Second, f.o.CheckInterval))
		_, err := f.consumer().Info(sctx)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			err = f.rewatch(sctx, "consumer gone")
		}
		if err == nil {
			err = f.sync(sctx)
		}
		scancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			f.log.Warn().Err(err).Msg("admin ledger view cannot catch up; admin requests are refused meanwhile")
		case err == nil && failing:
			failing = false
			f.log.Info().Msg("admin ledger view is current again")
		}
		f.prune(f.o.Now())
	}
}

// onMsg applies one ledger message. A message that does not decode is
// skipped (the durable consumers dead-letter it); it never stops the view.
func (f *Follower) onMsg(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		f.log.Warn().Err(err).Str("subject", m.Subject()).Msg("ledger message without metadata")
		return
	}
	env, err := events.Decode(m.Data())
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.advance(md.Sequence.Stream)
	if md.Sequence.Stream <= f.applied {
		return // already applied (redelivery after a re-watch)
	}
	if err != nil {
		f.log.Warn().Err(err).Uint64("seq", md.Sequence.Stream).Msg("skipping undecodable ledger event")
		return
	}
	f.apply(env)
}

// advance records seq as applied and wakes waiters. Callers hold mu.
func (f *Follower) advance(seq uint64) {
	f.applied = max(f.applied, seq)
	close(f.changed)
	f.changed = make(chan struct{})
}

// apply folds one event into the view, as the issuer's registry does.
// Callers hold mu.
func (f *Follower) apply(env events.Envelope) {
	switch p := env.Data.(type) {
	case *events.TokenIssued:
		if p.Tenant != f.o.Tenant {
			return
		}
		if _, dup := f.recs[p.TokenID]; dup {
			return
		}
		f.makeRoom()
		r := RecordOf(p, env.Time)
		f.recs[p.TokenID] = &r
	case *events.TokenRotated:
		if r, ok := f.recs[p.TokenID]; ok {
			r.SuccessorID, r.GraceUntil = p.SuccessorID, p.GraceUntil
		}
	case *events.TokenRevoked:
		for _, r := range f.revokedBy(p, env.Time) {
			r.Revoked = true
		}
	case *events.TokenExpired:
		if r, ok := f.recs[p.TokenID]; ok {
			r.ExpiryRecorded = true
		}
	}
}

// revokedBy returns the records a revocation covers: the token it names
// and, for holder, tenant, before and key revocations, every token of that
// scope issued up to the revocation (the issuer's registry reads the
// ledger the same way). Callers hold mu.
func (f *Follower) revokedBy(p *events.TokenRevoked, at time.Time) []*Record {
	var out []*Record
	if r, ok := f.recs[p.TokenID]; ok {
		out = append(out, r)
	}
	if p.Kind == events.RevokeToken {
		return out
	}
	for id, r := range f.recs {
		if id == p.TokenID || r.IssuedAt.After(at) {
			continue
		}
		var match bool
		switch p.Kind {
		case events.RevokeHolder:
			match = r.Tenant == p.Tenant && r.Holder == p.Holder
		case events.RevokeTenant, events.RevokeBefore:
			match = r.Tenant == p.Tenant
		case events.RevokeKey:
			match = p.KeyID != "" && r.KeyID == p.KeyID
		}
		if match {
			out = append(out, r)
		}
	}
	return out
}

// makeRoom keeps the view under its bound before an insert: expired
// records go first, then the one expiring soonest. Callers hold mu.
func (f *Follower) makeRoom() {
	if len(f.recs) < f.o.MaxTokens {
		return
	}
	f.pruneLocked(f.o.Now())
	for len(f.recs) >= f.o.MaxTokens {
		var victim *Record
		for _, r := range f.recs {
			if victim == nil || r.Claims.Expiry.Before(victim.Claims.Expiry) {
				victim = r
			}
		}
		delete(f.recs, victim.TokenID)
		f.evicted.Add(1)
		f.log.Warn().Str("token_id", victim.TokenID).Int("max_tokens", f.o.MaxTokens).Msg("admin ledger view full: token evicted, it will be refused")
	}
}

func (f *Follower) prune(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pruneLocked(now)
}

// pruneLocked drops the records of expired tokens (refused anyway).
// Callers hold mu.
func (f *Follower) pruneLocked(now time.Time) {
	for id, r := range f.recs {
		if !now.Before(r.Claims.Expiry) {
			delete(f.recs, id)
		}
	}
}
