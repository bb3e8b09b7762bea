package issuer

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// maxHistory bounds the ledger events kept per token (the issued event is
// always kept; older later events are dropped first).
const maxHistory = 32

// registry is the projection of the TOKENS stream: every token's claims,
// status and history, the signing keys published and retired, and the
// digest of the last policy announced. It is rebuilt by replaying the
// stream and kept current by following it.
type registry struct {
	mu        sync.RWMutex
	tokens    map[string]*entry
	published map[string]bool // key ids published and not retired
	retired   map[string]bool
	policy    string // digest of the last PolicyChanged
	seq       uint64 // last stream sequence applied (the follow.Reader waits for it)
}

type entry struct {
	info         TokenInfo // Status is computed on read
	issued       time.Time
	expiry       time.Time
	expiredEvent bool
	rotatedBy    string
	history      []HistoryEntry
}

func newRegistry() *registry {
	return &registry{
		tokens:    map[string]*entry{},
		published: map[string]bool{},
		retired:   map[string]bool{},
	}
}

// advance records that seq was handled. Callers hold mu.
func (r *registry) advance(seq uint64) {
	r.seq = max(r.seq, seq)
}

// skip marks an undecodable message as handled.
func (r *registry) skip(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(seq)
}

// applied is the last ledger sequence the registry handled.
func (r *registry) applied() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.seq
}

// apply folds one ledger event into the projection.
func (r *registry) apply(seq uint64, env events.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.advance(seq)
	if seq <= r.seq {
		return // already applied (the reader delivers each sequence once; this guards the projection anyway)
	}
	data, _ := json.Marshal(env.Data)
	h := HistoryEntry{Seq: seq, ID: env.ID.String(), Type: env.Type, Time: env.Time, Source: env.Source, Data: data}

	switch p := env.Data.(type) {
	case *events.TokenIssued:
		if _, dup := r.tokens[p.TokenID]; dup {
			return
		}
		r.tokens[p.TokenID] = &entry{
			info: TokenInfo{
				ID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder, KeyID: p.KeyID,
				Claims: p.Claims, BreakGlass: p.BreakGlass, Canary: p.Canary, IssuedAt: env.Time,
				IssuedBy: p.Actor, RotatedFrom: p.RotatedFrom,
			},
			issued:  env.Time,
			expiry:  p.Claims.Expiry,
			history: []HistoryEntry{h},
		}
	case *events.TokenRotated:
		if e, ok := r.tokens[p.TokenID]; ok {
			e.info.SuccessorID = p.SuccessorID
			g := p.GraceUntil
			e.info.GraceUntil = &g
			e.rotatedBy = p.Actor
			e.record(h)
		}
	case *events.TokenRevoked:
		at := env.Time
		for _, e := range r.revokedBy(p, env.Time) {
			if e.info.RevokedAt == nil {
				e.info.RevokedAt, e.info.RevokedBy, e.info.RevokeReason = &at, p.Actor, p.Reason
			}
			e.record(h)
		}
	case *events.TokenExpired:
		if e, ok := r.tokens[p.TokenID]; ok {
			e.expiredEvent = true
			at := env.Time
			e.info.ExpiredAt = &at
			e.record(h)
		}
	case *events.KeyPublished:
		if !r.retired[p.KeyID] {
			r.published[p.KeyID] = true
		}
	case *events.KeyRetired:
		r.retired[p.KeyID] = true
		delete(r.published, p.KeyID)
	case *events.PolicyChanged:
		r.policy = p.Digest
	}
}

// revokedBy returns the entries a revocation covers: the token it names
// and, for holder, tenant, key and before revocations, every token of that
// scope issued up to the revocation. Callers hold mu.
func (r *registry) revokedBy(p *events.TokenRevoked, at time.Time) []*entry {
	var out []*entry
	if e, ok := r.tokens[p.TokenID]; ok {
		out = append(out, e)
	}
	if p.Kind == events.RevokeToken {
		return out
	}
	for id, e := range r.tokens {
		if id == p.TokenID || e.issued.After(at) {
			continue
		}
		var match bool
		switch p.Kind {
		case events.RevokeHolder:
			match = e.info.Tenant == p.Tenant && e.info.Holder == p.Holder
		case events.RevokeTenant, events.RevokeBefore:
			match = e.info.Tenant == p.Tenant
		case events.RevokeKey:
			match = p.KeyID != "" && e.info.KeyID == p.KeyID
		}
		if match {
			out = append(out, e)
		}
	}
	return out
}

func (e *entry) record(h HistoryEntry) {
	if len(e.history) >= maxHistory {
		e.history = slices.Delete(e.history, 1, 2)
	}
	e.history = append(e.history, h)
}

func (e *entry) status(now time.Time) string {
	switch {
	case e.info.RevokedAt != nil:
		return StatusRevoked
	case e.expiredEvent || !now.Before(e.expiry):
		return StatusExpired
	case e.info.SuccessorID != "":
		return StatusRotated
	}
	return StatusActive
}

func (e *entry) snapshot(now time.Time) TokenInfo {
	info := e.info
	info.Status = e.status(now)
	info.Claims.Scopes = slices.Clone(info.Claims.Scopes)
	info.Claims.Audience = slices.Clone(info.Claims.Audience)
	info.Claims.Networks = slices.Clone(info.Claims.Networks)
	info.Claims.Windows = slices.Clone(info.Claims.Windows)
	return info
}

// get returns a token's registry entry.
func (r *registry) get(id string, now time.Time) (TokenInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.tokens[id]
	if !ok {
		return TokenInfo{}, false
	}
	return e.snapshot(now), true
}

// detail returns a token's entry and history.
func (r *registry) detail(id string, now time.Time) (*TokenDetail, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.tokens[id]
	if !ok {
		return nil, false
	}
	return &TokenDetail{TokenInfo: e.snapshot(now), History: slices.Clone(e.history)}, true
}

// list returns the tokens matching f, oldest first.
func (r *registry) list(f ListFilter, now time.Time) []TokenInfo {
	r.mu.RLock()
	out := make([]TokenInfo, 0)
	for _, e := range r.tokens {
		if (f.Tenant != "" && e.info.Tenant != f.Tenant) || (f.Holder != "" && e.info.Holder != f.Holder) {
			continue
		}
		info := e.snapshot(now)
		if f.Status != "" && info.Status != f.Status {
			continue
		}
		out = append(out, info)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b TokenInfo) int {
		if c := a.IssuedAt.Compare(b.IssuedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// liveByKey counts the tokens per key that are neither revoked nor expired.
func (r *registry) liveByKey(now time.Time) map[string]int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[string]int{}
	for _, e := range r.tokens {
		if s := e.status(now); s == StatusActive || s == StatusRotated {
			out[e.info.KeyID]++
		}
	}
	return out
}

// due returns the ledger events that are owed at now: revocations of
// rotated tokens whose grace period is over, and expiries not yet recorded.
func (r *registry) due(now time.Time, source string) (revoke []*events.TokenRevoked, expire []*events.TokenExpired) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.tokens {
		if e.info.RevokedAt == nil && e.info.SuccessorID != "" && e.info.GraceUntil != nil &&
			!now.Before(*e.info.GraceUntil) && now.Before(e.expiry) {
			actor := e.rotatedBy
			if actor == "" {
				actor = source
			}
			revoke = append(revoke, &events.TokenRevoked{
				TokenID: e.info.ID, Tenant: e.info.Tenant, Holder: e.info.Holder, KeyID: e.info.KeyID,
				Kind: events.RevokeToken, Actor: actor, Reason: "rotated", Expiry: e.expiry,
			})
		}
		if !e.expiredEvent && !now.Before(e.expiry) {
			expire = append(expire, &events.TokenExpired{
				TokenID: e.info.ID, Tenant: e.info.Tenant, Holder: e.info.Holder, Expiry: e.expiry,
			})
		}
	}
	slices.SortFunc(revoke, func(a, b *events.TokenRevoked) int { return strings.Compare(a.TokenID, b.TokenID) })
	slices.SortFunc(expire, func(a, b *events.TokenExpired) int { return strings.Compare(a.TokenID, b.TokenID) })
	return revoke, expire
}

func (r *registry) keyPublished(kid string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.published[kid]
}

func (r *registry) keyRetired(kid string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.retired[kid]
}

func (r *registry) policyDigest() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.policy
}
