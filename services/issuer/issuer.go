// Package issuer is Cordon's token issuer: it mints signed, scoped,
// context-bound tokens within the ceiling the policy allows each holder,
// rotates them, rotates and retires its signing keys, and records every
// change as an event on the TOKENS stream (the ledger).
//
// The registry of tokens is a projection of that ledger: rebuilt by
// replaying TOKENS at start, then kept current by following it, so that
// revocations published by other services show up. Pending work that the
// ledger implies (revoking a rotated token when its grace period ends,
// recording an expiry) is recomputed from the registry, so it survives a
// restart and is never emitted twice.
//
// The issuer is reachable over an HTTP JSON API, over NATS request/reply
// (the cordon.cmd.* subjects) and in-process. Both remote APIs require an
// admin token, judged by the control plane's one authenticator
// (pkg/adminauth) with the registry as its ledger view: a token this issuer
// signed, for tenant "cordon" and audience "cordon", that the ledger
// recorded with exactly these claims, neither expired, revoked nor rotated
// past its grace period, whose recorded scopes cover the operation and
// whose network, window and device bindings hold (over HTTPS the socket
// peer and the TLS client certificate; over NATS a bound token is
// refused). At first start the issuer mints a bootstrap admin token into
// DataDir/admin.token (0600) and logs that path, never the token. Its
// Prometheus metrics (Collector) are served apart from the API, by
// `cordon issuer --metrics-listen`.
package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/follow"
	"github.com/cordonhq/cordon/pkg/leak"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/privdir"
)

// Defaults of Options.
const (
	DefaultGrace        = time.Hour
	DefaultAdminTTL     = policy.AdminMaxTTL
	DefaultTickInterval = time.Second
	// AdminTokenFile is the bootstrap admin token's name in DataDir.
	AdminTokenFile = "admin.token"
	// QueueGroup is the NATS queue group of the command subscriptions.
	QueueGroup = "cordon-issuer"
)

// Options configures an Issuer.
type Options struct {
	// NC is the NATS connection (required). It is not closed by Close.
	NC *nats.Conn
	// JS is the JetStream context; nil makes one from NC.
	JS jetstream.JetStream
	// DataDir holds the signing keys (DataDir/keys) and the bootstrap admin
	// token (DataDir/admin.token). Required.
	DataDir string
	// Policy holds the ceilings. Required.
	Policy *policy.Policy
	// Logger receives the issuer's logs.
	Logger zerolog.Logger
	// Source names this instance in events; default "issuer/<hostname>".
	Source string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Grace is how long a rotated token stays valid by default.
	Grace time.Duration
	// AdminTTL is the lifetime of the bootstrap admin token (default
	// DefaultAdminTTL), at most the max_ttl of the admin ceiling: the
	// built-in policy.AdminCeiling, or the policy's own cordon/admin.
	AdminTTL time.Duration
	// Listen is the HTTP API address, such as 127.0.0.1:7400; empty serves
	// no HTTP (Handler still works).
	Listen string
	// TLS, when set, makes the HTTP API serve HTTPS. Unless it says
	// otherwise, client certificates are requested (not required): a
	// device-bound admin token is accepted only with its certificate.
	TLS *tls.Config
	// TickInterval is how often expiries and pending revocations are
	// checked.
	TickInterval time.Duration
	// IdempotencyEntries bounds the idempotency table (default 10000).
	IdempotencyEntries int
	// AnchorFile is the trust anchor's private key (`cordon anchor
	// generate`), which endorses every signing key the issuer publishes.
	// Empty uses DataDir/keys/anchor.key, generated on first start. The
	// public half is written to DataDir/trust-anchor.pub.
	AnchorFile string
	// LeakKeys verifies GitHub's secret scanning reports (POST
	// /v1/leaks/github); nil answers that route 404.
	LeakKeys *leak.Keys
	// LeakRate and LeakBurst limit unsigned leak reports (POST /v1/leaks,
	// cordon.cmd.report-leak) per client address: requests per second
	// (default DefaultLeakRate) and burst (default DefaultLeakBurst).
	LeakRate  float64
	LeakBurst int
}

// Issuer mints and rotates tokens. Create it with New, then Start (or Run).
type Issuer struct {
	opts    Options
	log     zerolog.Logger
	refused zerolog.Logger // sampled: refused API calls can come in floods
	nc      *nats.Conn
	js      jetstream.JetStream
	policy  *policy.Policy // with the built-in cordon/admin ceiling
	keys    *keyStore
	reg     *registry
	idem    *idemTable
	admins  *adminauth.Authenticator

	opMu sync.Mutex // serialises changes to the ledger

	kv        jetstream.KeyValue
	ledger    *follow.Reader // TOKENS into reg
	subs      []*nats.Subscription
	srv       *http.Server
	ln        net.Listener
	handler   http.Handler
	bg        context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	leakLimit *limiter
	ready     atomic.Bool
	started   atomic.Bool
	ticks     atomic.Uint64 // completed ticks, for tests
	stats     counters
	closed    sync.Once
}

// New checks the options and opens the key store. Nothing is published
// until Start.
func New(o Options) (*Issuer, error) {
	if o.NC == nil {
		return nil, errors.New("issuer: a NATS connection is required")
	}
	if o.DataDir == "" {
		return nil, errors.New("issuer: a data directory is required")
	}
	if o.Policy == nil {
		return nil, errors.New("issuer: a policy is required")
	}
	if o.JS == nil {
		js, err := jetstream.New(o.NC)
		if err != nil {
			return nil, fmt.Errorf("issuer: jetstream: %w", err)
		}
		o.JS = js
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Source == "" {
		host, _ := os.Hostname()
		o.Source = "issuer/" + strings.Map(func(r rune) rune {
			if r == '.' || r == ' ' {
				return '-'
			}
			return r
		}, host)
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.Grace < 0 {
		return nil, fmt.Errorf("issuer: negative grace period %s", o.Grace)
	}
	if o.AdminTTL == 0 {
		o.AdminTTL = DefaultAdminTTL
	}
	if o.AdminTTL < time.Minute {
		return nil, fmt.Errorf("issuer: admin token lifetime %s is shorter than a minute", o.AdminTTL)
	}
	if o.TickInterval <= 0 {
		o.TickInterval = DefaultTickInterval
	}
	if o.IdempotencyEntries <= 0 {
		o.IdempotencyEntries = 10000
	}
	log := o.Logger.With().Str("component", "issuer").Logger()
	if err := privdir.EnsureLogged(o.DataDir, log); err != nil {
		return nil, fmt.Errorf("issuer: data directory: %w", err)
	}
	ks, err := openKeyStore(filepath.Join(o.DataDir, "keys"), o.AnchorFile, log)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if err := WriteTrustAnchor(filepath.Join(o.DataDir, TrustAnchorFile), ks.anchor.Public()); err != nil {
		return nil, fmt.Errorf("issuer: write trust anchor: %w", err)
	}
	i := &Issuer{
		opts:      o,
		log:       log,
		refused:   log.Sample(&zerolog.BurstSampler{Burst: 20, Period: time.Second}),
		nc:        o.NC,
		js:        o.JS,
		policy:    o.Policy.WithAdminCeiling(),
		keys:      ks,
		reg:       newRegistry(),
		idem:      newIdemTable(o.IdempotencyEntries),
		leakLimit: newLimiter(cmp.Or(o.LeakRate, DefaultLeakRate), cmp.Or(o.LeakBurst, DefaultLeakBurst)),
	}
	i.admins, err = adminauth.New(adminauth.Options{Keys: ks.ring, Ledger: ledgerView{i}, Now: o.Now})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	i.bg, i.cancel = context.WithCancel(context.Background())
	i.handler = i.routes()
	return i, nil
}

// Start replays the ledger into the registry, publishes the signing keys,
// announces the policy, mints the bootstrap admin token if needed, and
// starts serving (HTTP, NATS commands, the expiry ticker). It returns once
// the issuer is ready.
func (i *Issuer) Start(ctx context.Context) error {
	if !i.started.CompareAndSwap(false, true) {
		return errors.New("issuer: already started")
	}
	if err := i.start(ctx); err != nil {
		i.Close()
		return fmt.Errorf("issuer: %w", err)
	}
	return nil
}

func (i *Issuer) start(ctx context.Context) error {
	kv, err := i.js.KeyValue(ctx, events.BucketKeys)
	if err != nil {
		return fmt.Errorf("open %s bucket (are Cordon's streams and buckets created?): %w", events.BucketKeys, err)
	}
	i.kv = kv
	// The registry follows the ledger on a reader that re-creates its
	// consumer when it stalls (the consumer's server lost): publish waits
	// for its own event there, so issuance resumes as soon as TOKENS has
	// a leader again rather than after missed heartbeats.
	i.ledger, err = follow.Start(ctx, follow.Options{
		JS: i.js, Stream: events.StreamTokens, Apply: i.onLedger, DirectReads: true,
		Name: "issuer registry", Log: i.log,
	})
	if err != nil {
		return fmt.Errorf("follow %s (are Cordon's streams and buckets created?): %w", events.StreamTokens, err)
	}
	if err := i.ledger.Sync(ctx); err != nil {
		return fmt.Errorf("replay %s: %w", events.StreamTokens, err)
	}
	i.log.Info().Uint64("seq", i.ledger.Applied()).Int("tokens", len(i.reg.list(ListFilter{}, i.now()))).Msg("registry rebuilt from the ledger")

	if err := i.reconcileKeys(ctx); err != nil {
		return err
	}
	if err := i.announcePolicy(ctx); err != nil {
		return err
	}
	if _, err := i.ensureAdminToken(ctx); err != nil {
		return err
	}

	for subj, op := range map[string]string{
		events.SubjectCmdIssue: opIssue, events.SubjectCmdRotate: opRotate,
		events.SubjectCmdList: opList, events.SubjectCmdInspect: opInspect,
	} {
		sub, err := i.nc.QueueSubscribe(subj, QueueGroup, i.cmdHandler(op))
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subj, err)
		}
		i.subs = append(i.subs, sub)
	}
	sub, err := i.nc.QueueSubscribe(events.SubjectCmdReportLeak, QueueGroup, i.leakHandler)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", events.SubjectCmdReportLeak, err)
	}
	i.subs = append(i.subs, sub)
	if err := i.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}

	if i.opts.Listen != "" {
		ln, err := net.Listen("tcp", i.opts.Listen)
		if err == nil && i.opts.TLS != nil {
			conf := i.opts.TLS.Clone()
			if conf.ClientAuth == tls.NoClientCert {
				// The handshake proves the caller holds the certificate's
				// key; its thumbprint is checked against the token's device.
				conf.ClientAuth = tls.RequestClientCert
			}
			ln = tls.NewListener(ln, conf)
		}
		if err != nil {
			return fmt.Errorf("listen %s: %w", i.opts.Listen, err)
		}
		i.ln = ln
		i.srv = &http.Server{
			Handler:           i.handler,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
		}
		i.wg.Add(1)
		go func() {
			defer i.wg.Done()
			if err := i.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				i.log.Error().Err(err).Msg("http api stopped")
			}
		}()
	}

	i.wg.Add(1)
	go i.ticker()
	i.ready.Store(true)
	ev := i.log.Info().Str("kid", i.keys.activeID()).Int("holders", len(i.opts.Policy.Holders)).Str("source", i.opts.Source)
	if i.ln != nil {
		ev = ev.Str("http", i.ln.Addr().String())
	}
	ev.Msg("issuer ready")
	return nil
}

// Run starts the issuer and serves until ctx is done, then closes it.
func (i *Issuer) Run(ctx context.Context) error {
	if err := i.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return i.Close()
}

// Close stops serving and following the ledger. It does not close the NATS
// connection. Safe to call more than once.
func (i *Issuer) Close() error {
	i.closed.Do(func() {
		i.ready.Store(false)
		if i.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = i.srv.Shutdown(ctx)
			cancel()
		}
		for _, s := range i.subs {
			_ = s.Unsubscribe()
		}
		i.cancel()
		i.wg.Wait()
		if i.ledger != nil {
			i.ledger.Close()
		}
		i.log.Info().Msg("issuer stopped")
	})
	return nil
}

// Addr is the HTTP API's listen address, once started with Options.Listen.
func (i *Issuer) Addr() string {
	if i.ln == nil {
		return ""
	}
	return i.ln.Addr().String()
}

// Handler is the HTTP API, for embedding in another server or a test.
func (i *Issuer) Handler() http.Handler { return i.handler }

// AdminTokenPath is where the bootstrap admin token is written.
func (i *Issuer) AdminTokenPath() string { return filepath.Join(i.opts.DataDir, AdminTokenFile) }

// Policy returns the policy in force, including the built-in cordon/admin
// ceiling.
func (i *Issuer) Policy() *policy.Policy { return i.policy }

func (i *Issuer) now() time.Time { return i.opts.Now() }

// onLedger applies one TOKENS message to the registry. A message that does
// not decode is logged and skipped: bad input never stops the projection.
func (i *Issuer) onLedger(seq uint64, subject string, data []byte) {
	env, err := events.Decode(data)
	if err != nil {
		i.log.Warn().Err(err).Uint64("seq", seq).Str("subject", subject).Msg("skipping undecodable ledger event")
		i.reg.skip(seq)
		return
	}
	i.reg.apply(seq, env)
}

// RegistryStats are the counters of the reader that keeps the registry
// current: the last ledger sequence applied, and how often it re-created
// its consumer because it fell behind (a lost server).
func (i *Issuer) RegistryStats() follow.Stats {
	if i.ledger == nil {
		return follow.Stats{}
	}
	return i.ledger.Stats()
}

// publish appends an event to the ledger and waits until the registry has
// applied it, so that a caller reads its own writes.
func (i *Issuer) publish(ctx context.Context, p events.Payload) (events.Envelope, error) {
	env, err := events.New(i.opts.Source, i.now(), p)
	if err != nil {
		return env, err
	}
	b, err := events.Encode(env)
	if err != nil {
		return env, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(env.MsgID()), jetstream.WithExpectStream(events.StreamTokens)}
	if rev, ok := p.(*events.TokenRevoked); ok {
		opts = append(opts, events.RevokedOnce(rev.TokenID)...) // once per token: a revoker may have been first
	}
	ack, err := i.publishRetrying(ctx, events.Subject(env), b, opts)
	if _, ok := p.(*events.TokenRevoked); ok && events.LedgerRefused(err) {
		return env, nil // the ledger holds (or is storing) the token's revocation: the registry follows it
	}
	if err != nil {
		return env, fmt.Errorf("publish %s: %w", env.Type, err)
	}
	if err := i.ledger.WaitSeq(ctx, ack.Sequence); err != nil {
		return env, fmt.Errorf("wait for %s in the registry: %w", env.Type, err)
	}
	return env, nil
}

// publishAttempt bounds one attempt to append to the ledger. A request
// in flight when the server it went to dies gets no answer; a new attempt
// (the same message id, so JetStream stores the event once) goes to the
// server the connection moved to instead of waiting out the caller's
// deadline.
const publishAttempt = time.Second

// publishRetrying publishes to the ledger, attempt after attempt, until
// JetStream answers or ctx ends.
func (i *Issuer) publishRetrying(ctx context.Context, subject string, data []byte, opts []jetstream.PublishOpt) (*jetstream.PubAck, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		ack, err := i.js.Publish(actx, subject, data, opts...)
		lost := actx.Err() != nil || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
		cancel()
		if err == nil || !lost || ctx.Err() != nil {
			return ack, err
		}
		i.log.Debug().Err(err).Str("subject", subject).Msg("ledger publish unanswered, trying again")
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// reconcileKeys makes the local keys and the ledger agree: keys the ledger
// retired are deleted, a first key is generated if there is none, and every
// local key is in the keys bucket and announced on the ledger.
func (i *Issuer) reconcileKeys(ctx context.Context) error {
	for _, kid := range i.keys.ids() {
		if i.reg.keyRetired(kid) {
			i.log.Warn().Str("kid", kid).Msg("deleting a signing key the ledger retired")
			if err := i.keys.remove(kid); err != nil {
				return err
			}
			if err := i.kv.Delete(ctx, kid); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("retire key %s: %w", kid, err)
			}
		}
	}
	if i.keys.activeID() == "" {
		if kid := i.keys.newest(); kid != "" {
			if err := i.keys.setActive(kid); err != nil {
				return err
			}
		} else {
			lk, err := i.keys.generate(i.now())
			if err != nil {
				return err
			}
			if err := i.publishKey(ctx, lk, i.opts.Source); err != nil {
				return err
			}
			if err := i.keys.setActive(lk.signer.KeyID); err != nil {
				return err
			}
			i.log.Info().Str("kid", lk.signer.KeyID).Msg("generated the first signing key")
		}
	}
	for _, kid := range i.keys.ids() {
		lk, _ := i.keys.get(kid)
		if err := i.publishKey(ctx, lk, i.opts.Source); err != nil {
			return err
		}
	}
	return nil
}

// publishKey puts a key's public half in the keys bucket (enforcers watch
// it) and announces it on the ledger, each unless already done.
func (i *Issuer) publishKey(ctx context.Context, lk *localKey, actor string) error {
	kid := lk.signer.KeyID
	rec, err := json.Marshal(i.keys.record(lk))
	if err != nil {
		return err
	}
	e, err := i.kv.Get(ctx, kid)
	switch {
	case err == nil && bytes.Equal(e.Value(), rec):
	case err == nil || errors.Is(err, jetstream.ErrKeyNotFound):
		if _, err := i.kv.Put(ctx, kid, rec); err != nil {
			return fmt.Errorf("publish key %s: %w", kid, err)
		}
	default:
		return fmt.Errorf("read key %s: %w", kid, err)
	}
	if !i.reg.keyPublished(kid) {
		if _, err := i.publish(ctx, &events.KeyPublished{KeyID: kid, PublicKey: lk.signer.Public(), Actor: actor}); err != nil {
			return err
		}
		i.log.Info().Str("kid", kid).Msg("signing key published")
	}
	return nil
}

// announcePolicy records the policy on the ledger when it differs from the
// last one recorded.
func (i *Issuer) announcePolicy(ctx context.Context) error {
	p := i.opts.Policy
	if p.Digest == "" || i.reg.policyDigest() == p.Digest {
		return nil
	}
	path := p.File
	if path == "" {
		path = "(unnamed)"
	}
	if _, err := i.publish(ctx, &events.PolicyChanged{Digest: p.Digest, Path: path, Holders: len(p.Holders), Actor: i.opts.Source}); err != nil {
		return err
	}
	i.log.Info().Str("digest", p.Digest).Str("path", path).Msg("policy recorded on the ledger")
	return nil
}

// ensureAdminToken keeps a working bootstrap admin token in DataDir: if the
// file is missing, or its token no longer authenticates (expired, revoked,
// key retired, not on the ledger), a new one is minted. A token refused
// only for its context (networks or windows a policy gave cordon/admin)
// is kept. It reports whether it minted one. Callers hold opMu or run
// before serving.
func (i *Issuer) ensureAdminToken(ctx context.Context) (bool, error) {
	path := i.AdminTokenPath()
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		_, aerr := i.admins.Authenticate(ctx, adminauth.Request{Token: strings.TrimSpace(string(b)), Scope: ScopeRead})
		switch {
		case aerr == nil, errors.Is(aerr, ErrForbidden):
			return false, nil
		case errors.Is(aerr, adminauth.ErrUnavailable):
			return false, fmt.Errorf("check the bootstrap admin token: %w", aerr)
		}
		i.log.Warn().Str("path", path).Str("reason", aerr.Error()).Msg("bootstrap admin token no longer valid; minting a new one")
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("read admin token: %w", err)
	}
	c, err := i.policy.Lookup(AdminTenant, AdminHolder)
	if err != nil {
		return false, err
	}
	if i.opts.AdminTTL > c.MaxTTL {
		i.log.Warn().Str("admin_ttl", policy.FormatDuration(i.opts.AdminTTL)).Str("max_ttl", policy.FormatDuration(c.MaxTTL)).
			Msg("bootstrap admin token lifetime capped by the admin ceiling's max_ttl (declare cordon/admin in the policy to change it)")
	}
	req := policy.Narrow(c, policy.Request{Tenant: AdminTenant, Holder: AdminHolder, Scopes: c.Scopes, TTL: min(i.opts.AdminTTL, c.MaxTTL)})
	if err := policy.Check(c, req); err != nil {
		return false, fmt.Errorf("bootstrap admin token: %w", err)
	}
	resp, err := i.mint(ctx, "issuer:bootstrap", req, i.now(), "", nil, false)
	if err != nil {
		return false, fmt.Errorf("bootstrap admin token: %w", err)
	}
	if err := writeFileAtomic(path, []byte(resp.Token+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("write admin token: %w", err)
	}
	i.log.Info().Str("path", path).Str("token_id", resp.ID).Time("expires", resp.Claims.Expiry).
		Msg("bootstrap admin token written")
	return true, nil
}

// ticker records expiries and revokes rotated tokens whose grace is over.
func (i *Issuer) ticker() {
	defer i.wg.Done()
	t := time.NewTicker(i.opts.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-i.bg.Done():
			return
		case <-t.C:
			i.tick(i.bg)
		}
	}
}

func (i *Issuer) tick(ctx context.Context) {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	defer i.ticks.Add(1)
	revoke, expire := i.reg.due(i.now(), i.opts.Source)
	for _, p := range revoke {
		if _, err := i.publish(ctx, p); err != nil {
			if ctx.Err() == nil {
				i.log.Error().Err(err).Str("token_id", p.TokenID).Msg("revoke rotated token; will retry")
			}
			return
		}
		i.log.Info().Str("token_id", p.TokenID).Str("tenant", p.Tenant).Str("holder", p.Holder).Msg("rotated token revoked after its grace period")
	}
	for _, p := range expire {
		if _, err := i.publish(ctx, p); err != nil {
			if ctx.Err() == nil {
				i.log.Error().Err(err).Str("token_id", p.TokenID).Msg("record expiry; will retry")
			}
			return
		}
		i.log.Debug().Str("token_id", p.TokenID).Msg("token expired")
	}
}
