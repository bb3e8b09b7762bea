package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// Graduated response: a token is narrowed (quarantined) or stepped up for a
// while, by a response rule or by hand. The restriction is a denylist
// entry (events.DenyKeyNarrow, DenyKeyStepUp) with a TTL until it ends,
// broadcast to the enforcers before it is written, as revocations are, and
// a ledger event (events.TokenRestricted) naming who or what took the
// step. A release deletes the entries and records events.TokenReleased.

// ErrNoNetworks: a token cannot be narrowed to its holder's known networks
// because none are known (neither the anomaly's evidence nor the token's
// own claims name any).
var ErrNoNetworks = errors.New("no known networks to narrow the token to")

// RestrictRequest is one narrow or step_up step on a token.
type RestrictRequest struct {
	TokenID string
	// Step is events.StepNarrow or events.StepStepUp.
	Step string
	// For is how long the restriction lasts (at most
	// events.MaxRestriction; it never outlives the token).
	For time.Duration
	// Networks, for narrow, are the networks the token keeps (CIDR
	// prefixes or addresses): its holder's known networks. Empty: the
	// token's own networks.
	Networks []string
	// Escalate, for narrow, steps the token up instead when no networks
	// are known, rather than failing with ErrNoNetworks (automatic steps:
	// a step the evidence cannot support is taken one step stronger).
	Escalate bool
	// Actor is who takes the step; Reason says why; Rule, AnomalyID and
	// Risk link an automatic step to its rule and anomaly.
	Actor, Reason, Rule, AnomalyID string
	Risk                           float64
}

// RestrictResult says what a restriction did.
type RestrictResult struct {
	// Step is the step in force: the request's, or step_up when a narrow
	// was escalated (Escalated says why).
	Step      string
	Escalated string
	// Until is when the restriction ends.
	Until time.Time
	// Scopes and Networks are what a quarantined token keeps.
	Scopes   []string
	Networks []string
	// Already is "revoked" when the token is revoked (nothing to
	// restrict), or "restricted" when the same step was already in force
	// at least as long (nothing changed, no ledger event).
	Already string
}

// maxRestrictReason bounds a restriction's reason.
const maxRestrictReason = 1024

// Restrict narrows or steps up one token: it broadcasts the denylist entry
// to the enforcers, writes it to the bucket with a TTL until the
// restriction ends, and records it on the ledger. Restricting again with
// an earlier or equal end changes nothing; a later end extends it (and a
// narrow replaces the networks). A revoked token is left as it is.
func (r *Revoker) Restrict(ctx context.Context, q RestrictRequest) (RestrictResult, error) {
	now := r.now()
	if err := q.validate(); err != nil {
		return RestrictResult{}, err
	}
	info, ok := r.index.get(q.TokenID, now)
	if !ok {
		r.syncIndex(ctx)
		info, ok = r.index.get(q.TokenID, now)
	}
	if !ok {
		return RestrictResult{}, fmt.Errorf("%w: %s: no live token with this id was issued within the last %s", ErrUnknownToken, q.TokenID, r.o.MaxTokenTTL)
	}
	return r.restrict(ctx, info, q, now)
}

func (q *RestrictRequest) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	switch {
	case q.TokenID == "":
		return bad("token_id is required")
	case events.ValidateName(q.TokenID) != nil:
		return bad("token_id: %v", events.ValidateName(q.TokenID))
	case q.Step != events.StepNarrow && q.Step != events.StepStepUp:
		return bad("step %q is not one of narrow, step_up", q.Step)
	case q.For <= 0 || q.For > events.MaxRestriction:
		return bad("for %s: want more than 0 and at most %s", q.For, events.MaxRestriction)
	case q.Reason == "":
		return bad("reason is required")
	case len(q.Reason) > maxRestrictReason:
		return bad("reason is longer than %d characters", maxRestrictReason)
	case q.Actor == "":
		return bad("actor is required")
	case len(q.Networks) > events.MaxRestrictNetworks:
		return bad("%d networks, at most %d", len(q.Networks), events.MaxRestrictNetworks)
	case q.Step == events.StepStepUp && len(q.Networks) > 0:
		return bad("networks apply to step narrow only")
	}
	return nil
}

// restrict carries out q on a token the caller looked up (info may be a
// stand-in built from an anomaly, for a token the index does not know).
func (r *Revoker) restrict(ctx context.Context, info TokenInfo, q RestrictRequest, now time.Time) (RestrictResult, error) {
	res := RestrictResult{Step: q.Step}
	dead := info.Revoked
	if !dead {
		// Unreadable while JetStream is away: restrict anyway (a revoked
		// token stays denied as revoked at every enforcer).
		d, err := r.denied(ctx, info)
		dead = err == nil && d
	}
	if dead {
		res.Already = "revoked"
		return res, nil
	}
	res.Until = now.Add(q.For)
	if info.Expiry.Before(res.Until) {
		res.Until = info.Expiry
	}
	if !res.Until.After(now) {
		return res, fmt.Errorf("%w: token %s has expired", ErrBadRequest, info.ID)
	}
	if q.Step == events.StepNarrow {
		nets, err := restrictNetworks(q.Networks, info.Networks)
		if err != nil {
			return res, err
		}
		if len(nets) == 0 {
			if !q.Escalate {
				return res, fmt.Errorf("%w: %w: token %s is bound to no networks; give the networks its holder uses", ErrBadRequest, ErrNoNetworks, info.ID)
			}
			res.Step = events.StepStepUp
			res.Escalated = "no known networks to quarantine it to: stepped up instead"
		} else {
			res.Networks, res.Scopes = nets, info.ReadScopes
		}
	}
	key := events.DenyKeyNarrow(info.ID)
	if res.Step == events.StepStepUp {
		key = events.DenyKeyStepUp(info.ID)
	}
	// A restriction already in force at least as long stays as it is:
	// repeated anomalies do not rewrite it or fill the ledger.
	if e, err := r.deny.Get(ctx, key); err == nil {
		var old events.DenyRecord
		if json.Unmarshal(e.Value(), &old) == nil && !old.Until.Before(res.Until) &&
			(res.Step != events.StepNarrow || slices.Equal(old.Networks, res.Networks)) {
			res.Until, res.Scopes, res.Networks, res.Already = old.Until, old.Scopes, old.Networks, "restricted"
			return res, nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		// JetStream away: containment does not wait for it (the
		// broadcast below); the bucket write then reports the outage.
		r.o.Log.Warn().Err(err).Str("key", key).Msg("denylist unreadable; restricting anyway")
	}
	rec := events.DenyRecord{Kind: res.Step, Step: res.Step, TokenID: info.ID, Tenant: info.Tenant, Holder: info.Holder,
		KeyID: info.KeyID, Reason: q.Reason, Actor: q.Actor, RevokedAt: now.UTC(), Expiry: res.Until.UTC(), Until: res.Until.UTC(),
		Scopes: res.Scopes, Networks: res.Networks}
	b, err := json.Marshal(rec)
	if err != nil {
		return res, fmt.Errorf("encode deny record %s: %w", key, err)
	}
	// Containment first: enforcers hear of it before JetStream is asked.
	seq := r.bc.announce(key, b, 0)
	m := nats.NewMsg("$KV." + events.BucketDenylist + "." + key)
	m.Data = b
	ack, err := r.o.JS.PublishMsg(ctx, m, jetstream.WithMsgTTL(ttlUntil(res.Until, now)))
	if err != nil {
		r.bc.resolved(seq, 0)
		return res, fmt.Errorf("denylist put %s: %w", key, err)
	}
	r.bc.written(seq, key, b, ack.Sequence)
	ev, err := events.New(r.o.Source, now, &events.TokenRestricted{TokenID: info.ID, Tenant: info.Tenant, Holder: info.Holder,
		KeyID: info.KeyID, Step: res.Step, Until: res.Until.UTC(), Scopes: res.Scopes, Networks: res.Networks, Actor: q.Actor,
		Reason: q.Reason, Rule: q.Rule, AnomalyID: q.AnomalyID, Risk: q.Risk, Expiry: info.Expiry.UTC()})
	if err != nil {
		return res, err
	}
	if err := r.publishEvent(ctx, ev); err != nil {
		return res, err
	}
	r.stats.restricted.Add(1)
	r.o.Log.Info().Str("token_id", info.ID).Str("tenant", info.Tenant).Str("holder", info.Holder).Str("step", res.Step).
		Time("until", res.Until).Strs("networks", res.Networks).Str("actor", q.Actor).Str("rule", q.Rule).
		Str("anomaly_id", q.AnomalyID).Str("escalated", res.Escalated).Msg("token restricted")
	return res, nil
}

// Shadow records on the ledger what a rule on trial would have done to a
// token (step narrow, step_up or revoke); nothing else changes.
func (r *Revoker) Shadow(ctx context.Context, info TokenInfo, would, actor, reason, rule, anomalyID string, risk float64) error {
	now := r.now()
	ev, err := events.New(r.o.Source, now, &events.TokenRestricted{TokenID: info.ID, Tenant: info.Tenant, Holder: info.Holder,
		KeyID: info.KeyID, Step: events.StepShadow, Would: would, Actor: actor, Reason: reason, Rule: rule, AnomalyID: anomalyID,
		Risk: risk, Expiry: info.Expiry.UTC()})
	if err != nil {
		return err
	}
	return r.publishEvent(ctx, ev)
}

// Release lifts a token's restrictions (narrow and step_up) before they
// end: it deletes their denylist entries and records a TokenReleased for
// each. It returns the steps lifted (none: nothing was in force).
func (r *Revoker) Release(ctx context.Context, tokenID, actor, reason string) ([]string, error) {
	switch {
	case events.ValidateName(tokenID) != nil:
		return nil, fmt.Errorf("%w: token_id: %v", ErrBadRequest, events.ValidateName(tokenID))
	case reason == "":
		return nil, fmt.Errorf("%w: reason is required", ErrBadRequest)
	case len(reason) > maxRestrictReason:
		return nil, fmt.Errorf("%w: reason is longer than %d characters", ErrBadRequest, maxRestrictReason)
	case actor == "":
		return nil, fmt.Errorf("%w: actor is required", ErrBadRequest)
	}
	var lifted []string
	for _, step := range []string{events.StepNarrow, events.StepStepUp} {
		key := events.DenyKeyNarrow(tokenID)
		if step == events.StepStepUp {
			key = events.DenyKeyStepUp(tokenID)
		}
		e, err := r.deny.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return lifted, fmt.Errorf("denylist get %s: %w", key, err)
		}
		var rec events.DenyRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Tenant == "" || rec.Holder == "" {
			// Unreadable: the token's tenant and holder come from the
			// index, the entry goes anyway.
			info, ok := r.index.get(tokenID, r.now())
			if !ok {
				return lifted, fmt.Errorf("%w: %s: the restriction's record is unreadable and the token is unknown", ErrUnknownToken, tokenID)
			}
			rec.Tenant, rec.Holder = info.Tenant, info.Holder
		}
		if err := r.deny.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
			return lifted, fmt.Errorf("denylist delete %s: %w", key, err)
		}
		ev, err := events.New(r.o.Source, r.now(), &events.TokenReleased{TokenID: tokenID, Tenant: rec.Tenant, Holder: rec.Holder,
			Step: step, Actor: actor, Reason: reason})
		if err != nil {
			return lifted, err
		}
		if err := r.publishEvent(ctx, ev); err != nil {
			return lifted, err
		}
		lifted = append(lifted, step)
		r.stats.released.Add(1)
		r.o.Log.Info().Str("token_id", tokenID).Str("tenant", rec.Tenant).Str("holder", rec.Holder).Str("step", step).
			Str("actor", actor).Msg("token restriction released")
	}
	return lifted, nil
}

// publishEvent appends one event to the ledger (de-duplicated by its id).
func (r *Revoker) publishEvent(ctx context.Context, ev events.Envelope) error {
	b, err := events.Encode(ev)
	if err != nil {
		return err
	}
	m := nats.NewMsg(events.Subject(ev))
	m.Data = b
	if _, err := r.o.JS.PublishMsg(ctx, m, jetstream.WithMsgID(ev.MsgID())); err != nil {
		return fmt.Errorf("publish %s of %s: %w", ev.Type, ev.ID, err)
	}
	return nil
}

// restrictNetworks normalises the networks of a quarantine: the given
// ones (prefixes or single addresses) or else the token's own.
func restrictNetworks(given, own []string) ([]string, error) {
	src := given
	if len(src) == 0 {
		src = own
	}
	out := make([]string, 0, len(src))
	for _, s := range src {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%w: network %q is neither a CIDR prefix nor an address", ErrBadRequest, s)
			}
			a = a.Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = p.Masked()
		if !slices.Contains(out, p.String()) {
			out = append(out, p.String())
		}
	}
	if len(out) > events.MaxRestrictNetworks {
		return nil, fmt.Errorf("%w: %d networks, at most %d", ErrBadRequest, len(out), events.MaxRestrictNetworks)
	}
	return out, nil
}

// knownNetworks reads the holder's known networks from an anomaly's
// evidence (pkg/detect puts them there as comma-separated prefixes).
func knownNetworks(a *events.AnomalyDetected) []string {
	v := a.Evidence.Details[events.DetailKnownNetworks]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// orNone joins a list for a sentence ("none" when empty).
func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
