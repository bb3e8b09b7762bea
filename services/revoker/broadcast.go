package revoker

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
)

// broadcaster is this replica's side of the denylist broadcast
// (pkg/events/broadcast.go): it numbers every denylist change of its
// origin, publishes it on core NATS, keeps the recent ones in a ring to
// answer resyncs, and keeps the changes not yet written to the bucket
// (pending) so that every heartbeat carries them. It is safe for
// concurrent use; changes are published in sequence order.
type broadcaster struct {
	nc       *nats.Conn
	origin   string
	interval time.Duration
	now      func() time.Time
	log      zerolog.Logger
	stats    *counters

	mu      sync.Mutex
	seq     uint64 // last sequence given
	kvRev   uint64 // highest bucket revision of this origin's accepted writes
	ring    []events.DenyChange
	ringMax int
	pending map[uint64]events.DenyChange // by seq: broadcast, not yet written
	sub     *nats.Subscription
}

func newBroadcaster(nc *nats.Conn, origin string, interval time.Duration, ringMax int, now func() time.Time,
	log zerolog.Logger, stats *counters) *broadcaster {
	return &broadcaster{nc: nc, origin: origin, interval: interval, now: now, log: log, stats: stats,
		ringMax: ringMax, pending: map[uint64]events.DenyChange{}}
}

// serve subscribes to this origin's resync subject.
func (b *broadcaster) serve() error {
	subj := events.SubjectDenyResyncPrefix + b.origin
	sub, err := b.nc.Subscribe(subj, b.resync)
	if err != nil {
		return fmt.Errorf("revoker: subscribe %s: %w", subj, err)
	}
	b.mu.Lock()
	b.sub = sub
	b.mu.Unlock()
	return nil
}

// stop unsubscribes from the resync subject.
func (b *broadcaster) stop() {
	b.mu.Lock()
	sub := b.sub
	b.sub = nil
	b.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

// announce broadcasts a change of key to value: pending (not yet written
// to the bucket) when kvRev is 0, else written at bucket revision kvRev.
// It returns the change's sequence.
func (b *broadcaster) announce(key string, value []byte, kvRev uint64) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.announceLocked(key, value, kvRev)
}

func (b *broadcaster) announceLocked(key string, value []byte, kvRev uint64) uint64 {
	b.seq++
	c := events.DenyChange{Origin: b.origin, Seq: b.seq, Key: key, Value: json.RawMessage(slices.Clone(value)), KVRev: kvRev,
		At: b.now().UTC()}
	if kvRev == 0 {
		b.pending[c.Seq] = c
	} else if kvRev > b.kvRev {
		b.kvRev = kvRev
	}
	if len(b.ring) < b.ringMax {
		b.ring = append(b.ring, c)
	} else {
		b.ring[(c.Seq-1)%uint64(b.ringMax)] = c
	}
	data, err := json.Marshal(c)
	if err == nil {
		err = b.nc.Publish(events.SubjectDenyChange, data)
	}
	if err != nil {
		// Heartbeats carry a pending change again, the ring answers a
		// resync and the bucket holds a written one: an enforcer that
		// missed this message still gets it.
		b.stats.broadcastErrors.Add(1)
		b.log.Warn().Err(err).Str("key", key).Uint64("seq", c.Seq).Msg("denylist change not broadcast")
		return c.Seq
	}
	b.stats.broadcasts.Add(1)
	return c.Seq
}

// written records that the pending change pendingSeq (0: none) was
// written to the bucket at revision kvRev, with value, and broadcasts the
// write as a change of its own.
func (b *broadcaster) written(pendingSeq uint64, key string, value []byte, kvRev uint64) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, pendingSeq)
	return b.announceLocked(key, value, kvRev)
}

// resolved drops the pending change pendingSeq without a write of ours:
// the bucket already holds an entry that covers it, at revision kvRev
// (0: unknown).
func (b *broadcaster) resolved(pendingSeq uint64, kvRev uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, pendingSeq)
	if kvRev > b.kvRev {
		b.kvRev = kvRev
	}
}

// pendingLen is the number of changes broadcast and not yet written.
func (b *broadcaster) pendingLen() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// heartbeat publishes this origin's heartbeat: its last sequence, its
// last bucket revision and its pending changes, in as many messages as
// the pending list needs (More on all but the last).
func (b *broadcaster) heartbeat() {
	b.mu.Lock()
	h := events.DenyHeartbeat{Origin: b.origin, Seq: b.seq, KVRev: b.kvRev, Interval: b.interval, At: b.now().UTC()}
	pending := make([]events.DenyChange, 0, len(b.pending))
	for _, c := range b.pending {
		pending = append(pending, c)
	}
	b.mu.Unlock()
	slices.SortFunc(pending, func(x, y events.DenyChange) int { return compareSeq(x.Seq, y.Seq) })
	maxBytes := int(b.nc.MaxPayload()) - 4096
	if maxBytes < 64<<10 {
		maxBytes = 64 << 10
	}
	for {
		msg := h
		msg.Pending, msg.More = nil, false
		size := 0
		for len(pending) > 0 && len(msg.Pending) < events.MaxDenyPending {
			n := len(pending[0].Value) + len(pending[0].Key) + 256
			if len(msg.Pending) > 0 && size+n > maxBytes {
				break
			}
			size += n
			msg.Pending = append(msg.Pending, pending[0])
			pending = pending[1:]
		}
		msg.More = len(pending) > 0
		data, err := json.Marshal(msg)
		if err == nil {
			err = b.nc.Publish(events.SubjectDenyHeartbeat, data)
		}
		if err != nil {
			b.stats.broadcastErrors.Add(1)
			b.log.Warn().Err(err).Uint64("seq", h.Seq).Msg("denylist heartbeat not sent")
			return
		}
		b.stats.heartbeats.Add(1)
		if !msg.More {
			return
		}
	}
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// resync answers a DenyResyncRequest with the changes from its From on,
// as far as the ring still holds them; a malformed request, or one the
// ring no longer reaches, is answered Complete=false (replay the bucket).
func (b *broadcaster) resync(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	var req events.DenyResyncRequest
	err := json.Unmarshal(m.Data, &req)
	rep := b.changesFrom(req.From)
	if err != nil {
		rep = events.DenyResyncReply{Seq: rep.Seq}
		b.log.Debug().Err(err).Msg("malformed denylist resync request")
	}
	b.stats.resync(rep.Complete)
	data, err := json.Marshal(rep)
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		b.log.Warn().Err(err).Uint64("from", req.From).Msg("denylist resync reply not sent")
	}
}

// changesFrom is the resync reply for from: the changes from it on (at
// most events.MaxDenyResync, and what fits a message), Complete when the
// ring still holds from.
func (b *broadcaster) changesFrom(from uint64) events.DenyResyncReply {
	if from == 0 {
		from = 1
	}
	maxBytes := int(b.nc.MaxPayload()) - 4096
	b.mu.Lock()
	defer b.mu.Unlock()
	rep := events.DenyResyncReply{Seq: b.seq, Changes: []events.DenyChange{}}
	oldest := uint64(1)
	if b.seq > uint64(b.ringMax) {
		oldest = b.seq - uint64(b.ringMax) + 1
	}
	if from < oldest {
		return rep // rolled past: Complete false
	}
	rep.Complete = true
	size := 0
	for s := from; s <= b.seq && len(rep.Changes) < events.MaxDenyResync; s++ {
		c := b.ring[(s-1)%uint64(b.ringMax)]
		size += len(c.Value) + len(c.Key) + 256
		if len(rep.Changes) > 0 && size > maxBytes {
			break // the rest in the next request
		}
		rep.Changes = append(rep.Changes, c)
	}
	return rep
}

// loop sends a heartbeat at once and then every interval until done.
func (b *broadcaster) loop(done <-chan struct{}) {
	b.heartbeat()
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			b.heartbeat()
		}
	}
}
