package revoker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

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
// unless the new one reaches further. Revocations are serialised.
func (r *Revoker) Revoke(ctx context.Context, q Request) (Result, error) {
	if err := q.validate(r.now()); err != nil {
		return Result{}, err
	}
	r.revokeMu.Lock()
	defer r.revokeMu.Unlock()
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
			r.syncIndex(ctx)
			t, ok = r.index.get(q.TokenID, now)
		}
		if !ok {
			if q.Tenant == "" {
				return Result{}, fmt.Errorf("%w: %s: no live token with this id was issued within the last %s (expired, or not on the ledger; give tenant and holder to revoke it anyway)",
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
	var res Result
	log := r.o.Log.With().Str("kind", q.Kind).Str("actor", q.Actor).Logger()

	// Containment first: the rule denies every matching token, seen or not.
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
			rec := events.DenyRecord{Kind: q.Kind, Tenant: q.Tenant, Holder: q.Holder, KeyID: q.KeyID, Before: q.Before.UTC(),
				Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(), Expiry: exp.UTC()}
			changed, err := r.writeRule(ctx, ruleKey, rec)
			if err != nil {
				return res, err
			}
			if changed {
				r.stats.rules.Add(1)
			}
			res.Rules = []string{ruleKey}
			log.Info().Str("rule", ruleKey).Bool("changed", changed).Time("until", exp).Msg("denylist rule in force")
		}
	}

	type pending struct {
		t   TokenInfo
		ack jetstream.PubAckFuture
	}
	var pub []pending
	for _, t := range targets {
		if !t.Expiry.After(now) {
			res.Expired = append(res.Expired, t.ID)
			continue
		}
		already := t.Revoked
		if !already && q.Kind == events.RevokeToken {
			d, err := r.denied(ctx, t)
			if err != nil {
				return res, err
			}
			already = d
		}
		if already {
			res.Already = append(res.Already, t.ID)
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
		m := nats.NewMsg(events.Subject(ev))
		m.Data = b
		// Once per token in the ledger: another replica, the issuer or an
		// earlier attempt that revoked it first makes the server refuse.
		f, err := r.o.JS.PublishMsgAsync(m, events.RevokedOnce(t.ID)...)
		if err != nil {
			return res, fmt.Errorf("publish revocation of %s: %w", t.ID, err)
		}
		pub = append(pub, pending{t, f})
	}
	var (
		firstErr error
		refused  bool // the ledger already held the revocation of a token
	)
	for _, p := range pub {
		select {
		case ack := <-p.ack.Ok():
			r.index.markRevoked(p.t.ID)
			if ack.Duplicate {
				refused = true
				res.Already = append(res.Already, p.t.ID)
				continue
			}
			res.Revoked = append(res.Revoked, p.t.ID)
			r.stats.revoked.Add(1)
		case err := <-p.ack.Err():
			if events.LedgerRefused(err) {
				held, herr := events.LedgerHoldsRevoked(ctx, r.o.JS, p.t.ID)
				if herr == nil && held {
					r.index.markRevoked(p.t.ID)
					refused = true
					res.Already = append(res.Already, p.t.ID)
					continue
				}
				if herr == nil {
					herr = errors.New("refused while a concurrent revocation was in flight; retry")
				}
				err = fmt.Errorf("%w (%w)", err, herr)
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("publish revocation of %s: %w", p.t.ID, err)
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = fmt.Errorf("publish revocation of %s: %w", p.t.ID, ctx.Err())
			}
		}
	}
	r.stats.already.Add(uint64(len(res.Already)))
	if firstErr != nil {
		return res, firstErr
	}
	// A single token is denied now rather than when the ledger consumer
	// catches up (which then finds the entry and does nothing).
	// So is one whose ledger event is already there (the index saw it, or
	// the ledger refused a second one): the replica that published it may
	// have died before writing the entry, and the ledger consumer may be
	// waiting for its acknowledgement deadline. The entry exists before
	// the reply either way.
	if q.Kind == events.RevokeToken && (len(res.Revoked) == 1 || refused || targets[0].Revoked) {
		t := targets[0]
		if _, err := r.writeToken(ctx, events.DenyRecord{Kind: q.Kind, TokenID: t.ID, Tenant: t.Tenant, Holder: t.Holder,
			KeyID: t.KeyID, Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(), Expiry: t.Expiry.UTC()}); err != nil {
			return res, err
		}
	}
	log.Info().Int("revoked", len(res.Revoked)).Int("already", len(res.Already)).Int("expired", len(res.Expired)).
		Strs("rules", res.Rules).Str("anomaly_id", q.AnomalyID).Msg("revocation done")
	return res, nil
}
