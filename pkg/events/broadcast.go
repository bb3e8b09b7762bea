package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The denylist broadcast: every change a revoker makes to the denylist
// bucket is also published on core NATS (no JetStream, so no leader
// election in its way), and every revoker replica sends a heartbeat saying
// how far it has got. The bucket stays the durable record; enforcers apply
// whichever of the two paths delivers a change first.
//
// A revoker replica is an origin: a name chosen at each start
// (NewOrigin), with its own sequence of changes numbered from 1 without
// gaps. Its heartbeat announces its last sequence, the last bucket
// revision it knows, and the changes it has broadcast but not yet written
// to the bucket (pending: JetStream did not accept them yet). An enforcer
// that sees a gap in an origin's sequence asks that origin for the missed
// changes (SubjectDenyResyncPrefix + origin) or, when the origin cannot
// answer, replays the bucket.
//
// Only the revoker role may publish on SubjectDenyChange and
// SubjectDenyHeartbeat (pkg/natsauth); enforcers subscribe to both and
// may request a resync.
const (
	// SubjectDenyChange carries one DenyChange per message.
	SubjectDenyChange = "cordon.denylist.change"
	// SubjectDenyHeartbeat carries DenyHeartbeat messages.
	SubjectDenyHeartbeat = "cordon.denylist.heartbeat"
	// SubjectDenyResyncPrefix + origin is the request/reply subject of
	// one origin's resync (DenyResyncRequest → DenyResyncReply).
	SubjectDenyResyncPrefix = "cordon.denylist.resync."
)

// Bounds on broadcast messages.
const (
	// MaxDenyValue bounds the bucket value carried by a change.
	MaxDenyValue = 8 << 10
	// MaxDenyPending bounds the pending changes one heartbeat carries; a
	// replica with more sends them in several heartbeats.
	MaxDenyPending = 512
	// MaxDenyResync bounds the changes of one resync reply.
	MaxDenyResync = 2048
)

// DenyChange is one denylist change as broadcast.
type DenyChange struct {
	// Origin is the revoker replica that made it; Seq its number in that
	// origin's sequence (from 1, without gaps).
	Origin string `json:"origin"`
	Seq    uint64 `json:"seq"`
	// Key is the denylist bucket key (events.DenyKey…); Value the bucket
	// value (a DenyRecord) as written or to be written.
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	// KVRev is the bucket revision of the write; 0 while pending (the
	// write is not yet accepted by JetStream).
	KVRev uint64 `json:"kv_rev,omitempty"`
	// At is when the origin made the change.
	At time.Time `json:"at"`
}

// DenyHeartbeat is a revoker replica's periodic statement of how far it
// has got.
type DenyHeartbeat struct {
	Origin string `json:"origin"`
	// Seq is the origin's last broadcast change (0: none yet).
	Seq uint64 `json:"seq"`
	// KVRev is the last denylist bucket revision the origin knows of (its
	// own writes, other replicas' broadcasts, its probes of the bucket).
	KVRev uint64 `json:"kv_rev"`
	// Pending are the origin's changes not yet written to the bucket, so
	// that an enforcer that missed their broadcast still gets them.
	Pending []DenyChange `json:"pending,omitempty"`
	// More is set when Pending did not fit in one heartbeat: the rest
	// follow in further heartbeats with the same Seq.
	More bool `json:"more,omitempty"`
	// Interval is the origin's heartbeat interval: an enforcer that hears
	// nothing from an origin for a few intervals counts it as gone.
	Interval time.Duration `json:"interval_ns"`
	// At is the origin's clock when it sent the heartbeat.
	At time.Time `json:"at"`
}

// DenyResyncRequest asks an origin for its changes from sequence From on.
type DenyResyncRequest struct {
	From uint64 `json:"from"`
}

// DenyResyncReply answers a DenyResyncRequest.
type DenyResyncReply struct {
	// Changes are the origin's changes from the requested sequence, in
	// order, at most MaxDenyResync of them.
	Changes []DenyChange `json:"changes"`
	// Complete reports whether the origin still holds every change from
	// the requested one; false means replay the bucket instead.
	Complete bool `json:"complete"`
	// Seq is the origin's last sequence when it answered.
	Seq uint64 `json:"seq"`
}

// ErrBadBroadcast is wrapped by the decoders' errors.
var ErrBadBroadcast = errors.New("bad denylist broadcast")

// NewOrigin names a revoker replica for one run: its source (cut to what
// fits a subject token) and a random suffix.
func NewOrigin(source string) string {
	var b strings.Builder
	for _, r := range source {
		if b.Len() >= 40 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		b.WriteString("revoker")
	}
	return b.String() + "-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:8]
}

// Validate checks a change.
func (c *DenyChange) Validate() error {
	if err := ValidateName(c.Origin); err != nil {
		return fmt.Errorf("%w: origin: %v", ErrBadBroadcast, err)
	}
	if c.Seq == 0 {
		return fmt.Errorf("%w: seq is 0", ErrBadBroadcast)
	}
	if c.Key == "" || len(c.Key) > 512 || strings.ContainsAny(c.Key, " \t\r\n*>") {
		return fmt.Errorf("%w: key %q", ErrBadBroadcast, c.Key)
	}
	if len(c.Value) == 0 || len(c.Value) > MaxDenyValue || !json.Valid(c.Value) {
		return fmt.Errorf("%w: value of %s is not a JSON record of at most %d bytes", ErrBadBroadcast, c.Key, MaxDenyValue)
	}
	return nil
}

// Validate checks a heartbeat and its pending changes.
func (h *DenyHeartbeat) Validate() error {
	if err := ValidateName(h.Origin); err != nil {
		return fmt.Errorf("%w: origin: %v", ErrBadBroadcast, err)
	}
	if len(h.Pending) > MaxDenyPending {
		return fmt.Errorf("%w: %d pending changes (at most %d)", ErrBadBroadcast, len(h.Pending), MaxDenyPending)
	}
	if h.Interval <= 0 {
		return fmt.Errorf("%w: interval %v", ErrBadBroadcast, h.Interval)
	}
	for i := range h.Pending {
		p := &h.Pending[i]
		if err := p.Validate(); err != nil {
			return err
		}
		if p.Origin != h.Origin || p.Seq > h.Seq || p.KVRev != 0 {
			return fmt.Errorf("%w: pending change %d of %s is not a pending change of the heartbeat's origin", ErrBadBroadcast, p.Seq, p.Origin)
		}
	}
	return nil
}

// DecodeDenyChange decodes and validates a broadcast change.
func DecodeDenyChange(b []byte) (DenyChange, error) {
	var c DenyChange
	if err := json.Unmarshal(b, &c); err != nil {
		return DenyChange{}, fmt.Errorf("%w: %v", ErrBadBroadcast, err)
	}
	return c, c.Validate()
}

// DecodeDenyHeartbeat decodes and validates a heartbeat.
func DecodeDenyHeartbeat(b []byte) (DenyHeartbeat, error) {
	var h DenyHeartbeat
	if err := json.Unmarshal(b, &h); err != nil {
		return DenyHeartbeat{}, fmt.Errorf("%w: %v", ErrBadBroadcast, err)
	}
	return h, h.Validate()
}

// DecodeDenyResyncReply decodes and validates a resync reply of origin.
func DecodeDenyResyncReply(origin string, b []byte) (DenyResyncReply, error) {
	var r DenyResyncReply
	if err := json.Unmarshal(b, &r); err != nil {
		return DenyResyncReply{}, fmt.Errorf("%w: %v", ErrBadBroadcast, err)
	}
	if len(r.Changes) > MaxDenyResync {
		return DenyResyncReply{}, fmt.Errorf("%w: %d changes in one resync reply (at most %d)", ErrBadBroadcast, len(r.Changes), MaxDenyResync)
	}
	for i := range r.Changes {
		if err := r.Changes[i].Validate(); err != nil {
			return DenyResyncReply{}, err
		}
		if r.Changes[i].Origin != origin {
			return DenyResyncReply{}, fmt.Errorf("%w: resync reply of %s carries a change of %s", ErrBadBroadcast, origin, r.Changes[i].Origin)
		}
	}
	return r, nil
}
