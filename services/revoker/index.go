package revoker

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// TokenInfo is what the revoker knows about an issued token, from the
// ledger (never the token string).
type TokenInfo struct {
	ID       string
	Tenant   string
	Holder   string
	KeyID    string
	IssuedAt time.Time
	Expiry   time.Time
	// BreakGlass marks an emergency token: never revoked automatically.
	BreakGlass bool
	// Canary marks a canary token (denied from the start; canary.go).
	Canary bool
	// Revoked is set once a TokenRevoked for it was seen or published.
	Revoked bool
	// ReadScopes are its read scopes (events.IsReadScope), Networks its
	// own networks, Bound whether it is bound to a client certificate:
	// what a graduated response can narrow it to (restrict.go).
	ReadScopes []string
	Networks   []string
	Bound      bool
}

// index holds the live (unexpired) issued tokens, bounded in number; the
// soonest to expire is evicted first when full. It is safe for concurrent
// use.
type index struct {
	mu   sync.RWMutex
	byID map[string]*entry
	exp  expiryHeap
	max  int

	evicted atomic.Uint64
}

type entry struct {
	TokenInfo
	pos int // position in the expiry heap
}

func newIndex(max int) *index {
	return &index{byID: map[string]*entry{}, max: max}
}

// issued records a TokenIssued event; expired tokens are ignored.
func (x *index) issued(p *events.TokenIssued, at, now time.Time) {
	if !p.Claims.Expiry.After(now) {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pruneLocked(now)
	if e, ok := x.byID[p.TokenID]; ok {
		// A replay of the same issuance: keep the revoked flag.
		e.Tenant, e.Holder, e.KeyID, e.IssuedAt, e.BreakGlass, e.Canary = p.Tenant, p.Holder, p.KeyID, at, p.BreakGlass, p.Canary
		e.ReadScopes, e.Networks, e.Bound = readScopes(p.Claims.Scopes), p.Claims.Networks, p.Claims.Device != ""
		if !e.Expiry.Equal(p.Claims.Expiry) {
			e.Expiry = p.Claims.Expiry
			heap.Fix(&x.exp, e.pos)
		}
		return
	}
	for len(x.byID) >= x.max && x.exp.Len() > 0 {
		old := heap.Pop(&x.exp).(*entry)
		delete(x.byID, old.ID)
		x.evicted.Add(1)
	}
	e := &entry{TokenInfo: TokenInfo{ID: p.TokenID, Tenant: p.Tenant, Holder: p.Holder, KeyID: p.KeyID,
		IssuedAt: at, Expiry: p.Claims.Expiry, BreakGlass: p.BreakGlass, Canary: p.Canary,
		ReadScopes: readScopes(p.Claims.Scopes), Networks: p.Claims.Networks, Bound: p.Claims.Device != ""}}
	x.byID[p.TokenID] = e
	heap.Push(&x.exp, e)
}

// markRevoked flags a known token as revoked.
func (x *index) markRevoked(id string) {
	x.mu.Lock()
	if e, ok := x.byID[id]; ok {
		e.Revoked = true
	}
	x.mu.Unlock()
}

// remove forgets a token (it expired).
func (x *index) remove(id string) {
	x.mu.Lock()
	if e, ok := x.byID[id]; ok {
		heap.Remove(&x.exp, e.pos)
		delete(x.byID, id)
	}
	x.mu.Unlock()
}

// get returns what is known about a live token.
func (x *index) get(id string, now time.Time) (TokenInfo, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.byID[id]
	if !ok || !e.Expiry.After(now) {
		return TokenInfo{}, false
	}
	return e.TokenInfo, true
}

// match returns the live tokens for which keep is true.
func (x *index) match(now time.Time, keep func(*TokenInfo) bool) []TokenInfo {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []TokenInfo
	for _, e := range x.byID {
		if e.Expiry.After(now) && keep(&e.TokenInfo) {
			out = append(out, e.TokenInfo)
		}
	}
	return out
}

// prune drops expired tokens.
func (x *index) prune(now time.Time) {
	x.mu.Lock()
	x.pruneLocked(now)
	x.mu.Unlock()
}

func (x *index) pruneLocked(now time.Time) {
	for x.exp.Len() > 0 && !x.exp[0].Expiry.After(now) {
		e := heap.Pop(&x.exp).(*entry)
		delete(x.byID, e.ID)
	}
}

func (x *index) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byID)
}

// expiryHeap orders entries by expiry, soonest first.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].Expiry.Before(h[j].Expiry) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *expiryHeap) Push(v any) {
	e := v.(*entry)
	e.pos = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.pos = -1
	return e
}

// readScopes returns the read scopes of scopes (nil when none).
func readScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if events.IsReadScope(s) {
			out = append(out, s)
		}
	}
	return out
}
