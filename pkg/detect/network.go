package detect

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"strings"
	"time"
)

// maxNetworks is how many networks a token remembers. When all slots are
// taken the least recently used network outside the baseline goes first.
const maxNetworks = 16

// netState is a token's fixed-size set of networks: the baseline ("known")
// and the ones seen recently, with first and last use per network.
type netState struct {
	used  uint16 // slot in use
	known uint16 // slot is part of the baseline
	v6    uint16 // slot holds an IPv6 network
	// alerted: the token's use from the slot's network was reported
	// (new_network, issuance_mismatch); one alert per (token, network).
	alerted uint16
	// maxConcurrent is the most networks used at once while learning.
	maxConcurrent uint8
	keys          [maxNetworks]uint64
	last          [maxNetworks]uint32 // Unix seconds
	first         [maxNetworks]uint32 // Unix seconds
}

// netKey reduces an address to its network: the masked IPv4 address, or
// the masked upper 64 bits of an IPv6 address.
func netKey(a netip.Addr, p4, p6 int) (key uint64, v6 bool) {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return uint64(binary.BigEndian.Uint32(b[:]) & (^uint32(0) << (32 - p4))), false
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]) & (^uint64(0) << (64 - p6)), true
}

// netString formats a network key back into a prefix.
func netString(key uint64, v6 bool, p4, p6 int) string {
	if !v6 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(key))
		return netip.PrefixFrom(netip.AddrFrom4(b), p4).String()
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], key)
	return netip.PrefixFrom(netip.AddrFrom16(b), p6).String()
}

func bit(i int) uint16 { return 1 << uint(i) }

// find returns the slot holding the network, or -1.
func (n *netState) find(key uint64, v6 bool) int {
	for i := 0; i < maxNetworks; i++ {
		if n.used&bit(i) != 0 && n.keys[i] == key && (n.v6&bit(i) != 0) == v6 {
			return i
		}
	}
	return -1
}

// insert puts a network in a free slot, else in the least recently used
// slot outside the baseline, else in the least recently used slot.
func (n *netState) insert(key uint64, v6 bool, t uint32) int {
	victim, victimKnown := -1, true
	for i := 0; i < maxNetworks; i++ {
		if n.used&bit(i) == 0 {
			victim = i
			break
		}
		known := n.known&bit(i) != 0
		switch {
		case victim < 0,
			victimKnown && !known,
			victimKnown == known && n.last[i] < n.last[victim]:
			victim, victimKnown = i, known
		}
	}
	i := victim
	n.keys[i], n.first[i], n.last[i] = key, t, t
	n.used |= bit(i)
	n.known &^= bit(i)
	n.alerted &^= bit(i)
	if v6 {
		n.v6 |= bit(i)
	} else {
		n.v6 &^= bit(i)
	}
	return i
}

// concurrent counts the networks used at or after since.
func (n *netState) concurrent(since uint32) int {
	c := 0
	for i := 0; i < maxNetworks; i++ {
		if n.used&bit(i) != 0 && n.last[i] >= since {
			c++
		}
	}
	return c
}

// list formats the networks of the slots selected by mask, comma separated.
func (n *netState) list(mask uint16, p4, p6 int) string {
	var b strings.Builder
	for i := 0; i < maxNetworks; i++ {
		if mask&bit(i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(netString(n.keys[i], n.v6&bit(i) != 0, p4, p6))
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// secs32 clamps Unix seconds into the uint32 slot clock.
func secs32(t int64) uint32 {
	switch {
	case t < 0:
		return 0
	case t > int64(^uint32(0)):
		return ^uint32(0)
	}
	return uint32(t)
}

// list formats the values of the slots selected by mask, comma separated,
// with f; "none" when empty.
func (v *valueSet) list(mask uint32, f func(key uint64, v6 bool) string) string {
	var b strings.Builder
	n := 0
	for i := 0; i < setSlots; i++ {
		if mask&bit32(i) == 0 {
			continue
		}
		if n == 8 {
			b.WriteString(", …")
			break
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(f(v.keys[i], v.v6&bit32(i) != 0))
		n++
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

func popcount8(b uint8) int { return bits.OnesCount8(b) }

// promote makes a value of a holder's set part of its baseline when the
// event (allowed, from a token not ended) shows it is the holder's own:
// RolloutTokens distinct tokens used it; or RolloutTokens distinct
// instances (source addresses) used it and corroborated says the rest of
// the request is the holder's (a rollout to a new cluster, a client
// upgrade on every replica); or it is used again promoteAfter after its
// first sighting (the alert went out and nobody revoked the token).
// corroborated is only asked when the instances would decide.
func (e *Engine) promote(v *valueSet, slot int, o *obs, promoteAfter time.Duration, corroborated func() bool) {
	if slot < 0 || !o.allowed || o.postEnd || v.isKnown(slot) {
		return
	}
	if popcount8(v.toks[slot]|o.tokBit) >= e.cfg.RolloutTokens ||
		popcount8(v.addrs[slot]|o.addrBit) >= e.cfg.RolloutTokens && corroborated() ||
		promoteAfter > 0 && o.holderLearned && o.t-int64(v.first[slot]) >= int64(promoteAfter/time.Second) {
		v.known |= bit32(slot)
	}
}

// spaceKey reduces a network key to its address space
// (Config.AddressSpace).
func (e *Engine) spaceKey(key uint64, v6 bool) uint64 {
	if v6 {
		return key & (^uint64(0) << (64 - e.cfg.AddressSpace.IPv6Prefix))
	}
	return key & uint64(^uint32(0)<<(32-e.cfg.AddressSpace.IPv4Prefix))
}

// foreign reports whether the event's network lies outside every address
// space known to be the tenant's: those its learnt holders use (the
// tenant's spaces), its holder's and the token's own baselines once
// learnt (a baseline still learning may be learning the attacker's
// network), or — when there is none of these yet — the space the token
// was requested from. With no reference at all nothing is foreign.
func (e *Engine) foreign(s *tokenState, o *obs) bool {
	if !o.hasAddr {
		return false
	}
	if o.foreignDone {
		return o.isForeign
	}
	o.foreignDone = true
	sp := e.spaceKey(o.key, o.v6)
	if o.tn.spaces.has(sp, o.v6) || e.sharedTenantSpace(s.tenant, sp, o.v6, o.t) {
		return false
	}
	ref := o.tenantLearned
	hn := &o.h.nets
	for i := 0; i < setSlots && o.holderLearned; i++ {
		if hn.known&bit32(i) == 0 {
			continue
		}
		ref = true
		if (hn.v6&bit32(i) != 0) == o.v6 && e.spaceKey(hn.keys[i], o.v6) == sp {
			return false
		}
	}
	n := &s.core.net
	for i := 0; i < maxNetworks && o.tokLearned; i++ {
		if n.known&bit(i) == 0 {
			continue
		}
		ref = true
		if (n.v6&bit(i) != 0) == o.v6 && e.spaceKey(n.keys[i], o.v6) == sp {
			return false
		}
	}
	if iss := &s.core.iss; !ref && iss.flags&issNet != 0 {
		ref = true
		if (iss.flags&issV6 != 0) == o.v6 && e.spaceKey(iss.net, o.v6) == sp {
			return false
		}
	}
	o.isForeign = ref
	return ref
}

// spaceString formats the address space of a network key.
func (e *Engine) spaceString(key uint64, v6 bool) string {
	return netString(e.spaceKey(key, v6), v6, e.cfg.AddressSpace.IPv4Prefix, e.cfg.AddressSpace.IPv6Prefix)
}

// record puts the event's value in a holder's set: allowed uses mark the
// token's bit, and join the baseline while the holder learns. It returns
// the value's slot.
func record(v *valueSet, slot int, key uint64, v6 bool, o *obs) int {
	t := secs32(o.t)
	if slot < 0 {
		slot = v.insert(key, v6, t)
	} else if t > v.last[slot] {
		v.last[slot] = t
	}
	if o.allowed && !o.postEnd {
		v.toks[slot] |= o.tokBit
		v.addrs[slot] |= o.addrBit
		if !o.holderLearned {
			v.known |= bit32(slot)
		}
	}
	return slot
}

// observeNetwork runs the network detectors around the update of the
// token's and the holder's network sets.
func (e *Engine) observeNetwork(s *tokenState, o *obs) {
	if !o.hasAddr {
		return
	}
	n := &s.core.net
	t := secs32(o.t)
	slot := o.slot
	// A new network used again, allowed, PromoteAfter after its first
	// sighting joins the token's baseline: the alert went out and nobody
	// acted.
	if slot >= 0 && o.tokLearned && o.allowed && !o.postEnd && n.known&bit(slot) == 0 &&
		e.cfg.NewNetwork.PromoteAfter > 0 && int64(t)-int64(n.first[slot]) >= int64(e.cfg.NewNetwork.PromoteAfter/time.Second) {
		n.known |= bit(slot)
	}
	// Instances: the holder's own client, inside the tenant's spaces.
	e.promote(&o.h.nets, o.hslot, o, e.cfg.NewNetwork.PromoteAfter, func() bool {
		return o.h.clients.isKnown(o.hcslot) && !e.foreign(s, o)
	})
	e.checkNewNetwork(s, o)
	if slot < 0 {
		slot = n.insert(o.key, o.v6, t)
	} else if t > n.last[slot] {
		n.last[slot] = t
	}
	if o.netAlerted {
		n.alerted |= bit(slot)
	}
	// While learning, every network of an allowed use is baseline.
	if !o.tokLearned && o.allowed && !o.postEnd {
		n.known |= bit(slot)
	}
	hs := record(&o.h.nets, o.hslot, o.key, o.v6, o)
	if o.allowed && !o.postEnd && o.h.nets.isKnown(hs) {
		h := netHash(o.key, o.v6)
		o.tn.seen.add(h)
		if !e.workNets.has(h) {
			e.workNets.add(h)
			e.learn(Fact{Kind: FactWorkNetwork, Key: h, Time: o.t})
		}
		if o.holderLearned {
			// The tenant's address spaces are those of its learnt
			// holders' baselines: a holder still learning may be
			// learning an attacker's network.
			if sp := e.spaceKey(o.key, o.v6); !o.tn.spaces.has(sp, o.v6) {
				o.tn.spaces.add(sp, o.v6)
				e.learn(Fact{Kind: FactTenantSpace, Tenant: TenantHash(s.tenant), Key: sp, V6: o.v6, Time: o.t})
			}
		}
	}
	e.checkMultiNetwork(s, o)
}
