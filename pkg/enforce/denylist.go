package enforce

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// holderKey indexes holder rules without building a string per lookup.
type holderKey struct{ tenant, holder string }

// denySet is one view of the denylist bucket, indexed by what each entry
// revokes. Every index key corresponds to exactly one bucket key, so a
// delete of that bucket key removes exactly one index entry.
type denySet struct {
	tokens map[string]struct{}
	// canaries are the token entries that mark canary tokens (also in
	// tokens): their holder, for the report.
	canaries map[string]holderKey
	// holders and tenants map to the revocation time (Unix seconds): a
	// token issued at or before it is revoked, one issued later is not, so
	// a holder can be given fresh tokens after an incident.
	holders map[holderKey]int64
	// kids revoke every token the key signed, whatever its issue time: a
	// compromised key can forge any iat.
	kids    map[string]struct{}
	tenants map[string]int64
	before  map[string]int64 // tenant → Unix seconds; iat < before is revoked

	// narrow and stepup are the graduated response's restrictions, by
	// token id (events.DenyKeyNarrow, events.DenyKeyStepUp): in force
	// while the request time is before until (Unix seconds, rounded up;
	// forever for a record that cannot be read).
	narrow map[string]narrowRule
	stepup map[string]int64
}

// narrowRule is a quarantine (events.StepNarrow): until it ends, the token
// may only read, within scopes when there are any, from nets.
type narrowRule struct {
	until  int64
	scopes []string
	nets   []netip.Prefix
}

// forever is the end of a restriction whose record cannot be read: it
// lasts until its bucket entry is deleted.
const forever = math.MaxInt64

func newDenySet() *denySet {
	return &denySet{
		tokens:   map[string]struct{}{},
		canaries: map[string]holderKey{},
		holders:  map[holderKey]int64{},
		kids:     map[string]struct{}{},
		tenants:  map[string]int64{},
		before:   map[string]int64{},
		narrow:   map[string]narrowRule{},
		stepup:   map[string]int64{},
	}
}

// len is the number of entries: revocations and restrictions.
func (s *denySet) len() int { return s.revocations() + s.restrictions() }

// revocations is the number of revoking entries.
func (s *denySet) revocations() int {
	return len(s.tokens) + len(s.holders) + len(s.kids) + len(s.tenants) + len(s.before)
}

// restrictions is the number of restricting entries (narrow and step-up).
func (s *denySet) restrictions() int { return len(s.narrow) + len(s.stepup) }

// denyRule is what one denylist bucket key revokes or restricts.
type denyRule struct {
	kind   string // one of the events.Revoke… kinds, events.StepNarrow or events.StepStepUp
	id     string // token id, kid or tenant
	holder holderKey
}

// parseDenyKey reads the rule from a bucket key written with the
// events.DenyKey… functions. The key, not the record, decides what is
// revoked, so that a delete (which has no value) removes the same rule.
func parseDenyKey(key string) (denyRule, error) {
	kind, rest, ok := strings.Cut(key, ".")
	if !ok || rest == "" {
		return denyRule{}, fmt.Errorf("denylist key %q: want <kind>.<subject>", key)
	}
	switch kind {
	case "tok":
		return denyRule{kind: events.RevokeToken, id: rest}, nil
	case "kid":
		return denyRule{kind: events.RevokeKey, id: rest}, nil
	case "tenant":
		return denyRule{kind: events.RevokeTenant, id: rest}, nil
	case "before":
		return denyRule{kind: events.RevokeBefore, id: rest}, nil
	case "narrow":
		return denyRule{kind: events.StepNarrow, id: rest}, nil
	case "stepup":
		return denyRule{kind: events.StepStepUp, id: rest}, nil
	case "holder":
		// Tenants are subject tokens without dots (events.ValidateName);
		// a holder may contain dots.
		tenant, holder, ok := strings.Cut(rest, ".")
		if !ok || tenant == "" || holder == "" {
			return denyRule{}, fmt.Errorf("denylist key %q: want holder.<tenant>.<holder>", key)
		}
		return denyRule{kind: events.RevokeHolder, holder: holderKey{tenant, holder}}, nil
	}
	return denyRule{}, fmt.Errorf("denylist key %q: unknown kind %q", key, kind)
}

// put adds the rule of a bucket entry, replacing the one the key had. For
// an "issued before" rule the time comes from the record; a record that
// cannot be read revokes everything of the tenant issued up to now (fail
// closed) and returns the error to log. A restriction's end, scopes and
// networks come from the record too; one that cannot be read restricts as
// tightly as its step can until its entry is deleted (see restriction).
func (s *denySet) put(key string, value []byte, now time.Time) error {
	r, err := parseDenyKey(key)
	if err != nil {
		return err
	}
	switch r.kind {
	case events.RevokeToken:
		s.tokens[r.id] = struct{}{}
		if bytes.Contains(value, canaryMark) {
			var rec events.DenyRecord
			if json.Unmarshal(value, &rec) == nil && rec.Canary {
				s.canaries[r.id] = holderKey{rec.Tenant, rec.Holder}
			}
		}
	case events.RevokeKey:
		s.kids[r.id] = struct{}{}
	case events.RevokeTenant, events.RevokeHolder:
		cutoff, err := revokedAt(key, value, now)
		if r.kind == events.RevokeTenant {
			s.tenants[r.id] = cutoff
		} else {
			s.holders[r.holder] = cutoff
		}
		return err
	case events.RevokeBefore:
		var rec events.DenyRecord
		if err := json.Unmarshal(value, &rec); err != nil || rec.Before.IsZero() {
			s.before[r.id] = now.Unix() + 1
			if err == nil {
				err = fmt.Errorf("denylist %s: record has no before time", key)
			}
			return fmt.Errorf("denylist %s: unreadable record, revoking everything issued until now: %w", key, err)
		}
		s.before[r.id] = rec.Before.Unix()
	case events.StepNarrow:
		n, err := readNarrow(value)
		s.narrow[r.id] = n
		if err != nil {
			return fmt.Errorf("denylist %s: unreadable record, allowing nothing until the entry is deleted: %w", key, err)
		}
	case events.StepStepUp:
		until, err := readUntil(value)
		s.stepup[r.id] = until
		if err != nil {
			return fmt.Errorf("denylist %s: unreadable record, requiring step-up until the entry is deleted: %w", key, err)
		}
	}
	return nil
}

// readNarrow reads a quarantine record. One that cannot be read (not
// JSON, no end, a network that does not parse, more networks than
// events.MaxRestrictNetworks) gives the tightest quarantine: no network,
// so nothing is allowed, forever.
func readNarrow(value []byte) (narrowRule, error) {
	var rec events.DenyRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return narrowRule{until: forever}, err
	}
	if rec.Until.IsZero() {
		return narrowRule{until: forever}, fmt.Errorf("record has no until time")
	}
	if len(rec.Networks) > events.MaxRestrictNetworks {
		return narrowRule{until: forever}, fmt.Errorf("%d networks, at most %d", len(rec.Networks), events.MaxRestrictNetworks)
	}
	n := narrowRule{until: untilUnix(rec.Until), scopes: rec.Scopes}
	if len(rec.Networks) > 0 {
		n.nets = make([]netip.Prefix, 0, len(rec.Networks))
	}
	for _, s := range rec.Networks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return narrowRule{until: forever}, fmt.Errorf("network %q: %w", s, err)
		}
		n.nets = append(n.nets, p.Masked())
	}
	return n, nil
}

// readUntil reads the end of a step-up record: forever when it cannot be
// read.
func readUntil(value []byte) (int64, error) {
	var rec events.DenyRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return forever, err
	}
	if rec.Until.IsZero() {
		return forever, fmt.Errorf("record has no until time")
	}
	return untilUnix(rec.Until), nil
}

// untilUnix is the end of a restriction in Unix seconds, rounded up so that
// a restriction never ends early.
func untilUnix(t time.Time) int64 {
	u := t.Unix()
	if t.Nanosecond() > 0 && u < forever {
		u++
	}
	return u
}

// revokedAt reads the revocation time of a holder or tenant rule. A record
// that cannot be read revokes everything issued until now (fail closed).
func revokedAt(key string, value []byte, now time.Time) (int64, error) {
	var rec events.DenyRecord
	if err := json.Unmarshal(value, &rec); err != nil || rec.RevokedAt.IsZero() {
		if err == nil {
			err = fmt.Errorf("record has no revoked_at time")
		}
		return now.Unix(), fmt.Errorf("denylist %s: unreadable record, revoking everything issued until now: %w", key, err)
	}
	return rec.RevokedAt.Unix(), nil
}

// remove drops the rule of a deleted or purged bucket key.
func (s *denySet) remove(key string) error {
	r, err := parseDenyKey(key)
	if err != nil {
		return err
	}
	switch r.kind {
	case events.RevokeToken:
		delete(s.tokens, r.id)
		delete(s.canaries, r.id)
	case events.RevokeKey:
		delete(s.kids, r.id)
	case events.RevokeTenant:
		delete(s.tenants, r.id)
	case events.RevokeHolder:
		delete(s.holders, r.holder)
	case events.RevokeBefore:
		delete(s.before, r.id)
	case events.StepNarrow:
		delete(s.narrow, r.id)
	case events.StepStepUp:
		delete(s.stepup, r.id)
	}
	return nil
}

// restriction is the reason a restriction in force at sec (Unix seconds)
// denies the request of t, or ReasonOK. A quarantine (narrow) allows only a
// read scope (events.IsReadScope), covered by one of its scopes when it
// names any, from inside one of its networks; a step-up allows only a token
// bound to a device that presented it. Both may be in force: both must
// pass, and a failed quarantine is reported first (the order of
// events.DenyReasons).
func (s *denySet) restriction(t *token.Token, req *Request, sec int64) Reason {
	if n, ok := s.narrow[t.ID]; ok && sec < n.until && !n.allows(req) {
		return ReasonQuarantined
	}
	if until, ok := s.stepup[t.ID]; ok && sec < until &&
		(t.Device == "" || req.Device == "" || !t.AllowsDevice(req.Device)) {
		return ReasonStepUpRequired
	}
	return ReasonOK
}

// allows reports whether a quarantine lets req through.
func (n *narrowRule) allows(req *Request) bool {
	if !events.IsReadScope(req.Scope) {
		return false
	}
	if len(n.scopes) > 0 {
		covered := false
		for _, g := range n.scopes {
			if token.ScopeCovers(g, req.Scope) {
				covered = true
				break
			}
		}
		if !covered {
			return false
		}
	}
	addr := req.RemoteAddr.Unmap()
	for _, p := range n.nets {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// inForce counts the quarantines and step-ups in force at sec.
func (s *denySet) inForce(sec int64) (narrow, stepup int) {
	for _, n := range s.narrow {
		if sec < n.until {
			narrow++
		}
	}
	for _, until := range s.stepup {
		if sec < until {
			stepup++
		}
	}
	return narrow, stepup
}

// revoked reports whether any rule revokes t.
func (s *denySet) revoked(t *token.Token) bool {
	if len(s.tokens) > 0 {
		if _, ok := s.tokens[t.ID]; ok {
			return true
		}
	}
	if len(s.holders) > 0 {
		if at, ok := s.holders[holderKey{t.Tenant, t.Holder}]; ok && t.IssuedAt <= at {
			return true
		}
	}
	if len(s.kids) > 0 {
		if _, ok := s.kids[t.KeyID]; ok {
			return true
		}
	}
	if len(s.tenants) > 0 {
		if at, ok := s.tenants[t.Tenant]; ok && t.IssuedAt <= at {
			return true
		}
	}
	if len(s.before) > 0 {
		if b, ok := s.before[t.Tenant]; ok && t.IssuedAt < b {
			return true
		}
	}
	return false
}

// merge adds the rule of a broadcast change without narrowing what the set
// already revokes: holder, tenant and "issued before" rules keep the later
// of the two cut-off times, so changes may be applied in any order. A
// restriction is replaced by the change's (a restriction is re-applied
// with a new end; the later write wins).
func (s *denySet) merge(key string, value []byte, now time.Time) error {
	r, err := parseDenyKey(key)
	if err != nil {
		return err
	}
	var old int64
	var had bool
	switch r.kind {
	case events.RevokeTenant:
		old, had = s.tenants[r.id]
	case events.RevokeHolder:
		old, had = s.holders[r.holder]
	case events.RevokeBefore:
		old, had = s.before[r.id]
	}
	err = s.put(key, value, now)
	if had {
		switch r.kind {
		case events.RevokeTenant:
			s.tenants[r.id] = max(s.tenants[r.id], old)
		case events.RevokeHolder:
			s.holders[r.holder] = max(s.holders[r.holder], old)
		case events.RevokeBefore:
			s.before[r.id] = max(s.before[r.id], old)
		}
	}
	return err
}

// unconfirmed is a denylist entry a broadcast put that the bucket has not
// confirmed yet: a KV delete older than it must not remove it, and a KV
// replay that does not cover it must keep it.
type unconfirmed struct {
	value []byte
	// kvRev is the bucket revision of the write; 0 while pending.
	kvRev uint64
	// expiry is the record's expiry (zero: unknown); past it the entry is
	// dropped at the next replay.
	expiry time.Time
}

// maxUnconfirmed bounds the unconfirmed broadcast entries kept; past it
// the oldest confirmed-pending ones are not tracked (they stay applied).
const maxUnconfirmed = 65536

// denylist is the enforcer's in-memory denylist: a denySet behind a
// read-write lock, plus the last applied bucket revision and the entries
// broadcasts put that the bucket has not confirmed.
type denylist struct {
	mu  sync.RWMutex
	set *denySet
	// revokes and restricts count the set's revoking and restricting
	// entries, read without the lock to skip an empty kind.
	revokes   atomic.Int64
	restricts atomic.Int64
	revision  atomic.Uint64
	// unconf is keyed by bucket key (guarded by mu).
	unconf  map[string]*unconfirmed
	unconfN atomic.Int64
}

func newDenylist() *denylist {
	return &denylist{set: newDenySet(), unconf: map[string]*unconfirmed{}}
}

// canaryMark is in the record of every canary token entry.
var canaryMark = []byte(`"canary":true`)

// canary reports whether t is a canary token, and the holder it was
// planted for.
func (d *denylist) canary(t *token.Token) (holderKey, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	h, ok := d.set.canaries[t.ID]
	return h, ok
}

// revoked reports whether the denylist revokes t.
func (d *denylist) revoked(t *token.Token) bool {
	if d.revokes.Load() == 0 {
		return false
	}
	d.mu.RLock()
	r := d.set.revoked(t)
	d.mu.RUnlock()
	return r
}

// restricted is the reason a restriction of t in force at now denies req,
// or ReasonOK (at once while no token is restricted).
func (d *denylist) restricted(t *token.Token, req *Request, now time.Time) Reason {
	if d.restricts.Load() == 0 {
		return ReasonOK
	}
	return d.restrictedSlow(t, req, now)
}

func (d *denylist) restrictedSlow(t *token.Token, req *Request, now time.Time) Reason {
	sec := now.Unix()
	d.mu.RLock()
	r := d.set.restriction(t, req, sec)
	d.mu.RUnlock()
	return r
}

// inForce counts the quarantines and step-ups in force at now.
func (d *denylist) inForce(now time.Time) (narrow, stepup int) {
	if d.restricts.Load() == 0 {
		return 0, 0
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.set.inForce(now.Unix())
}

// counted stores the set's counts for lock-free readers (d.mu held).
func (d *denylist) counted() {
	d.revokes.Store(int64(d.set.revocations()))
	d.restricts.Store(int64(d.set.restrictions()))
	d.unconfN.Store(int64(len(d.unconf)))
}

// apply applies one watched bucket entry to the live view. An entry a
// broadcast put stays as long as the bucket has not reached the revision
// of its write (or forever while it is pending): an older delete or expiry
// marker does not remove it, and an older put does not narrow it.
func (d *denylist) apply(key string, value []byte, deleted bool, rev uint64, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	u := d.unconf[key]
	confirmed := u != nil && u.kvRev != 0 && rev >= u.kvRev
	if confirmed {
		delete(d.unconf, key)
		u = nil
	}
	switch {
	case deleted && u != nil:
		// Older than the broadcast write (or it is still pending): keep.
	case deleted:
		err = d.set.remove(key)
	default:
		err = d.set.put(key, value, now)
		if u != nil {
			_ = d.set.merge(key, u.value, now)
		}
	}
	d.counted()
	if rev > d.revision.Load() {
		d.revision.Store(rev)
	}
	return err
}

// applyBroadcast merges a broadcast change into the live view and tracks
// it until the bucket confirms it. A change the applied bucket revision
// already covers is old news and only reported as such (false).
func (d *denylist) applyBroadcast(key string, value []byte, kvRev uint64, now time.Time) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.unconf[key]
	if kvRev != 0 && kvRev <= d.revision.Load() && u == nil {
		return false, nil
	}
	r, err := parseDenyKey(key)
	if err != nil {
		return false, err // revokes nothing: not tracked
	}
	// A restriction is replaced, not merged: one the bucket wrote before
	// the tracked one (both revisions known) is old news.
	restriction := r.kind == events.StepNarrow || r.kind == events.StepStepUp
	older := restriction && u != nil && kvRev != 0 && u.kvRev != 0 && kvRev < u.kvRev
	// An unreadable record still revokes or restricts (fail closed); its
	// error is returned to be logged.
	if !older {
		err = d.set.merge(key, value, now)
	}
	exp := recordExpiry(value)
	switch {
	case u == nil:
		if len(d.unconf) < maxUnconfirmed {
			d.unconf[key] = &unconfirmed{value: value, kvRev: kvRev, expiry: exp}
		}
	default:
		if !older && laterCutoff(key, value, u.value, now) {
			u.value = value
		}
		if kvRev != 0 && (u.kvRev == 0 || kvRev > u.kvRev) {
			u.kvRev = kvRev
		}
		if !older && exp.After(u.expiry) {
			u.expiry = exp
		}
	}
	if kvRev != 0 && kvRev <= d.revision.Load() {
		if u := d.unconf[key]; u != nil && u.kvRev != 0 && u.kvRev <= d.revision.Load() {
			delete(d.unconf, key)
		}
	}
	d.counted()
	return true, err
}

// replace swaps in a fully replayed view (up to bucket revision rev),
// keeping the broadcast entries the replay does not cover: those still
// pending and those written after rev.
func (d *denylist) replace(s *denySet, rev uint64) {
	now := time.Now()
	d.mu.Lock()
	for key, u := range d.unconf {
		if (u.kvRev != 0 && u.kvRev <= rev) || (!u.expiry.IsZero() && now.After(u.expiry)) {
			delete(d.unconf, key)
			continue
		}
		_ = s.merge(key, u.value, now)
	}
	d.set = s
	d.counted()
	if rev > d.revision.Load() {
		d.revision.Store(rev)
	}
	d.mu.Unlock()
}

// len is the number of denylist entries.
func (d *denylist) len() int { return int(d.revokes.Load() + d.restricts.Load()) }

// unconfirmedLen is the number of broadcast entries the bucket has not
// confirmed yet.
func (d *denylist) unconfirmedLen() int { return int(d.unconfN.Load()) }

// recordExpiry reads the expiry of a denylist record (zero when
// unreadable): the end of a restriction when it comes first, since the
// entry restricts nothing past it.
func recordExpiry(value []byte) time.Time {
	var rec struct {
		Expiry time.Time `json:"exp"`
		Until  time.Time `json:"until"`
	}
	if json.Unmarshal(value, &rec) != nil {
		return time.Time{}
	}
	if !rec.Until.IsZero() && (rec.Expiry.IsZero() || rec.Until.Before(rec.Expiry)) {
		return rec.Until
	}
	return rec.Expiry
}

// laterCutoff reports whether value a revokes at least as widely as b for
// key (for rules without a cut-off time, any value does).
func laterCutoff(key string, a, b []byte, now time.Time) bool {
	x, y := newDenySet(), newDenySet()
	_ = x.put(key, a, now)
	_ = y.put(key, b, now)
	return cutoffOf(x) >= cutoffOf(y)
}

func cutoffOf(s *denySet) int64 {
	for _, v := range s.holders {
		return v
	}
	for _, v := range s.tenants {
		return v
	}
	for _, v := range s.before {
		return v
	}
	return 0
}
