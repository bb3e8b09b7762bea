package revoker

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// Reply codes of cordon.cmd.revoke.
const (
	CodeBadRequest   = "bad_request"  // malformed request
	CodeUnauthorized = "unauthorized" // no, invalid, expired or revoked auth token, or one the ledger does not know as presented
	CodeForbidden    = "forbidden"    // a genuine admin token without tenant and audience "cordon" or scope "cordon:revoke", or outside its windows, or bound to networks or a device (which NATS cannot prove)
	CodeNotFound     = "not_found"    // unknown token id
	CodeConflict     = "conflict"     // idempotency key reused for a different request
	CodeInternal     = "internal"     // the revocation failed, or the ledger could not be read; retry with the same idempotency key
)

// MaxRequestSize bounds a cordon.cmd.revoke request.
const MaxRequestSize = 64 << 10

// CommandRequest is the JSON body of a cordon.cmd.revoke request.
type CommandRequest struct {
	// Auth is a Cordon admin token (tenant and audience "cordon") that the
	// ledger knows, with scope "cordon:revoke" (or "cordon:*"); see
	// pkg/adminauth. It is never logged.
	Auth string `json:"auth"`
	// IdempotencyKey, when set, makes a retry with the same auth token
	// return the first reply without acting again. Keys are scoped to the
	// auth token: another token never gets that reply.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Kind is token, holder, key, tenant or before.
	Kind    string    `json:"kind"`
	TokenID string    `json:"token_id,omitempty"`
	Tenant  string    `json:"tenant,omitempty"`
	Holder  string    `json:"holder,omitempty"`
	KeyID   string    `json:"kid,omitempty"`
	Before  time.Time `json:"before,omitzero"`
	Reason  string    `json:"reason"`
}

// Reply is the JSON reply to a cordon.cmd.revoke request. A successful
// reply has ok, revoked, rules, already, expired and ledger; a failed one
// ok, error and code.
type Reply struct {
	OK      bool     `json:"ok"`
	Revoked []string `json:"revoked"`
	Rules   []string `json:"rules"`
	Already []string `json:"already"`
	Expired []string `json:"expired"`
	// Ledger is "recorded" (LedgerRecorded: the ledger events and
	// denylist entries are accepted by JetStream) or "pending"
	// (LedgerPending: broadcast to the enforcers, which deny the tokens;
	// the ledger and denylist writes are retried until JetStream accepts
	// them). Retrying with the same idempotency_key tells which it is now.
	Ledger string `json:"ledger,omitempty"`
	Error  string `json:"error,omitempty"`
	Code   string `json:"code,omitempty"`
}

// MarshalJSON writes the lists (as [] when empty) only on success.
func (p Reply) MarshalJSON() ([]byte, error) {
	if !p.OK {
		return json.Marshal(struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
			Code  string `json:"code"`
		}{false, p.Error, p.Code})
	}
	nz := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	type plain Reply
	return json.Marshal(plain{OK: true, Revoked: nz(p.Revoked), Rules: nz(p.Rules), Already: nz(p.Already), Expired: nz(p.Expired),
		Ledger: p.Ledger})
}

func failure(code, format string, args ...any) Reply {
	return Reply{Code: code, Error: fmt.Sprintf(format, args...)}
}

// handleCommand serves one cordon.cmd.revoke request.
func (r *Revoker) handleCommand(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(r.ctx, 60*time.Second)
	defer cancel()
	rep := r.command(ctx, m.Data)
	code := rep.Code
	if rep.OK {
		code = "ok"
	}
	r.stats.request(code)
	b, err := json.Marshal(rep)
	if err != nil {
		b = []byte(`{"ok":false,"error":"encode reply","code":"internal"}`)
	}
	if m.Reply == "" {
		return
	}
	if err := m.Respond(b); err != nil {
		r.o.Log.Warn().Err(err).Msg("revoke reply not sent")
	}
}

// command authenticates, validates and carries out one request.
func (r *Revoker) command(ctx context.Context, data []byte) Reply {
	if len(data) > MaxRequestSize {
		return failure(CodeBadRequest, "request is larger than %d bytes", MaxRequestSize)
	}
	var req CommandRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return failure(CodeBadRequest, "request is not valid JSON: %v", err)
	}
	if dec.More() {
		return failure(CodeBadRequest, "request has trailing data")
	}
	caller, rep := r.authenticate(ctx, req.Auth)
	if caller == nil {
		r.o.Log.Warn().Str("code", rep.Code).Str("error", rep.Error).Str("kind", req.Kind).Msg("revoke request refused")
		return rep
	}
	actor := caller.Tenant + "/" + caller.Holder
	log := r.o.Log.With().Str("caller", actor).Str("caller_token_id", caller.TokenID).Str("kind", req.Kind).
		Str("idempotency_key", req.IdempotencyKey).Logger()
	if len(req.IdempotencyKey) > 256 {
		return failure(CodeBadRequest, "idempotency_key is longer than 256 characters")
	}

	// The key is scoped to the calling token: another token — even of the
	// same holder — replaying it gets a request of its own, never this
	// one's reply. The fingerprint covers the request without its
	// credential.
	req.Auth = ""
	canon, _ := json.Marshal(req)
	fp := sha256.Sum256(canon)
	idemKey := ""
	if req.IdempotencyKey != "" {
		idemKey = caller.TokenID + "\x00" + req.IdempotencyKey
		// Serialise requests per key so that a concurrent retry waits for
		// the first one and gets its reply.
		unlock := r.idem.lock(idemKey)
		defer unlock()
		if prev, ok := r.idem.get(idemKey, r.now()); ok {
			if prev.fp != fp {
				return failure(CodeConflict, "idempotency_key %q was used for a different request", req.IdempotencyKey)
			}
			rep := prev.reply
			if rep.Ledger == LedgerPending && prev.job != nil && prev.job.done.Load() {
				rep.Ledger = LedgerRecorded // accepted since
			}
			log.Info().Str("ledger", rep.Ledger).Msg("revoke request replayed, returning the first reply")
			return rep
		}
	}

	q := Request{Kind: req.Kind, TokenID: req.TokenID, Tenant: req.Tenant, Holder: req.Holder, KeyID: req.KeyID,
		Before: req.Before, Actor: actor, Reason: req.Reason}
	res, err := r.Revoke(ctx, q)
	switch {
	case errors.Is(err, ErrBadRequest):
		return failure(CodeBadRequest, "%v", err)
	case errors.Is(err, ErrUnknownToken):
		return failure(CodeNotFound, "%v", err)
	case err != nil:
		log.Error().Err(err).Msg("revoke request failed")
		return failure(CodeInternal, "revocation incomplete: %v (retry with the same idempotency_key)", err)
	}
	rep = Reply{OK: true, Revoked: res.Revoked, Rules: res.Rules, Already: res.Already, Expired: res.Expired, Ledger: res.Ledger}
	if idemKey != "" {
		r.idem.put(idemKey, fp, rep, res.job, r.now())
	}
	log.Info().Strs("revoked", res.Revoked).Strs("rules", res.Rules).Int("already", len(res.Already)).Str("ledger", res.Ledger).
		Msg("revoke request done")
	return rep
}

// startAdmin follows the admin tokens' ledger and builds the authenticator
// of cordon.cmd.revoke: the keys bucket's keyring verifies signatures, the
// ledger view says which admin tokens exist with which claims, and the
// denylist's token entries and rules are checked too.
func (r *Revoker) startAdmin(ctx context.Context) error {
	f, err := adminauth.Follow(ctx, adminauth.FollowOptions{JS: r.o.JS, Log: r.o.Log, Now: r.o.Now})
	if err != nil {
		return fmt.Errorf("revoker: %w", err)
	}
	r.adminLedger = f
	r.adminView = newOutageView(r)
	r.admins, err = adminauth.New(adminauth.Options{Keys: r.keyring, Ledger: ledgerView{r.adminView, f}, Denylist: denylistView{r.adminView},
		Now: r.o.Now})
	if err != nil {
		return fmt.Errorf("revoker: %w", err)
	}
	return nil
}

// AuthGrace is how long an admin token's ledger record and denylist check,
// once confirmed, still authenticate cordon.cmd.revoke requests while
// JetStream cannot answer (a leader election, a lost node): revocations —
// containment — go on through the broadcast during the outage. A token
// never confirmed, or confirmed longer ago, is refused (unavailable).
const AuthGrace = 5 * time.Minute

// maxAuthCache bounds the admin tokens remembered for AuthGrace.
const maxAuthCache = 1024

// outageView remembers, per admin token, the ledger record and the
// denylist verdict last confirmed with JetStream, to authenticate
// revocations while JetStream cannot answer. Reads of JetStream are
// bounded by Options.LedgerWait.
type outageView struct {
	r  *Revoker
	mu sync.Mutex
	m  map[string]*confirmed
}

type confirmed struct {
	rec            adminauth.Record
	recAt, cleanAt time.Time // when the record, and "not on the denylist", were last confirmed
}

func newOutageView(r *Revoker) *outageView { return &outageView{r: r, m: map[string]*confirmed{}} }

func (v *outageView) entry(id string, now time.Time) *confirmed {
	c := v.m[id]
	if c == nil {
		if len(v.m) >= maxAuthCache {
			for k, e := range v.m {
				if now.Sub(e.recAt) > AuthGrace && now.Sub(e.cleanAt) > AuthGrace {
					delete(v.m, k)
				}
			}
			if len(v.m) >= maxAuthCache {
				return nil // full of fresh entries: no fallback for this one
			}
		}
		c = &confirmed{}
		v.m[id] = c
	}
	return c
}

// ledgerView is the admin ledger as cordon.cmd.revoke reads it.
type ledgerView struct {
	v *outageView
	f adminauth.Ledger
}

// Lookup implements adminauth.Ledger.
func (l ledgerView) Lookup(ctx context.Context, id string) (adminauth.Record, bool, error) {
	v, r := l.v, l.v.r
	if r.jsDown.Load() {
		if rec, ok := v.cachedRecord(id); ok {
			return rec, true, nil
		}
	}
	lctx, cancel := context.WithTimeout(ctx, r.o.LedgerWait)
	rec, ok, err := l.f.Lookup(lctx, id)
	cancel()
	now := r.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case err == nil && ok:
		if c := v.entry(id, now); c != nil {
			c.rec, c.recAt = rec, now
		}
		return rec, true, nil
	case err == nil:
		delete(v.m, id)
		return rec, false, nil
	}
	if c := v.m[id]; c != nil && !c.recAt.IsZero() && now.Sub(c.recAt) <= AuthGrace {
		r.o.Log.Warn().Err(err).Str("caller_token_id", id).Time("confirmed", c.recAt).
			Msg("admin ledger unavailable: using the admin token's record confirmed within the grace")
		return c.rec, true, nil
	}
	return adminauth.Record{}, false, err
}

// cachedRecord is the admin token's record confirmed within AuthGrace.
func (v *outageView) cachedRecord(id string) (adminauth.Record, bool) {
	now := v.r.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if c := v.m[id]; c != nil && !c.recAt.IsZero() && now.Sub(c.recAt) <= AuthGrace {
		v.r.o.Log.Warn().Str("caller_token_id", id).Time("confirmed", c.recAt).
			Msg("JetStream refuses writes: using the admin token's record confirmed within the grace")
		return c.rec, true
	}
	return adminauth.Record{}, false
}

// denylistView is the revoker's denylist as adminauth reads it.
type denylistView struct{ v *outageView }

// Revoked implements adminauth.Denylist, reading the bucket directly;
// while it cannot be read, the token is revoked if a revocation of ours
// pending for JetStream names it, and not if it was confirmed clean
// within AuthGrace.
func (d denylistView) Revoked(ctx context.Context, t *token.Token) (bool, error) {
	v, r := d.v, d.v.r
	info := TokenInfo{ID: t.ID, Tenant: t.Tenant, Holder: t.Holder, KeyID: t.KeyID, IssuedAt: time.Unix(t.IssuedAt, 0)}
	revoked, err := false, errJetStreamDown
	if !r.jsDown.Load() {
		dctx, cancel := context.WithTimeout(ctx, r.o.LedgerWait)
		revoked, err = r.denied(dctx, info)
		cancel()
	}
	now := r.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil {
		if c := v.entry(t.ID, now); c != nil {
			if revoked {
				c.cleanAt = time.Time{}
			} else {
				c.cleanAt = now
			}
		}
		return revoked, nil
	}
	if r.pendingDenies(info) {
		return true, nil
	}
	if c := v.m[t.ID]; c != nil && !c.cleanAt.IsZero() && now.Sub(c.cleanAt) <= AuthGrace {
		return false, nil
	}
	return false, err
}

// pendingDenies reports whether a revocation pending for JetStream denies
// the token (its own entry or a tenant, holder or key rule).
func (r *Revoker) pendingDenies(t TokenInfo) bool {
	return r.pend.hasToken(t.ID) || r.pend.hasKey(events.DenyKeyToken(t.ID)) || r.pend.hasKey(events.DenyKeyTenant(t.Tenant)) ||
		r.pend.hasKey(events.DenyKeyHolder(t.Tenant, t.Holder)) || r.pend.hasKey(events.DenyKeyKey(t.KeyID)) ||
		r.pend.hasKey(events.DenyKeyBefore(t.Tenant))
}

// authenticate judges a caller's token with the control plane's admin
// authenticator (pkg/adminauth). A NATS request proves nothing about its
// sender, so a token bound to networks or a device is refused. A nil
// caller comes with the refusal.
func (r *Revoker) authenticate(ctx context.Context, auth string) (*adminauth.Caller, Reply) {
	c, err := r.admins.Authenticate(ctx, adminauth.Request{Token: auth, Scope: r.o.Scope})
	switch {
	case err == nil:
		return c, Reply{}
	case errors.Is(err, adminauth.ErrForbidden):
		return nil, failure(CodeForbidden, "%v", err)
	case errors.Is(err, adminauth.ErrUnauthenticated):
		return nil, failure(CodeUnauthorized, "%v", err)
	}
	return nil, failure(CodeInternal, "%v (retry)", err)
}

// idemCache remembers successful replies by idempotency key, bounded in
// number (least recently used evicted) and in age.
type idemCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	m     map[string]*list.Element
	lru   *list.List
	locks map[string]*keyLock
}

type idemEntry struct {
	key   string
	fp    [32]byte
	reply Reply
	job   *job // the revocation's JetStream work, to tell when a pending one is recorded
	at    time.Time
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func newIdemCache(max int, ttl time.Duration) *idemCache {
	return &idemCache{max: max, ttl: ttl, m: map[string]*list.Element{}, lru: list.New(), locks: map[string]*keyLock{}}
}

// lock serialises work on one key and returns the unlock function.
func (c *idemCache) lock(key string) func() {
	c.mu.Lock()
	l := c.locks[key]
	if l == nil {
		l = &keyLock{}
		c.locks[key] = l
	}
	l.refs++
	c.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.locks, key)
		}
		c.mu.Unlock()
	}
}

func (c *idemCache) get(key string, now time.Time) (idemEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[key]
	if !ok {
		return idemEntry{}, false
	}
	e := el.Value.(*idemEntry)
	if now.Sub(e.at) > c.ttl {
		c.lru.Remove(el)
		delete(c.m, key)
		return idemEntry{}, false
	}
	c.lru.MoveToFront(el)
	return *e, true
}

func (c *idemCache) put(key string, fp [32]byte, reply Reply, j *job, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		c.lru.Remove(el)
	}
	for c.lru.Len() >= c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*idemEntry).key)
	}
	c.m[key] = c.lru.PushFront(&idemEntry{key: key, fp: fp, reply: reply, job: j, at: now})
}

func (c *idemCache) prune(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Back(); el != nil; {
		prev := el.Prev()
		if e := el.Value.(*idemEntry); now.Sub(e.at) > c.ttl {
			c.lru.Remove(el)
			delete(c.m, e.key)
		}
		el = prev
	}
}

func (c *idemCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Call sends a revocation request over NATS and decodes the reply.
func Call(ctx context.Context, nc *nats.Conn, req CommandRequest) (Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Reply{}, fmt.Errorf("encode revoke request: %w", err)
	}
	m, err := nc.RequestWithContext(ctx, events.SubjectCmdRevoke, b)
	if err != nil {
		return Reply{}, fmt.Errorf("request %s: %w", events.SubjectCmdRevoke, err)
	}
	var rep Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return Reply{}, fmt.Errorf("decode revoke reply: %w", err)
	}
	return rep, nil
}
