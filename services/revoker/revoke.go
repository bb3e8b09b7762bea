package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// errJetStreamDown: the last JetStream write failed and its retries have
// not succeeded since; a revocation goes straight to the retrier.
var errJetStreamDown = errors.New("JetStream refused the last writes; queued behind the pending revocations")

// Sentinel errors of Revoke.
var (
	// ErrBadRequest is wrapped when a revocation request is malformed.
	ErrBadRequest = errors.New("bad revocation request")
	// ErrUnknownToken: a revocation by token id names a token the revoker
	// has not seen issued (and the request gives no tenant and holder to
	// revoke it blind).
	ErrUnknownToken = errors.New("unknown token")
)

// Request is one revocation.
type Request struct {
	// Kind is one of events.RevokeToken, RevokeHolder, RevokeKey,
	// RevokeTenant and RevokeBefore.
	Kind string
	// TokenID is the token to revoke (kind token).
	TokenID string
	// Tenant is the tenant (kinds holder, tenant, before). For kind token
	// it may name the token's tenant, with Holder, to revoke a token the
	// revoker has not seen issued.
	Tenant string
	// Holder is the holder (kind holder).
	Holder string
	// KeyID is the signing key whose tokens to revoke (kind key).
	KeyID string
	// Before revokes the tenant's tokens issued before it (kind before).
	Before time.Time
	// Actor is who asks; Reason says why. Both are recorded on the ledger.
	Actor  string
	Reason string
	// AnomalyID links an automatic revocation to its anomaly.
	AnomalyID string
}

// Result says what a revocation did.
type Result struct {
	// Revoked are the tokens revoked now (a ledger event each).
	Revoked []string
	// Already are matching tokens that were revoked before.
	Already []string
	// Expired are matching tokens past their expiry (nothing to do).
	Expired []string
	// Rules are the denylist rule keys in force for a broad revocation.
	Rules []string
	// Ledger is LedgerRecorded when JetStream accepted the ledger events
	// and the denylist entries within Options.LedgerWait, LedgerPending
	// when the revocation was broadcast to enforcers and its ledger and
	// bucket writes are still being retried (never dropped).
	Ledger string

	job *job // the JetStream work, when there was any
}

// maxFuture is how far in the future a "before" time may lie (clock skew).
const maxFuture = time.Minute

func (q *Request) validate(now time.Time) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	name := func(field, v string) error {
		if v == "" {
			return bad("%s is required for kind %q", field, q.Kind)
		}
		if err := events.ValidateName(v); err != nil {
			return bad("%s: %v", field, err)
		}
		return nil
	}
	only := func(allowed ...string) error {
		set := map[string]bool{"token_id": q.TokenID != "", "tenant": q.Tenant != "", "holder": q.Holder != "",
			"kid": q.KeyID != "", "before": !q.Before.IsZero()}
		for _, f := range []string{"token_id", "tenant", "holder", "kid", "before"} {
			if set[f] && !slices.Contains(allowed, f) {
				return bad("%s does not apply to kind %q", f, q.Kind)
			}
		}
		return nil
	}
	if q.Reason == "" {
		return bad("reason is required")
	}
	if len(q.Reason) > 1024 {
		return bad("reason is longer than 1024 characters")
	}
	if q.Actor == "" {
		return bad("actor is required")
	}
	var err error
	switch q.Kind {
	case events.RevokeToken:
		err = firstOf(only("token_id", "tenant", "holder"), name("token_id", q.TokenID))
		if err == nil && (q.Tenant != "" || q.Holder != "") {
			err = firstOf(name("tenant", q.Tenant), name("holder", q.Holder))
		}
	case events.RevokeHolder:
		err = firstOf(only("tenant", "holder"), name("tenant", q.Tenant), name("holder", q.Holder))
	case events.RevokeKey:
		err = firstOf(only("kid"), name("kid", q.KeyID))
	case events.RevokeTenant:
		err = firstOf(only("tenant"), name("tenant", q.Tenant))
	case events.RevokeBefore:
		err = firstOf(only("tenant", "before"), name("tenant", q.Tenant))
		if err == nil && q.Before.IsZero() {
			err = bad("before is required for kind %q", q.Kind)
		}
		if err == nil && q.Before.After(now.Add(maxFuture)) {
			err = bad("before %s is in the future", q.Before.UTC().Format(time.RFC3339))
		}
	default:
		return bad("kind %q is not one of token, holder, key, tenant, before", q.Kind)
	}
	return err
}

// firstOf returns the first non-nil error.
func firstOf(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Revoke carries out one revocation: for a broad kind it first writes the
// denylist rule (so tokens the revoker never saw are covered at once),
// then publishes a TokenRevoked ledger event per known, live, not yet
// revoked matching token; for kind token it publishes the ledger event and
// writes the token's denylist entry. Revoking again is harmless: already
// revoked tokens get no second ledger event and the rule is left as is
// unless the new one reaches further. Revocations are planned one at a
// time (which tokens, which rule); their JetStream writes overlap.
//
// Containment comes first: the rule or token entry is broadcast to the
// enforcers (pending) before JetStream is asked anything. If JetStream has
// not accepted every write within Options.LedgerWait, Revoke returns with
// Result.Ledger = LedgerPending and the retrier keeps writing until it
// does; otherwise Ledger is LedgerRecorded.
func (r *Revoker) Revoke(ctx context.Context, q Request) (Result, error) {
	if err := q.validate(r.now()); err != nil {
		return Result{}, err
	}
	r.revokeMu.Lock()
	locked := true
	defer func() {
		if locked {
			r.revokeMu.Unlock()
		}
	}()
	now := r.now()
	var (
		targets []TokenInfo
		ruleKey string
		unknown time.Time // latest expiry of a matching token we cannot know
	)
	switch q.Kind {
	case events.RevokeToken:
		t, ok := r.index.get(q.TokenID, now)
		if !ok {
			// Containment does not wait for the token index: the id alone
			// is enough to deny it. The index may lag the ledger (its
			// reader lost with a node, JetStream electing a leader); the
			// ledger event, which needs the token's tenant, follows once
			// the index knows it. An id the ledger never had is denied
			// for nothing.
			r.announceEarly(q, now)
		}
		if !ok && !r.jsDown.Load() {
			r.syncIndex(ctx)
			t, ok = r.index.get(q.TokenID, now)
		}
		if !ok {
			if q.Tenant == "" {
				return Result{}, fmt.Errorf("%w: %s: no live token with this id was issued within the last %s (expired, or not on the ledger; give tenant and holder to revoke it anyway); every enforcer denies the id meanwhile",
					ErrUnknownToken, q.TokenID, r.o.MaxTokenTTL)
			}
			t = TokenInfo{ID: q.TokenID, Tenant: q.Tenant, Holder: q.Holder, Expiry: now.Add(r.o.MaxTokenTTL)}
		}
		targets = []TokenInfo{t}
	case events.RevokeHolder:
		ruleKey, unknown = events.DenyKeyHolder(q.Tenant, q.Holder), now.Add(r.o.MaxTokenTTL)
		targets = r.index.match(now, func(t *TokenInfo) bool { return t.Tenant == q.Tenant && t.Holder == q.Holder })
	case events.RevokeKey:
		ruleKey, unknown = events.DenyKeyKey(q.KeyID), now.Add(r.o.MaxTokenTTL)
		targets = r.index.match(now, func(t *TokenInfo) bool { return t.KeyID == q.KeyID })
	case events.RevokeTenant:
		ruleKey, unknown = events.DenyKeyTenant(q.Tenant), now.Add(r.o.MaxTokenTTL)
		targets = r.index.match(now, func(t *TokenInfo) bool { return t.Tenant == q.Tenant })
	case events.RevokeBefore:
		ruleKey, unknown = events.DenyKeyBefore(q.Tenant), q.Before.Add(r.o.MaxTokenTTL)
		before := q.Before.Unix()
		targets = r.index.match(now, func(t *TokenInfo) bool { return t.Tenant == q.Tenant && t.IssuedAt.Unix() < before })
	}
	slices.SortFunc(targets, func(a, b TokenInfo) int {
		if c := a.IssuedAt.Compare(b.IssuedAt); c != 0 {
			return c
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	res := Result{Ledger: LedgerRecorded}
	log := r.o.Log.With().Str("kind", q.Kind).Str("actor", q.Actor).Logger()
	j := &job{ID: uuid.NewString(), Kind: q.Kind, Since: now.UTC()}

	// The rule denies every matching token, seen or not.
	if ruleKey != "" {
		exp := unknown
		if len(targets) > 0 {
			exp = time.Time{}
			for _, t := range targets {
				if t.Expiry.After(exp) {
					exp = t.Expiry
				}
			}
		}
		if exp.After(now) {
			j.Rule = &denyWrite{Key: ruleKey, Rec: events.DenyRecord{Kind: q.Kind, Tenant: q.Tenant, Holder: q.Holder,
				KeyID: q.KeyID, Before: q.Before.UTC(), Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(), Expiry: exp.UTC()}}
			res.Rules = []string{ruleKey}
		}
	}
	for _, t := range targets {
		if !t.Expiry.After(now) {
			res.Expired = append(res.Expired, t.ID)
			continue
		}
		if t.Revoked || r.pend.hasToken(t.ID) {
			res.Already = append(res.Already, t.ID)
			if t.Revoked && q.Kind == events.RevokeToken {
				// On the ledger, not necessarily in the bucket: the
				// replica that published it may have died in between.
				j.Token = &denyWrite{Key: events.DenyKeyToken(t.ID), Rec: events.DenyRecord{Kind: q.Kind, TokenID: t.ID,
					Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID, Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(),
					Expiry: t.Expiry.UTC()}}
			}
			continue
		}
		ev, err := events.New(r.o.Source, now, &events.TokenRevoked{
			TokenID: t.ID, Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID, Kind: q.Kind,
			Actor: q.Actor, Reason: q.Reason, Expiry: t.Expiry.UTC(), AnomalyID: q.AnomalyID,
		})
		if err != nil {
			return res, err
		}
		b, err := events.Encode(ev)
		if err != nil {
			return res, err
		}
		j.Ledger = append(j.Ledger, &ledgerItem{TokenID: t.ID, Subject: events.Subject(ev), MsgID: ev.MsgID(), Data: b,
			Check: q.Kind == events.RevokeToken, Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID, IssuedAt: t.IssuedAt})
		if q.Kind == events.RevokeToken {
			// A single token is denied now rather than when the ledger
			// consumer catches up (which then finds the entry and does
			// nothing).
			j.Token = &denyWrite{Key: events.DenyKeyToken(t.ID), Rec: events.DenyRecord{Kind: q.Kind, TokenID: t.ID,
				Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID, Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(),
				Expiry: t.Expiry.UTC()}}
		}
	}
	if j.Rule != nil || len(j.Ledger) > 0 || j.Token != nil {
		// Containment first: enforcers hear of it before JetStream is
		// asked anything.
		if err := r.announcePending(j); err != nil {
			return res, err
		}
		// Its tokens count as revoked for the revocations that follow;
		// they need not wait for JetStream's answer to this one.
		r.pend.reserve(j)
		r.revokeMu.Unlock()
		locked = false
		err := errJetStreamDown
		if !r.jsDown.Load() {
			wctx, cancel := context.WithTimeout(ctx, r.o.LedgerWait)
			err = r.runJob(wctx, j)
			cancel()
			r.jsDown.Store(err != nil)
		}
		// (Read before the retrier may take the job over.)
		for _, l := range j.Ledger {
			if l.already {
				res.Already = append(res.Already, l.TokenID)
			} else {
				res.Revoked = append(res.Revoked, l.TokenID)
			}
		}
		res.job = j
		if err != nil {
			res.Ledger = LedgerPending
			if jerr := r.pend.add(j, false, true); jerr != nil {
				log.Error().Err(jerr).Msg("revocation journal")
			}
			log.Warn().Err(err).Str("revocation", j.ID).Dur("waited", r.o.LedgerWait).
				Msg("revocation broadcast; JetStream has not accepted its ledger and denylist writes yet, retrying")
		} else {
			r.pend.release(j)
			j.done.Store(true)
		}
	}
	r.stats.already.Add(uint64(len(res.Already)))
	log.Info().Int("revoked", len(res.Revoked)).Int("already", len(res.Already)).Int("expired", len(res.Expired)).
		Strs("rules", res.Rules).Str("anomaly_id", q.AnomalyID).Str("ledger", res.Ledger).Msg("revocation done")
	return res, nil
}

// announceEarly broadcasts the denylist entry of a token the index does
// not know yet, as a change no write of this revocation will settle: it
// stays out of the heartbeats' pending list (the job, if the token turns
// up, announces and writes its own entry), but enforcers apply it at once
// and a resync still returns it.
func (r *Revoker) announceEarly(q Request, now time.Time) {
	rec := events.DenyRecord{Kind: events.RevokeToken, TokenID: q.TokenID, Tenant: q.Tenant, Holder: q.Holder,
		Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(), Expiry: now.Add(r.o.MaxTokenTTL).UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	r.bc.resolved(r.bc.announce(events.DenyKeyToken(q.TokenID), b, 0), 0)
}

// announcePending broadcasts a job's denylist entries as pending changes.
func (r *Revoker) announcePending(j *job) error {
	for _, w := range []*denyWrite{j.Rule, j.Token} {
		if w == nil || w.done {
			continue
		}
		b, err := json.Marshal(w.Rec)
		if err != nil {
			return fmt.Errorf("encode deny record %s: %w", w.Key, err)
		}
		w.seq = r.bc.announce(w.Key, b, 0)
	}
	return nil
}

// runJob carries out the steps of j not yet done: the rule, the ledger
// events, the token entry. It returns the first error; the steps done so
// far stay done.
func (r *Revoker) runJob(ctx context.Context, j *job) error {
	if w := j.Rule; w != nil && !w.done {
		changed, err := r.writeRule(ctx, w.Key, w.Rec, w.seq)
		if err != nil {
			return err
		}
		w.done = true
		if changed {
			r.stats.rules.Add(1)
		}
		r.o.Log.Info().Str("rule", w.Key).Bool("changed", changed).Time("until", w.Rec.Expiry).Msg("denylist rule in force")
	}
	if err := r.publishLedger(ctx, j.Ledger); err != nil {
		return err
	}
	if w := j.Token; w != nil && !w.done {
		// Already revoked or not, the entry exists before the reply: the
		// replica that put the revocation on the ledger may have died
		// before writing it (an existing entry is left as it is).
		if _, err := r.writeToken(ctx, w.Rec, w.seq); err != nil {
			return err
		}
		w.done = true
	}
	return nil
}

// publishLedger publishes the ledger events not yet accepted and waits
// for their acknowledgements.
func (r *Revoker) publishLedger(ctx context.Context, items []*ledgerItem) error {
	type pending struct {
		l   *ledgerItem
		ack jetstream.PubAckFuture
	}
	var pub []pending
	for _, l := range items {
		if l.done {
			continue
		}
		if l.Check {
			d, err := r.denied(ctx, TokenInfo{ID: l.TokenID, Tenant: l.Tenant, Holder: l.Holder, KeyID: l.KeyID, IssuedAt: l.IssuedAt})
			if err != nil {
				return err
			}
			if d {
				l.done, l.already = true, true
				continue
			}
		}
		m := nats.NewMsg(l.Subject)
		m.Data = l.Data
		// Once per token in the ledger: another replica, the issuer or an
		// earlier attempt that revoked it first makes the server refuse.
		f, err := r.o.JS.PublishMsgAsync(m, events.RevokedOnce(l.TokenID)...)
		if err != nil {
			return fmt.Errorf("publish revocation of %s: %w", l.TokenID, err)
		}
		pub = append(pub, pending{l, f})
	}
	var firstErr error
	for _, p := range pub {
		select {
		case ack := <-p.ack.Ok():
			p.l.done = true
			r.index.markRevoked(p.l.TokenID)
			if ack.Duplicate {
				p.l.already = true // de-duplicated: the same revocation, stored once
				continue
			}
			r.stats.revoked.Add(1)
		case err := <-p.ack.Err():
			if events.LedgerRefused(err) {
				// The ledger refused a second revocation of the token, or
				// one is in flight: confirm it is there.
				held, herr := events.LedgerHoldsRevoked(ctx, r.o.JS, p.l.TokenID)
				if herr == nil && held {
					p.l.done, p.l.already = true, true
					r.index.markRevoked(p.l.TokenID)
					continue
				}
				if herr == nil {
					herr = errors.New("refused while a concurrent revocation was in flight; retry")
				}
				err = fmt.Errorf("%w (%w)", err, herr)
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("publish revocation of %s: %w", p.l.TokenID, err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish revocation of %s: %w", p.l.TokenID, ctx.Err())
			}
		}
	}
	return firstErr
}
