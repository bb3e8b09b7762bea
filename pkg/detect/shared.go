package detect

import (
	"sync"
	"time"
)

// Knowledge shared between partitions.
//
// The auditor runs one engine per partition of the usage stream, and a
// partition holds the holders whose (tenant, holder) hash to it. Two
// judgements need more than one partition's holders:
//
//   - forging_burst's slow pattern applies to a source network that
//     carries no known workload's tokens — any holder's, in any partition
//     (usage naming no token all lands in one partition);
//   - new_network and issuance_mismatch call a network foreign when it is
//     outside every address space of the tenant's learnt holders — all of
//     them, wherever they are partitioned.
//
// And a new holder's first uses are judged by its tenant's address spaces
// once the tenant is learnt — over all its holders' uses.
//
// Each engine reports what it learns of these (a Fact: a network entered
// some holder's baseline; an address space entered a tenant's; a tenant
// became learnt) to a Shared, and asks the Shared when its own baselines say "unknown". A
// Shared in one process serves engines in that process; the auditor
// relays facts between its instances through a KV bucket.
//
// A fact counts for a judgement at event time t only when it was learnt
// at or before t − ShareDelay. Engines of different partitions read their
// streams at different speeds, and across processes a fact arrives after
// a delay; with the delay a partition's judgements do not depend on how
// far the others have read, as long as none lags more than ShareDelay of
// event time behind it. A replay of a partition therefore raises what the
// live run raised, and one instance raises what four do. The cost: a
// network or address space learnt in one partition counts in the others
// a day later — the baselines themselves take days to learn (holder
// learning's min_age).

// ShareDelay is how much event time passes before a fact learnt in one
// partition counts in the others.
const ShareDelay = 24 * time.Hour

// FactKind says what a Fact records.
type FactKind uint8

// The kinds of fact.
const (
	// FactWorkNetwork: a network entered some holder's baseline. Key is
	// the network's filter hash (netHash).
	FactWorkNetwork FactKind = 1
	// FactTenantSpace: an address space entered a tenant's. Tenant is the
	// tenant name's hash (TenantHash), Key the space's key and V6 its
	// family.
	FactTenantSpace FactKind = 2
	// FactTenantLearnt: a tenant's baseline became learnt (holder
	// learning's thresholds over the allowed uses of its holders in one
	// partition; over all of them it is learnt no later). Tenant is the
	// tenant name's hash.
	FactTenantLearnt FactKind = 3
)

// Fact is one thing an engine learnt that other partitions' engines may
// use: what (Kind, Tenant, Key, V6) and the event time it was learnt at
// (Unix seconds).
type Fact struct {
	Kind   FactKind
	Tenant uint64
	Key    uint64
	V6     bool
	Time   int64
}

// TenantHash is the hash a FactTenantSpace names its tenant by.
func TenantHash(tenant string) uint64 { return fnv64(tenant) }

// factKey is a fact without its time.
type factKey struct {
	kind   FactKind
	tenant uint64
	key    uint64
	v6     bool
}

// Shared is knowledge shared by the engines of several partitions: for
// each fact, the earliest event time it was learnt at. It is safe for
// concurrent use.
type Shared struct {
	mu    sync.RWMutex
	facts map[factKey]int64
	out   func(Fact)
	delay int64
}

// NewShared returns an empty Shared. out, when not nil, is called (outside
// the Shared's lock, on the learning engine's goroutine) with each fact
// Learn records for the first time or earlier than before: the auditor
// relays them to its other instances. It must not block.
func NewShared(out func(Fact)) *Shared {
	return &Shared{facts: map[factKey]int64{}, out: out, delay: int64(ShareDelay / time.Second)}
}

// Learn records a fact an engine learnt, keeping the earliest time of
// each, and relays it (NewShared's out) when it was new or earlier than
// the one held. It reports whether it was.
func (s *Shared) Learn(f Fact) bool { return s.record(f, true) }

// Add records a fact learnt elsewhere (another instance's), keeping the
// earliest time of each, without relaying it. It reports whether the fact
// was new or earlier than the one held.
func (s *Shared) Add(f Fact) bool { return s.record(f, false) }

func (s *Shared) record(f Fact, relay bool) bool {
	switch {
	case f.Time <= 0:
		return false
	case f.Kind == FactWorkNetwork:
		// The filter hash already tells the families apart.
		f.Tenant, f.V6 = 0, false
	case f.Kind == FactTenantLearnt:
		f.Key, f.V6 = 0, false
	case f.Kind != FactTenantSpace:
		return false
	}
	k := factKey{kind: f.Kind, tenant: f.Tenant, key: f.Key, v6: f.V6}
	s.mu.Lock()
	t, ok := s.facts[k]
	changed := !ok || f.Time < t
	if changed {
		s.facts[k] = f.Time
	}
	s.mu.Unlock()
	if changed && relay && s.out != nil {
		s.out(f)
	}
	return changed
}

// Len is the number of facts held.
func (s *Shared) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.facts)
}

// Facts returns the facts held, each at its earliest time, in no
// particular order.
func (s *Shared) Facts() []Fact {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Fact, 0, len(s.facts))
	for k, t := range s.facts {
		out = append(out, Fact{Kind: k.kind, Tenant: k.tenant, Key: k.key, V6: k.v6, Time: t})
	}
	return out
}

// known reports whether the fact was learnt at or before t − ShareDelay.
func (s *Shared) known(k factKey, t int64) bool {
	s.mu.RLock()
	at, ok := s.facts[k]
	s.mu.RUnlock()
	return ok && at <= t-s.delay
}

// sharedWorkNetwork reports whether the network (its filter hash) was in
// some holder's baseline ShareDelay before t.
func (e *Engine) sharedWorkNetwork(h uint64, t int64) bool {
	return e.sharedKnows(factKey{kind: FactWorkNetwork, key: h}, t)
}

// sharedTenantSpace reports whether the address space was the tenant's
// ShareDelay before t.
func (e *Engine) sharedTenantSpace(tenant string, space uint64, v6 bool, t int64) bool {
	if e.shared == nil {
		return false // no hash to compute
	}
	return e.sharedKnows(factKey{kind: FactTenantSpace, tenant: TenantHash(tenant), key: space, v6: v6}, t)
}

// tenantLearned is whether the tenant's baseline is learnt at t: in this
// partition (local), or in another ShareDelay before t. A tenant learnt
// here is reported once.
func (e *Engine) tenantLearned(tenant string, local bool, t int64) bool {
	if local {
		if !e.told[tenant] {
			e.told[tenant] = true
			e.shared.Learn(Fact{Kind: FactTenantLearnt, Tenant: TenantHash(tenant), Time: t})
		}
		return true
	}
	return e.sharedKnows(factKey{kind: FactTenantLearnt, tenant: TenantHash(tenant)}, t)
}

// Gate holds an engine's judgement until every fact learnt ShareDelay
// before t by the other partitions is in the Shared — until they have
// read that far. The auditor's gate follows each partition's progress
// (services/auditor knowledge.go). Wait returns at once when they have;
// it may give up on a partition that does not move, and then returns.
type Gate interface {
	Wait(t int64)
}

// Share makes the engine report what it learns to s and consult s where
// its own baselines do not know something (see Shared). Engines of the
// partitions of one usage stream share one. g, when not nil, is asked to
// wait before s answers "unknown": the other partitions may not have
// read far enough yet for the answer to be final (Gate). After Restore
// the engine reports what the restored state holds again, so that a fact
// learnt before a checkpoint and lost with the instance that held it is
// relayed anew.
func (e *Engine) Share(s *Shared, g Gate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.shared, e.gate = s, g
	e.shareAll()
}

// sharedKnows reports whether the Shared holds the fact ShareDelay before
// t, waiting at the gate before answering no.
func (e *Engine) sharedKnows(k factKey, t int64) bool {
	if e.shared == nil {
		return false
	}
	if e.shared.known(k, t) {
		return true
	}
	if e.gate == nil {
		return false
	}
	e.gate.Wait(t)
	return e.shared.known(k, t)
}

// shareAll reports every fact the state holds: the networks of holders'
// baselines, and the address spaces of tenants. A network's time is when
// the holder first used it, a space's the tenant's first allowed use seen
// (the state keeps no time of the fact itself); Shared keeps the earliest.
func (e *Engine) shareAll() {
	if e.shared == nil {
		return
	}
	// The state keeps no time of a fact: each is reported at the latest
	// event time the state holds (the checkpoint's), which is never
	// earlier than when it was learnt. Shared keeps the earliest, so a
	// fact written before keeps its time; one lost counts a little late.
	var now uint32
	for i := e.holders.tail; i >= 0; i = e.holders.link(i).prev {
		n := &e.holders.at(i).nets
		for j := 0; j < setSlots; j++ {
			if n.used&bit32(j) != 0 {
				now = max(now, n.last[j])
			}
		}
	}
	if now == 0 {
		return
	}
	for i := e.holders.tail; i >= 0; i = e.holders.link(i).prev {
		n := &e.holders.at(i).nets
		for j := 0; j < setSlots; j++ {
			if n.known&bit32(j) != 0 {
				e.shared.Learn(Fact{Kind: FactWorkNetwork, Key: netHash(n.keys[j], n.v6&bit32(j) != 0), Time: int64(now)})
			}
		}
	}
	for i := e.tenants.tail; i >= 0; i = e.tenants.link(i).prev {
		tn := e.tenants.at(i)
		th := TenantHash(e.tenants.key(i))
		for j := 0; j < tenantSpaces; j++ {
			if tn.spaces.used&bit32(j) != 0 {
				e.shared.Learn(Fact{Kind: FactTenantSpace, Tenant: th, Key: tn.spaces.keys[j], V6: tn.spaces.v6&bit32(j) != 0, Time: int64(now)})
			}
		}
	}
}

// learn reports a fact to the Shared, if any.
func (e *Engine) learn(f Fact) {
	if e.shared != nil {
		e.shared.Learn(f)
	}
}
