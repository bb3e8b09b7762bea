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
	"github.com/cordonhq/cordon/pkg/follow"
)

// Defaults of FollowOptions.
const (
	DefaultMaxTokens     = 10_000
	DefaultCheckInterval = time.Second
)

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
// on a follow.Reader (an ordered consumer re-created from the last applied
// sequence when it stalls, as when its server is lost) and brings itself
// up to date before every lookup. Create it with Follow; Close it when
// done.
type Follower struct {
	o   FollowOptions
	log zerolog.Logger
	r   *follow.Reader

	mu   sync.RWMutex
	recs map[string]*Record

	evicted atomic.Uint64

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
		o:    o,
		log:  o.Log.With().Str("component", "admin-ledger").Str("tenant", o.Tenant).Logger(),
		recs: map[string]*Record{},
		stop: make(chan struct{}),
	}
	r, err := follow.Start(ctx, follow.Options{
		JS: o.JS, Stream: events.StreamTokens, FilterSubjects: Subjects(o.Tenant),
		Apply: f.onMsg, End: f.ledgerEnd, CheckInterval: o.CheckInterval,
		Name: "admin ledger view", Log: f.log,
	})
	if err != nil {
		return nil, fmt.Errorf("adminauth: %w", err)
	}
	f.r = r
	if err := f.r.Sync(ctx); err != nil {
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
		f.r.Close()
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
	if err := f.r.Sync(ctx); err != nil {
		return Record{}, false, fmt.Errorf("admin ledger view: %w", err)
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
	rs := f.r.Stats()
	return FollowStats{Tokens: f.Len(), MaxTokens: f.o.MaxTokens, Evicted: f.evicted.Load(),
		Rewatches: rs.Rewatches, Applied: rs.Applied}
}

// Reader is the reader that follows the ledger for the view (its
// counters, its consumer).
func (f *Follower) Reader() *follow.Reader { return f.r }

// Len is the number of records held.
func (f *Follower) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.recs)
}

// probeTimeout bounds the first attempts at finding where the ledger
// ends: right after a node loss the probe consumer may be placed on the
// lost node and never answer, and another attempt lands elsewhere.
const probeTimeout = 500 * time.Millisecond

// ledgerEnd is probeEnd, retried with short attempts until ctx ends.
func (f *Follower) ledgerEnd(ctx context.Context) (uint64, error) {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, min(time.Duration(max(attempt-2, 1))*probeTimeout, 5*time.Second))
		end, err := f.probeEnd(actx)
		cancel()
		if err == nil || ctx.Err() != nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			return end, err
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, err
		}
	}
}

// probeEnd is the stream sequence of the tenant's newest event on the
// ledger (0 when there is none), read from the store itself: a consumer's
// pending count trails new messages (the server updates it
// asynchronously), and direct gets are not every role's right, but
// creating a consumer is. A consumer delivering the last message of the
// filters starts at exactly that message; it is deleted at once (and
// would expire on its own).
func (f *Follower) probeEnd(ctx context.Context) (uint64, error) {
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

// monitor prunes expired records (the reader keeps the view current).
func (f *Follower) monitor() {
	defer f.wg.Done()
	tick := time.NewTicker(f.o.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
			f.prune(f.o.Now())
		}
	}
}

// onMsg applies one ledger message. A message that does not decode is
// skipped (the durable consumers dead-letter it); it never stops the view.
func (f *Follower) onMsg(seq uint64, _ string, data []byte) {
	env, err := events.Decode(data)
	if err != nil {
		f.log.Warn().Err(err).Uint64("seq", seq).Msg("skipping undecodable ledger event")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apply(env)
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
