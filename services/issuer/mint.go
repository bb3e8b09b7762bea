package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
)

// maxClockSkew is how far in the past a requested not-before may be.
const maxClockSkew = 5 * time.Minute

// Issue mints a token within the holder's ceiling. actor is recorded on the
// ledger as who asked. Omitted dimensions are narrowed to the ceiling; the
// TTL defaults to the ceiling's max_ttl, so no token is minted without
// expiry. In-process callers are trusted: the HTTP and NATS APIs
// authenticate before calling it.
func (i *Issuer) Issue(ctx context.Context, actor string, in IssueRequest) (*IssueResponse, error) {
	return i.issueFrom(ctx, actor, nil, in)
}

// issueFrom is Issue recording where the request came from (nil: unknown)
// in the token.issued event.
func (i *Issuer) issueFrom(ctx context.Context, actor string, from *events.IssuanceContext, in IssueRequest) (*IssueResponse, error) {
	res, err := i.issue(ctx, actor, from, in)
	if err != nil {
		i.stats.refuse(err)
		return nil, err
	}
	i.stats.issued.Add(1)
	if in.Canary {
		// Outside opMu: other issuances do not wait for the revoker.
		res.Warning = i.awaitDenied(ctx, res.ID)
	}
	return res, nil
}

func (i *Issuer) issue(ctx context.Context, actor string, from *events.IssuanceContext, in IssueRequest) (*IssueResponse, error) {
	if !i.ready.Load() {
		return nil, ErrNotReady
	}
	req, err := toRequest(in)
	if err != nil {
		return nil, err
	}
	c, err := i.policy.Lookup(req.Tenant, req.Holder)
	if err != nil {
		return nil, err
	}
	req = policy.Narrow(c, req)
	if err := policy.Check(c, req); err != nil {
		return nil, err
	}
	now := i.now()
	nbf := now
	if in.NotBefore != nil {
		nbf = *in.NotBefore
		if nbf.Before(now.Add(-maxClockSkew)) {
			return nil, fmt.Errorf("%w: not_before: %s is in the past", ErrBadRequest, nbf.UTC().Format(time.RFC3339))
		}
		if nbf.After(now.Add(c.MaxTTL)) {
			return nil, fmt.Errorf("%w: not_before %s is more than max_ttl %s ahead", policy.ErrExceedsCeiling,
				nbf.UTC().Format(time.RFC3339), policy.FormatDuration(c.MaxTTL))
		}
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if in.Canary && in.BreakGlass {
		return nil, fmt.Errorf("%w: a canary cannot be a break-glass token", ErrBadRequest)
	}
	return i.mint(ctx, actor, req, nbf, "", from, in.Canary)
}

// canaryWait bounds how long minting a canary waits for the revoker to
// put it on the denylist.
const canaryWait = 10 * time.Second

// awaitDenied waits until the denylist bucket holds token id's entry, so
// that a canary is denied everywhere before it is handed out; it returns
// a warning when that did not happen within canaryWait.
func (i *Issuer) awaitDenied(ctx context.Context, id string) string {
	ctx, cancel := context.WithTimeout(ctx, canaryWait)
	defer cancel()
	kv, err := i.js.KeyValue(ctx, events.BucketDenylist)
	for err == nil {
		if _, err = kv.Get(ctx, events.DenyKeyToken(id)); err == nil {
			return ""
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		err = nil
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	i.log.Warn().Err(err).Str("token_id", id).Msg("canary minted, not on the denylist yet")
	return fmt.Sprintf("the canary is not on the denylist after %v (is a revoker running?): enforcers accept it until it is", canaryWait)
}

// mint signs a token for a checked request and records it on the ledger,
// with from, where it was requested from, when known. Callers hold opMu
// (or run before serving).
func (i *Issuer) mint(ctx context.Context, actor string, req policy.Request, nbf time.Time, rotatedFrom string, from *events.IssuanceContext, canary bool) (*IssueResponse, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("token id: %w", err)
	}
	signer, err := i.keys.signer()
	if err != nil {
		return nil, err
	}
	claims := claimsFor(id.String(), req, i.now(), nbf)
	tok, err := signer.Mint(claims)
	if err != nil {
		return nil, fmt.Errorf("mint: %w", err)
	}
	evt := &events.TokenIssued{
		TokenID: claims.ID, Tenant: claims.Tenant, Holder: claims.Holder, KeyID: signer.KeyID,
		Claims: adminauth.LedgerClaims(claims), Actor: actor, RotatedFrom: rotatedFrom, BreakGlass: claims.BreakGlass,
		Requested: from, Canary: canary,
	}
	if _, err := i.publish(ctx, evt); err != nil {
		return nil, err
	}
	info, _ := i.reg.get(claims.ID, i.now())
	l := i.log.Info().Str("token_id", claims.ID).Str("tenant", claims.Tenant).Str("holder", claims.Holder).
		Str("kid", signer.KeyID).Strs("scopes", claims.Scopes).Time("expires", time.Unix(claims.Expiry, 0)).
		Str("actor", actor).Str("rotated_from", rotatedFrom).Bool("canary", canary)
	if from != nil {
		l = l.Str("requested_ip", from.SourceIP).Str("requested_client", from.Client)
	}
	l.Msg("token issued")
	return &IssueResponse{Token: tok, TokenInfo: info}, nil
}

// claimsFor builds the claims of a checked request.
func claimsFor(id string, req policy.Request, now, nbf time.Time) token.Claims {
	return token.Claims{
		ID: id, Tenant: req.Tenant, Holder: req.Holder,
		Scopes: req.Scopes, Audience: req.Audience, Networks: req.Networks,
		Environment: req.Environment, Windows: req.Windows, Device: req.Device,
		IssuedAt: now.Unix(), NotBefore: nbf.Unix(), Expiry: nbf.Unix() + int64(req.TTL/time.Second),
		BreakGlass: req.BreakGlass,
	}
}

// Rotate mints a successor of token id with the same context (a fresh id and
// expiry), records the rotation, and revokes the predecessor when the grace
// period ends (at once for a zero grace). The successor must still fit the
// holder's current ceiling.
func (i *Issuer) Rotate(ctx context.Context, actor, id string, in RotateRequest) (*RotateResponse, error) {
	return i.rotateFrom(ctx, actor, nil, id, in)
}

// rotateFrom is Rotate recording where the request came from (nil:
// unknown) in the successor's token.issued event.
func (i *Issuer) rotateFrom(ctx context.Context, actor string, from *events.IssuanceContext, id string, in RotateRequest) (*RotateResponse, error) {
	res, err := i.rotate(ctx, actor, from, id, in)
	if err != nil {
		i.stats.refuse(err)
		return nil, err
	}
	i.stats.rotated.Add(1)
	return res, nil
}

func (i *Issuer) rotate(ctx context.Context, actor string, from *events.IssuanceContext, id string, in RotateRequest) (*RotateResponse, error) {
	if !i.ready.Load() {
		return nil, ErrNotReady
	}
	grace := i.opts.Grace
	if in.Grace != "" {
		g, err := policy.ParseDuration(in.Grace)
		if err != nil {
			return nil, fmt.Errorf("%w: grace: %v", ErrBadRequest, err)
		}
		grace = g
	}
	var ttl time.Duration
	if in.TTL != "" {
		t, err := policy.ParseDuration(in.TTL)
		if err != nil {
			return nil, fmt.Errorf("%w: ttl: %v", ErrBadRequest, err)
		}
		ttl = t
	}

	i.opMu.Lock()
	defer i.opMu.Unlock()
	now := i.now()
	pred, ok := i.reg.get(id, now)
	if !ok {
		return nil, fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	switch pred.Status {
	case StatusRevoked, StatusExpired:
		return nil, fmt.Errorf("%w: token %s is %s", ErrConflict, id, pred.Status)
	case StatusRotated:
		return nil, fmt.Errorf("%w: token %s was already rotated to %s", ErrConflict, id, pred.SuccessorID)
	}
	if pred.Canary {
		return nil, fmt.Errorf("%w: token %s is a canary; mint another canary instead of rotating it", ErrConflict, id)
	}
	c, err := i.policy.Lookup(pred.Tenant, pred.Holder)
	if err != nil {
		return nil, err
	}
	req, err := requestFromClaims(pred)
	if err != nil {
		return nil, err
	}
	if ttl != 0 {
		req.TTL = ttl
	}
	if err := policy.Check(c, req); err != nil {
		return nil, fmt.Errorf("rotate %s: %w", id, err)
	}
	succ, err := i.mint(ctx, actor, req, now, id, from, false)
	if err != nil {
		return nil, err
	}
	graceUntil := now.Add(grace).UTC()
	if graceUntil.After(pred.Claims.Expiry) {
		graceUntil = pred.Claims.Expiry
	}
	if _, err := i.publish(ctx, &events.TokenRotated{
		TokenID: id, SuccessorID: succ.ID, Tenant: pred.Tenant, Holder: pred.Holder, GraceUntil: graceUntil, Actor: actor,
	}); err != nil {
		return nil, err
	}
	i.log.Info().Str("token_id", id).Str("successor_id", succ.ID).Time("grace_until", graceUntil).Str("actor", actor).Msg("token rotated")
	if !graceUntil.After(now) {
		if _, err := i.publish(ctx, &events.TokenRevoked{
			TokenID: id, Tenant: pred.Tenant, Holder: pred.Holder, KeyID: pred.KeyID,
			Kind: events.RevokeToken, Actor: actor, Reason: "rotated", Expiry: pred.Claims.Expiry,
		}); err != nil {
			return nil, err
		}
	}
	predInfo, _ := i.reg.get(id, i.now())
	succInfo, _ := i.reg.get(succ.ID, i.now())
	return &RotateResponse{Token: succ.Token, Successor: succInfo, Predecessor: predInfo}, nil
}

// List returns the registry's tokens matching f, oldest first.
func (i *Issuer) List(f ListFilter) ([]TokenInfo, error) {
	if err := validStatus(f.Status); err != nil {
		return nil, err
	}
	return i.reg.list(f, i.now()), nil
}

// Inspect returns a token's claims, status and ledger history.
func (i *Issuer) Inspect(id string) (*TokenDetail, error) {
	d, ok := i.reg.detail(id, i.now())
	if !ok {
		return nil, fmt.Errorf("%w: token %s", ErrNotFound, id)
	}
	return d, nil
}

// Keys lists every signing key: the issuer's own, oldest first, then any
// other entry of the keys bucket. Each says whether verifiers configured
// with the issuer's trust anchor accept it (Accepted), so every key an
// enforcer accepts is in the list, and whatever else was written to the
// bucket shows up with the reason it is ignored.
func (i *Issuer) Keys(ctx context.Context) ([]KeyInfo, error) {
	live := i.reg.liveByKey(i.now())
	active := i.keys.activeID()
	bucket, err := i.bucketKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for _, kid := range i.keys.ids() {
		lk, ok := i.keys.get(kid)
		if !ok {
			continue
		}
		k := KeyInfo{KeyID: kid, PublicKey: lk.signer.Public(), Created: lk.created, Active: kid == active, LiveTokens: live[kid], Held: true}
		if b, ok := bucket[kid]; ok {
			k.Published, k.Accepted, k.Problem = true, b.Accepted, b.Problem
			if k.Accepted && !bytes.Equal(b.PublicKey, k.PublicKey) {
				k.Accepted, k.Problem = false, "the keys bucket holds another public key under this id"
			}
			delete(bucket, kid)
		} else {
			k.Problem = "not in the keys bucket: verifiers do not know it"
		}
		out = append(out, k)
	}
	var others []KeyInfo
	for _, b := range bucket {
		if b.Accepted {
			b.Problem = "endorsed by the trust anchor but not held by this issuer"
		}
		b.LiveTokens = live[b.KeyID]
		others = append(others, b)
	}
	slices.SortFunc(others, func(a, b KeyInfo) int { return strings.Compare(a.KeyID, b.KeyID) })
	return append(out, others...), nil
}

// bucketKeys reads every entry of the keys bucket and checks its
// endorsement against the issuer's trust anchor.
func (i *Issuer) bucketKeys(ctx context.Context) (map[string]KeyInfo, error) {
	lister, err := i.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the %s bucket: %w", events.BucketKeys, err)
	}
	defer lister.Stop()
	anchors := token.Anchors{i.keys.anchor.Public()}
	out := map[string]KeyInfo{}
	for kid := range lister.Keys() {
		e, err := i.kv.Get(ctx, kid)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", kid, err)
		}
		k := KeyInfo{KeyID: kid, Published: true}
		var rec events.KeyRecord
		if json.Unmarshal(e.Value(), &rec) == nil {
			k.PublicKey, k.Created = rec.PublicKey, rec.Created
		}
		if _, err := anchors.VerifyKeyRecord(kid, e.Value()); err != nil {
			k.Problem = "ignored by verifiers: " + err.Error()
		} else {
			k.Accepted = true
		}
		out[kid] = k
	}
	return out, nil
}

// RotateKey generates a new signing key, publishes its public half (keys
// bucket and ledger) and then makes it the active key. Older keys keep
// verifying until retired.
func (i *Issuer) RotateKey(ctx context.Context, actor string) (*KeyInfo, error) {
	if !i.ready.Load() {
		return nil, ErrNotReady
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	prev := i.keys.activeID()
	lk, err := i.keys.generate(i.now())
	if err != nil {
		return nil, err
	}
	// Enforcers learn the key before any token signed by it exists.
	if err := i.publishKey(ctx, lk, actor); err != nil {
		return nil, err
	}
	if err := i.keys.setActive(lk.signer.KeyID); err != nil {
		return nil, err
	}
	i.log.Info().Str("kid", lk.signer.KeyID).Str("previous", prev).Str("actor", actor).Msg("signing key rotated")
	return &KeyInfo{KeyID: lk.signer.KeyID, PublicKey: lk.signer.Public(), Created: lk.created, Active: true}, nil
}

// RetireKey retires a signing key that is not the active one: KeyRetired
// on the ledger, its keys bucket entry deleted (enforcers then reject its
// tokens as signed by an unknown key) and its private key deleted. If the
// bootstrap admin token was signed by it, a new one is written. A key id
// the issuer does not hold but the keys bucket does (something else wrote
// it) is removed from the bucket the same way.
func (i *Issuer) RetireKey(ctx context.Context, actor, kid, reason string) (*RetireResponse, error) {
	if !i.ready.Load() {
		return nil, ErrNotReady
	}
	if reason == "" {
		reason = "retired"
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if _, ok := i.keys.get(kid); !ok {
		// Not one of ours: an entry someone else wrote to the bucket
		// (Keys lists it). Remove it so that nothing can ever accept it.
		if _, err := i.kv.Get(ctx, kid); errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: signing key %q", ErrNotFound, kid)
		} else if err != nil {
			return nil, fmt.Errorf("read key %s: %w", kid, err)
		}
		if _, err := i.publish(ctx, &events.KeyRetired{KeyID: kid, Actor: actor, Reason: reason}); err != nil {
			return nil, err
		}
		if err := i.kv.Delete(ctx, kid); err != nil {
			return nil, fmt.Errorf("delete key %s from the %s bucket: %w", kid, events.BucketKeys, err)
		}
		i.log.Warn().Str("kid", kid).Str("actor", actor).Str("reason", reason).Msg("foreign key removed from the keys bucket")
		return &RetireResponse{KeyID: kid, Retired: true}, nil
	}
	if kid == i.keys.activeID() {
		return nil, fmt.Errorf("%w: key %s is the active signing key; rotate first", ErrConflict, kid)
	}
	if _, err := i.publish(ctx, &events.KeyRetired{KeyID: kid, Actor: actor, Reason: reason}); err != nil {
		return nil, err
	}
	if err := i.kv.Delete(ctx, kid); err != nil {
		return nil, fmt.Errorf("delete key %s from the %s bucket: %w", kid, events.BucketKeys, err)
	}
	if err := i.keys.remove(kid); err != nil {
		return nil, err
	}
	i.log.Info().Str("kid", kid).Str("actor", actor).Str("reason", reason).Msg("signing key retired")
	renewed, err := i.ensureAdminToken(ctx)
	if err != nil {
		return nil, err
	}
	return &RetireResponse{KeyID: kid, Retired: true, AdminTokenRenewed: renewed}, nil
}

// toRequest converts a wire request into a policy request, naming the field
// of any malformed value.
func toRequest(in IssueRequest) (policy.Request, error) {
	r := policy.Request{
		Tenant: in.Tenant, Holder: in.Holder, Scopes: in.Scopes, Audience: in.Audience,
		Environment: in.Environment, Device: strings.ToLower(in.Device), BreakGlass: in.BreakGlass,
	}
	if in.Tenant == "" {
		return r, fmt.Errorf("%w: tenant is required", ErrBadRequest)
	}
	if in.Holder == "" {
		return r, fmt.Errorf("%w: holder is required", ErrBadRequest)
	}
	for n, s := range in.Networks {
		p, err := policy.ParseNetwork(s)
		if err != nil {
			return r, fmt.Errorf("%w: networks[%d]: %v", ErrBadRequest, n, err)
		}
		r.Networks = append(r.Networks, p)
	}
	for _, w := range in.Windows {
		r.Windows = append(r.Windows, token.Window(w))
	}
	if in.TTL != "" {
		d, err := policy.ParseDuration(in.TTL)
		if err != nil {
			return r, fmt.Errorf("%w: ttl: %v", ErrBadRequest, err)
		}
		if d == 0 {
			return r, fmt.Errorf("%w: ttl: a token must expire; omit ttl for the ceiling's max_ttl", ErrBadRequest)
		}
		r.TTL = d
	}
	return r, nil
}

// requestFromClaims rebuilds the request a token was minted from, with its
// lifetime as TTL.
func requestFromClaims(t TokenInfo) (policy.Request, error) {
	c := t.Claims
	r := policy.Request{
		Tenant: t.Tenant, Holder: t.Holder, Scopes: slices.Clone(c.Scopes), Audience: slices.Clone(c.Audience),
		Environment: c.Environment, Device: c.Device, BreakGlass: t.BreakGlass,
		TTL: c.Expiry.Sub(c.NotBefore),
	}
	for _, n := range c.Networks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return r, fmt.Errorf("token %s: network %q: %w", t.ID, n, err)
		}
		r.Networks = append(r.Networks, p)
	}
	for _, w := range c.Windows {
		r.Windows = append(r.Windows, token.Window{Days: slices.Clone(w.Days), Start: w.Start, End: w.End, Zone: w.Zone})
	}
	return r, nil
}
