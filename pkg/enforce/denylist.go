package enforce

import (
	"encoding/json"
	"fmt"
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
	// holders and tenants map to the revocation time (Unix seconds): a
	// token issued at or before it is revoked, one issued later is not, so
	// a holder can be given fresh tokens after an incident.
	holders map[holderKey]int64
	// kids revoke every token the key signed, whatever its issue time: a
	// compromised key can forge any iat.
	kids    map[string]struct{}
	tenants map[string]int64
	before  map[string]int64 // tenant → Unix seconds; iat < before is revoked
}

func newDenySet() *denySet {
	return &denySet{
		tokens:  map[string]struct{}{},
		holders: map[holderKey]int64{},
		kids:    map[string]struct{}{},
		tenants: map[string]int64{},
		before:  map[string]int64{},
	}
}

func (s *denySet) len() int {
	return len(s.tokens) + len(s.holders) + len(s.kids) + len(s.tenants) + len(s.before)
}

// denyRule is what one denylist bucket key revokes.
type denyRule struct {
	kind   string // one of the events.Revoke… kinds
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

// put adds the rule of a bucket entry. For an "issued before" rule the time
// comes from the record; a record that cannot be read revokes everything of
// the tenant issued up to now (fail closed) and returns the error to log.
func (s *denySet) put(key string, value []byte, now time.Time) error {
	r, err := parseDenyKey(key)
	if err != nil {
		return err
	}
	switch r.kind {
	case events.RevokeToken:
		s.tokens[r.id] = struct{}{}
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
	}
	return nil
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
	case events.RevokeKey:
		delete(s.kids, r.id)
	case events.RevokeTenant:
		delete(s.tenants, r.id)
	case events.RevokeHolder:
		delete(s.holders, r.holder)
	case events.RevokeBefore:
		delete(s.before, r.id)
	}
	return nil
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

// denylist is the enforcer's in-memory denylist: a denySet behind a
// read-write lock, plus the last applied bucket revision.
type denylist struct {
	mu       sync.RWMutex
	set      *denySet
	size     atomic.Int64 // entries, read without the lock to skip an empty list
	revision atomic.Uint64
}

func newDenylist() *denylist { return &denylist{set: newDenySet()} }

// revoked reports whether the denylist revokes t.
func (d *denylist) revoked(t *token.Token) bool {
	if d.size.Load() == 0 {
		return false
	}
	d.mu.RLock()
	r := d.set.revoked(t)
	d.mu.RUnlock()
	return r
}

// apply applies one watched entry to the live view.
func (d *denylist) apply(key string, value []byte, deleted bool, rev uint64, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if deleted {
		err = d.set.remove(key)
	} else {
		err = d.set.put(key, value, now)
	}
	d.size.Store(int64(d.set.len()))
	if rev > d.revision.Load() {
		d.revision.Store(rev)
	}
	return err
}

// replace swaps in a fully replayed view.
func (d *denylist) replace(s *denySet, rev uint64) {
	d.mu.Lock()
	d.set = s
	d.size.Store(int64(s.len()))
	if rev > d.revision.Load() {
		d.revision.Store(rev)
	}
	d.mu.Unlock()
}

// len is the number of denylist entries.
func (d *denylist) len() int { return int(d.size.Load()) }
