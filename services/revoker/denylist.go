package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/events"
)

// ttlUntil is the KV TTL that keeps an entry until exp: rounded up to whole
// seconds (the server's unit) and at least one second; 0 when exp passed.
func ttlUntil(exp, now time.Time) time.Duration {
	d := exp.Sub(now)
	if d <= 0 {
		return 0
	}
	return (d + time.Second - 1) / time.Second * time.Second
}

// writeToken creates the denylist entry of one revoked token with a TTL of
// its remaining life, and broadcasts the write. It reports whether the
// entry was created: an existing entry means the token is already revoked
// (a no-op), and an expired token needs no entry. pendingSeq (0: none) is
// the pending broadcast of this entry, which the write (or the entry
// found) settles.
func (r *Revoker) writeToken(ctx context.Context, rec events.DenyRecord, pendingSeq uint64) (bool, error) {
	key := events.DenyKeyToken(rec.TokenID)
	ttl := ttlUntil(rec.Expiry, r.now())
	if ttl == 0 {
		r.bc.resolved(pendingSeq, 0)
		return false, nil
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("encode deny record %s: %w", rec.TokenID, err)
	}
	rev, err := r.deny.Create(ctx, key, b, jetstream.KeyTTL(ttl))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			if pendingSeq != 0 {
				// Heartbeats announce the revision that covers it.
				e, gerr := r.deny.Get(ctx, key)
				if gerr != nil && !errors.Is(gerr, jetstream.ErrKeyNotFound) {
					return false, fmt.Errorf("denylist get %s: %w", key, gerr)
				}
				var rev uint64
				if gerr == nil {
					rev = e.Revision()
				}
				r.bc.resolved(pendingSeq, rev)
			}
			return false, nil
		}
		return false, fmt.Errorf("denylist create %s: %w", key, err)
	}
	r.bc.written(pendingSeq, key, b, rev)
	return true, nil
}

// maxRuleAttempts bounds the compare-and-set attempts of writeRule.
const maxRuleAttempts = 32

// writeRule writes a rule entry (holder, kid, tenant, before). A new rule
// is created with a TTL until rec.Expiry. An existing rule is left alone
// when it already covers rec (expires no earlier and, for "before", has a
// time no earlier); otherwise it is replaced — with a compare-and-set on
// its revision — by the union of both, with a TTL until the later expiry.
// It reports whether the bucket changed, and broadcasts the change.
// pendingSeq (0: none) is the pending broadcast of this rule, which the
// write (or the rule found in force) settles.
func (r *Revoker) writeRule(ctx context.Context, key string, rec events.DenyRecord, pendingSeq uint64) (bool, error) {
	for attempt := range maxRuleAttempts {
		// Another replica wrote in between: back off a random moment so
		// that two writers of one rule do not keep colliding.
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 5)))):
			case <-ctx.Done():
				return false, fmt.Errorf("denylist %s: %w", key, ctx.Err())
			}
		}
		now := r.now()
		e, err := r.deny.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			ttl := ttlUntil(rec.Expiry, now)
			if ttl == 0 {
				r.bc.resolved(pendingSeq, 0)
				return false, nil
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return false, fmt.Errorf("encode deny rule %s: %w", key, err)
			}
			rev, err := r.deny.Create(ctx, key, b, jetstream.KeyTTL(ttl))
			if err != nil {
				if errors.Is(err, jetstream.ErrKeyExists) {
					continue // raced with another writer: look again
				}
				return false, fmt.Errorf("denylist create %s: %w", key, err)
			}
			r.bc.written(pendingSeq, key, b, rev)
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("denylist get %s: %w", key, err)
		}
		var old events.DenyRecord
		if json.Unmarshal(e.Value(), &old) == nil &&
			!old.Expiry.Before(rec.Expiry) && !old.Before.Before(rec.Before) {
			r.bc.resolved(pendingSeq, e.Revision())
			return false, nil // the rule in force already covers this one
		}
		merged := rec
		if old.Expiry.After(merged.Expiry) {
			merged.Expiry = old.Expiry
		}
		if old.Before.After(merged.Before) {
			merged.Before = old.Before
		}
		ttl := ttlUntil(merged.Expiry, now)
		if ttl == 0 {
			r.bc.resolved(pendingSeq, 0)
			return false, nil
		}
		b, err := json.Marshal(merged)
		if err != nil {
			return false, fmt.Errorf("encode deny rule %s: %w", key, err)
		}
		// kv.Update cannot set a TTL: publish the new revision ourselves,
		// with the same compare-and-set kv.Update would use.
		m := nats.NewMsg("$KV." + events.BucketDenylist + "." + key)
		m.Data = b
		ack, err := r.o.JS.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(e.Revision()), jetstream.WithMsgTTL(ttl))
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				continue
			}
			return false, fmt.Errorf("denylist update %s: %w", key, err)
		}
		r.bc.written(pendingSeq, key, b, ack.Sequence)
		return true, nil
	}
	return false, fmt.Errorf("denylist %s: %d concurrent writes won over this one", key, maxRuleAttempts)
}

// denied reports whether the denylist holds an entry revoking the token
// (its own entry or a rule matching it), reading the bucket directly.
func (r *Revoker) denied(ctx context.Context, t TokenInfo) (bool, error) {
	keys := []string{events.DenyKeyToken(t.ID)}
	if t.Tenant != "" {
		keys = append(keys, events.DenyKeyTenant(t.Tenant))
		if !t.IssuedAt.IsZero() { // an unknown issue time cannot be judged
			keys = append(keys, events.DenyKeyBefore(t.Tenant))
		}
		if t.Holder != "" {
			keys = append(keys, events.DenyKeyHolder(t.Tenant, t.Holder))
		}
	}
	if t.KeyID != "" {
		keys = append(keys, events.DenyKeyKey(t.KeyID))
	}
	for _, k := range keys {
		e, err := r.deny.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("denylist get %s: %w", k, err)
		}
		if k != events.DenyKeyBefore(t.Tenant) {
			return true, nil
		}
		var rec events.DenyRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Before.IsZero() {
			return true, nil // unreadable "before" rule: fail closed, as enforcers do
		}
		if t.IssuedAt.Unix() < rec.Before.Unix() {
			return true, nil
		}
	}
	return false, nil
}
