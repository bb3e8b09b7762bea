// Package revoker is the containment half of Cordon's loop. It compiles the
// token ledger's revocations into the `denylist` KV bucket that every
// enforcer watches (it is the only writer of that bucket), revokes tokens on
// request — by id, holder, signing key, tenant, or "issued before" a time,
// from Go or over NATS request/reply on cordon.cmd.revoke — and applies the
// response policy to anomalies: revoke, alert on-call, or record what it
// would have revoked in dry-run mode. Break-glass tokens are never revoked
// automatically and always page.
//
// It runs three JetStream consumers:
//
//   - a durable consumer of TOKENS (cordon.token.>) that writes one denylist
//     entry per TokenRevoked, with a TTL of the token's remaining life, and
//     acknowledges each message only after its write; a message it cannot
//     decode goes to the dead-letter subject and is acknowledged;
//   - an ordered (replaying) consumer of TOKENS that rebuilds, on each start,
//     an index of the live tokens (id → tenant, holder, key, issue time,
//     expiry, break-glass) from the last MaxTokenTTL of the ledger; bulk
//     revocations use it to publish one ledger event per affected token;
//   - a durable consumer of ANOMALIES that applies the response policy.
//
// Callers of cordon.cmd.revoke are authenticated by pkg/adminauth, the
// control plane's one admin authenticator: against the keys bucket, a view
// of the admin tokens' ledger (an ordered consumer of tenant "cordon"'s
// TOKENS events) and the denylist. Idempotency keys are scoped to the
// calling token.
package revoker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/follow"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/response"
	"github.com/cordonhq/cordon/pkg/token"
)

// DeadLetterName is the consumer name in the revoker's dead-letter subject
// (events.DeadLetterSubject(DeadLetterName)).
const DeadLetterName = events.DeadLetterRevoker

// Options configures a Revoker.
type Options struct {
	// NC serves the cordon.cmd.revoke request/reply subject.
	NC *nats.Conn
	// JS is the JetStream context (streams and buckets must exist).
	JS jetstream.JetStream
	// Policy is the response policy (response.Default() when nil).
	Policy *response.Policy
	// Sinks receive on-call alerts; none disables delivery (alerts are
	// still grouped and counted).
	Sinks []alert.Sink
	// Alerts tunes alert delivery (retries, back-off, bounds); its Sinks,
	// Log, Now and Source are set from these options.
	Alerts alert.Options
	// Log is the logger.
	Log zerolog.Logger
	// Source names this instance in the events it emits (default "revoker").
	Source string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxTokenTTL is the longest life of any token: how far back the token
	// index replays the ledger, how long a holder-, key- or tenant-wide
	// rule lives, and the life assumed for tokens the revoker does not
	// know. Default: TokenPolicy.MaxTokenLife() — every holder's max_ttl
	// and the built-in admin ceiling's (policy.AdminMaxTTL, which is also
	// the default when no token policy is known).
	MaxTokenTTL time.Duration
	// TokenPolicy is the policy the issuer mints under (the holders of the
	// policy file), when known; it sets the default of MaxTokenTTL.
	TokenPolicy *policy.Policy
	// Durable prefixes the durable consumer names (default
	// events.DurableRevoker, "revoker"; see events.RevokerDurables).
	Durable string
	// MaxTokens bounds the token index (default 1,000,000).
	MaxTokens int
	// IdempotencyTTL and MaxIdempotencyKeys bound the remembered replies
	// of cordon.cmd.revoke requests (defaults 24h and 10,000).
	IdempotencyTTL     time.Duration
	MaxIdempotencyKeys int
	// ResolveQuiet is how long an alert about an already dead (revoked or
	// expired) token stays open without new anomalies (default 1h).
	ResolveQuiet time.Duration
	// MaxResponses bounds the anomaly-response records kept (default 1000).
	MaxResponses int
	// Scope is what a caller's admin token must hold, as the ledger
	// recorded it (default events.ScopeRevoke, "cordon:revoke"; "cordon:*"
	// also covers it).
	Scope string
	// TrustAnchors endorse the signing keys taken from the keys bucket to
	// authenticate cordon.cmd.revoke callers; a key without a valid
	// endorsement is ignored. Required.
	TrustAnchors token.Anchors
	// SSF configures Shared Signals: revocations pushed as SETs, account
	// events received (ssf.go). Zero: off.
	SSF SSFOptions
	// Canary recognises secret scanners' verification of canary tokens
	// (canary.go).
	Canary CanaryOptions
	// HeartbeatInterval is how often the denylist broadcast's heartbeat
	// goes out (default 250ms).
	HeartbeatInterval time.Duration
	// LedgerWait is how long a revocation waits for JetStream to accept
	// its ledger events and denylist entries before it returns with
	// Result.Ledger = LedgerPending (default 2s); the writes go on in the
	// background until accepted.
	LedgerWait time.Duration
	// DataDir, when set, keeps the pending revocations in a journal there
	// (revoker-pending.jsonl), replayed — broadcast again and retried —
	// at the next start.
	DataDir string
	// BroadcastRing bounds the recent broadcast changes kept to answer
	// resync requests (default 65,536).
	BroadcastRing int
}

func (o *Options) defaults() error {
	if o.NC == nil || o.JS == nil {
		return errors.New("revoker: NATS connection and JetStream are required")
	}
	if len(o.TrustAnchors) == 0 {
		return fmt.Errorf("revoker: %w (configure the issuer's trust anchor, `--trust-anchor`)", token.ErrNoAnchor)
	}
	if o.Policy == nil {
		o.Policy = response.Default()
	}
	if o.Source == "" {
		o.Source = "revoker"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTokenTTL <= 0 {
		o.MaxTokenTTL = o.TokenPolicy.MaxTokenLife()
	}
	if o.Durable == "" {
		o.Durable = events.DurableRevoker
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 1_000_000
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = 24 * time.Hour
	}
	if o.MaxIdempotencyKeys <= 0 {
		o.MaxIdempotencyKeys = 10_000
	}
	if o.ResolveQuiet <= 0 {
		o.ResolveQuiet = time.Hour
	}
	if o.MaxResponses <= 0 {
		o.MaxResponses = 1000
	}
	if o.Scope == "" {
		o.Scope = events.ScopeRevoke
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.LedgerWait <= 0 {
		o.LedgerWait = DefaultLedgerWait
	}
	if o.BroadcastRing <= 0 {
		o.BroadcastRing = 65_536
	}
	return nil
}

// Defaults of the denylist broadcast.
const (
	// DefaultHeartbeatInterval is Options.HeartbeatInterval's default.
	DefaultHeartbeatInterval = 250 * time.Millisecond
	// DefaultLedgerWait is Options.LedgerWait's default.
	DefaultLedgerWait = 2 * time.Second
)

// Revoker is the revocation service.
type Revoker struct {
	o       Options
	keyring *token.Keyring
	index   *index
	engine  *response.Engine
	alerts  *alert.Dispatcher
	idem    *idemCache

	deny     jetstream.KeyValue
	revokeMu sync.Mutex

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	startOnce, closeOnce sync.Once
	started              atomic.Bool
	idx                  *follow.Reader // TOKENS into index
	consumers            []jetstream.ConsumeContext
	keyWatch             jetstream.KeyWatcher
	sub                  *nats.Subscription

	// admins authenticates cordon.cmd.revoke callers against adminLedger.
	admins      *adminauth.Authenticator
	adminLedger *adminauth.Follower
	adminView   *outageView

	respMu    sync.Mutex
	responses []ResponseRecord

	// bc broadcasts the denylist changes; pend holds the revocations
	// JetStream has not accepted yet.
	bc   *broadcaster
	pend *pendingSet
	// jsDown is set while JetStream refuses the revocations' writes (the
	// last attempt failed): new revocations then go straight to the
	// retrier, which keeps probing, and callers are authenticated from
	// the admin records confirmed within AuthGrace.
	jsDown atomic.Bool

	stats       counters
	ssfStats    ssfCounters
	canaryStats canaryCounters
	canarySub   *nats.Subscription
	cmdSubs     []*nats.Subscription // cordon.cmd.restrict, cordon.cmd.release
}

// New validates the options and builds a revoker; Start runs it.
func New(o Options) (*Revoker, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	ao := o.Alerts
	ao.Sinks, ao.Log, ao.Now, ao.Source = o.Sinks, o.Log, o.Now, o.Source
	ctx, cancel := context.WithCancel(context.Background())
	r := &Revoker{
		o:       o,
		keyring: token.NewKeyring(),
		index:   newIndex(o.MaxTokens),
		engine:  response.NewEngine(o.Policy, response.EngineOptions{}),
		alerts:  alert.NewDispatcher(ao),
		idem:    newIdemCache(o.MaxIdempotencyKeys, o.IdempotencyTTL),
		ctx:     ctx,
		cancel:  cancel,
		pend:    newPendingSet(),
	}
	r.stats.init()
	r.bc = newBroadcaster(o.NC, events.NewOrigin(o.Source), o.HeartbeatInterval, o.BroadcastRing, o.Now,
		o.Log.With().Str("component", "broadcast").Logger(), &r.stats)
	return r, nil
}

func (r *Revoker) now() time.Time { return r.o.Now() }

// Run starts the revoker, serves until ctx ends, then closes it.
func (r *Revoker) Run(ctx context.Context) error {
	if err := r.Start(ctx); err != nil {
		r.Close()
		return err
	}
	<-ctx.Done()
	r.Close()
	return nil
}

// Start connects to the buckets, loads the signing keys, replays the
// ledger into the token index, starts the consumers and subscribes to
// cordon.cmd.revoke. It returns once the revoker is ready; ctx bounds the
// start-up only. On error, call Close.
func (r *Revoker) Start(ctx context.Context) error {
	err := errors.New("revoker: already started")
	r.startOnce.Do(func() { err = r.start(ctx) })
	return err
}

func (r *Revoker) start(ctx context.Context) error {
	js := r.o.JS
	var err error
	if r.deny, err = js.KeyValue(ctx, events.BucketDenylist); err != nil {
		return fmt.Errorf("revoker: bucket %s: %w", events.BucketDenylist, err)
	}
	if err := r.startBroadcast(); err != nil {
		return err
	}
	keys, err := js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		return fmt.Errorf("revoker: bucket %s: %w", events.BucketKeys, err)
	}
	if err := r.watchKeys(ctx, keys); err != nil {
		return err
	}
	if err := r.startIndex(ctx); err != nil {
		return err
	}
	if err := r.startAdmin(ctx); err != nil {
		return err
	}
	if err := r.startSSF(ctx); err != nil {
		return err
	}
	if err := r.startCanaries(); err != nil {
		return err
	}
	tokensDurable, anomaliesDurable := events.RevokerTokensDurable(r.o.Durable), events.RevokerAnomaliesDurable(r.o.Durable)
	tokens, err := js.CreateOrUpdateConsumer(ctx, tokensDurable.Stream, jetstream.ConsumerConfig{
		Durable:       tokensDurable.Name,
		Description:   "cordon revoker: compiles revocations into the denylist",
		FilterSubject: events.SubjectTokenPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1024,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("revoker: consumer %s: %w", tokensDurable, err)
	}
	anomalies, err := js.CreateOrUpdateConsumer(ctx, anomaliesDurable.Stream, jetstream.ConsumerConfig{
		Durable:       anomaliesDurable.Name,
		Description:   "cordon revoker: applies the response policy",
		FilterSubject: events.SubjectAnomalyPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxAckPending: 256,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("revoker: consumer %s: %w", anomaliesDurable, err)
	}
	for _, c := range []struct {
		cons jetstream.Consumer
		h    func(jetstream.Msg)
	}{{tokens, r.compileMsg}, {anomalies, r.anomalyMsg}} {
		// Short pulls with frequent heartbeats: after a JetStream outage
		// (a leader election, a node lost) the consumer notices within
		// seconds that its pull is gone and pulls again, rather than after
		// the default 30s expiry.
		cc, err := c.cons.Consume(c.h, jetstream.ConsumeErrHandler(r.consumeErr),
			jetstream.PullExpiry(consumePullExpiry), jetstream.PullHeartbeat(consumePullHeartbeat))
		if err != nil {
			return fmt.Errorf("revoker: consume: %w", err)
		}
		r.consumers = append(r.consumers, cc)
	}
	r.sub, err = r.o.NC.QueueSubscribe(events.SubjectCmdRevoke, "cordon-revoker", r.handleCommand)
	if err != nil {
		return fmt.Errorf("revoker: subscribe %s: %w", events.SubjectCmdRevoke, err)
	}
	if err := r.startRestrictCommands(); err != nil {
		return err
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	if err := r.o.NC.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("revoker: subscribe %s: %w", events.SubjectCmdRevoke, err)
	}
	r.wg.Add(1)
	go r.housekeeping()
	r.started.Store(true)
	r.o.Log.Info().Int("keys", r.keyring.Len()).Int("tokens", r.index.len()).Str("policy", r.o.Policy.String()).
		Bool("dry_run", r.o.Policy.DryRun).Int("sinks", len(r.o.Sinks)).Str("origin", r.bc.origin).
		Int("pending", r.pend.len()).Msg("revoker started")
	return nil
}

// startBroadcast answers resyncs, replays the journal of pending
// revocations (broadcast again, then retried) and starts the heartbeat
// and the retrier.
func (r *Revoker) startBroadcast() error {
	if err := r.bc.serve(); err != nil {
		return err
	}
	if r.o.DataDir != "" {
		jr, jobs, err := openJournal(r.o.DataDir)
		if err != nil {
			return err
		}
		r.pend.journal = jr
		for _, j := range jobs {
			if err := r.announcePending(j); err != nil {
				return fmt.Errorf("revoker: journal: %w", err)
			}
			if err := r.pend.add(j, true, false); err != nil {
				return err
			}
		}
		if len(jobs) > 0 {
			r.o.Log.Warn().Int("revocations", len(jobs)).Str("journal", jr.path).
				Msg("pending revocations from the journal broadcast again; retrying their ledger and denylist writes")
		}
	}
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.bc.loop(r.ctx.Done())
	}()
	go r.retrier()
	return nil
}

// Origin is this replica's name in the denylist broadcast.
func (r *Revoker) Origin() string { return r.bc.origin }

// Pending lists the revocations broadcast to enforcers whose ledger
// events or denylist entries JetStream has not accepted yet, oldest
// first.
func (r *Revoker) Pending() []PendingRevocation { return r.pend.list() }

// Pull settings of the durable consumers.
const (
	consumePullExpiry    = 5 * time.Second
	consumePullHeartbeat = time.Second
)

func (r *Revoker) consumeErr(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, nats.ErrConnectionClosed) {
		r.o.Log.Debug().Err(err).Msg("consumer")
		return
	}
	r.o.Log.Warn().Err(err).Msg("consumer error")
}

// Close stops the consumers and the subscription, gives pending alerts a
// moment to go out, and stops alert delivery. It is safe to call twice.
func (r *Revoker) Close() error {
	r.closeOnce.Do(func() {
		for _, sub := range append([]*nats.Subscription{r.sub, r.canarySub}, r.cmdSubs...) {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
		}
		for _, cc := range r.consumers {
			cc.Stop()
		}
		for _, cc := range r.consumers {
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
			}
		}
		if r.keyWatch != nil {
			_ = r.keyWatch.Stop()
		}
		if r.adminLedger != nil {
			r.adminLedger.Close()
		}
		if r.idx != nil {
			r.idx.Close()
		}
		r.cancel()
		r.wg.Wait()
		r.bc.stop()
		if left := r.pend.list(); len(left) > 0 {
			ev := r.o.Log.Warn().Int("revocations", len(left)).Interface("pending", left)
			if r.pend.journal != nil {
				ev = ev.Str("journal", r.pend.journal.path).Str("then", "replayed at the next start")
			} else {
				ev = ev.Str("then", "lost unless requested again: no --data-dir journal")
			}
			ev.Msg("revoker closing with revocations JetStream has not accepted")
		}
		if r.pend.journal != nil {
			_ = r.pend.journal.close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = r.alerts.Flush(ctx)
		cancel()
		r.alerts.Close()
	})
	return nil
}

// housekeeping prunes expired tokens and idempotency keys.
func (r *Revoker) housekeeping() {
	defer r.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
			now := r.now()
			r.index.prune(now)
			r.idem.prune(now)
		}
	}
}

// watchKeys mirrors the `keys` bucket into the keyring and returns once
// the current keys are loaded.
func (r *Revoker) watchKeys(ctx context.Context, keys jetstream.KeyValue) error {
	w, err := keys.WatchAll(r.ctx)
	if err != nil {
		return fmt.Errorf("revoker: watch %s: %w", events.BucketKeys, err)
	}
	r.keyWatch = w
	ready := make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				pub, err := r.o.TrustAnchors.VerifyKeyRecord(e.Key(), e.Value())
				if err != nil {
					// An overwritten record no longer vouches for the
					// key it replaced either.
					r.keyring.Remove(e.Key())
					r.o.Log.Warn().Str("kid", e.Key()).Err(err).Msg("key record ignored")
					continue
				}
				if err := r.keyring.Add(e.Key(), pub); err != nil {
					r.o.Log.Warn().Str("kid", e.Key()).Err(err).Msg("bad public key ignored")
				}
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				r.keyring.Remove(e.Key())
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("revoker: load signing keys: %w", ctx.Err())
	}
}

// startIndex replays the last MaxTokenTTL of the ledger into the token
// index on a reader that keeps following it (re-creating its consumer when
// it stalls, as on the loss of the consumer's server), and returns once
// the replay reached the ledger's end as of the call.
func (r *Revoker) startIndex(ctx context.Context) error {
	idx, err := follow.Start(ctx, follow.Options{
		JS: r.o.JS, Stream: events.StreamTokens, FilterSubjects: []string{events.SubjectTokenPrefix + ">"},
		StartTime: r.now().Add(-r.o.MaxTokenTTL - time.Hour), Apply: r.indexMsg, DirectReads: true,
		Name: "revoker token index", Log: r.o.Log,
	})
	if err != nil {
		return fmt.Errorf("revoker: token index: %w", err)
	}
	r.idx = idx
	if err := r.syncIndexErr(ctx); err != nil {
		return fmt.Errorf("revoker: token index replay: %w", err)
	}
	return nil
}

// indexMsg applies one ledger event to the token index. Undecodable
// events are the durable consumer's business (dead letters).
func (r *Revoker) indexMsg(_ uint64, _ string, data []byte) {
	env, err := events.Decode(data)
	if err != nil {
		return
	}
	switch p := env.Data.(type) {
	case *events.TokenIssued:
		r.index.issued(p, env.Time, r.now())
	case *events.TokenRevoked:
		r.index.markRevoked(p.TokenID)
	case *events.TokenExpired:
		r.index.remove(p.TokenID)
	}
}

// syncIndexWait bounds syncIndex: enough for the index's reader to notice
// that its consumer was lost with its server and follow the ledger again
// (follow.StallGrace, then a new consumer, which may take a few attempts
// right after a node loss).
const syncIndexWait = 5 * time.Second

// syncIndex waits briefly for the token index to apply the ledger as it
// is now; a token issued a moment ago is then known.
func (r *Revoker) syncIndex(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, syncIndexWait)
	defer cancel()
	if err := r.syncIndexErr(ctx); err != nil {
		r.o.Log.Warn().Err(err).Msg("token index is behind the ledger")
	}
}

// syncIndexErr waits until the index has applied the ledger's last event
// as of the call; the reader re-creates its consumer if it stalls on the
// way.
func (r *Revoker) syncIndexErr(ctx context.Context) error {
	return r.idx.Sync(ctx)
}

// Token returns what the revoker knows about a live token.
func (r *Revoker) Token(id string) (TokenInfo, bool) { return r.index.get(id, r.now()) }

// Alerts is the alert dispatcher (open alerts and delivery counters).
func (r *Revoker) Alerts() *alert.Dispatcher { return r.alerts }
