package detect

import (
	"encoding/binary"
	"net/netip"

	"github.com/cordonhq/cordon/pkg/events"
)

// Keys of Evidence.Details that every token anomaly carries when the
// baseline judging the token holds networks, so that a responder without
// baselines (the revoker's quarantine, events.StepNarrow) knows where the
// token may still be used from.
const (
	// DetailKnownNetworks lists the known networks of the baseline that
	// judges the token — its holder's once the holder is learnt, else the
	// token's own once the token is learnt — as comma-separated CIDR
	// prefixes in the engine's network size (Config.IPv4Prefix,
	// Config.IPv6Prefix), most recently used first, at most
	// MaxKnownNetworks. Only baseline networks (learnt, promoted, settled
	// by issuance) are listed, never one merely seen. The key is absent
	// when that baseline holds none or neither level is learnt, and from
	// source-level anomalies (forging_burst).
	DetailKnownNetworks = events.DetailKnownNetworks
	// DetailKnownNetworksLevel is the level of the baseline listed in
	// DetailKnownNetworks: LevelHolder or LevelToken.
	DetailKnownNetworksLevel = "known_networks_level"
)

// MaxKnownNetworks bounds the networks listed in DetailKnownNetworks
// (events.MaxRestrictNetworks bounds a quarantine's at more).
const MaxKnownNetworks = 16

// knownNet is one network of a baseline, for ordering.
type knownNet struct {
	key  uint64
	last uint32
	v6   bool
}

// before orders networks by last use, most recent first; ties (the same
// second) IPv4 first, then by address, so the order depends only on the
// baseline's contents.
func (a knownNet) before(b knownNet) bool {
	if a.last != b.last {
		return a.last > b.last
	}
	if a.v6 != b.v6 {
		return !a.v6
	}
	return a.key < b.key
}

// knownNetworks formats Details[DetailKnownNetworks] for the event: the
// known networks of the baseline that judges the token (as
// obs.knownNetworkJudged chooses it, though a token still learning has
// none), and that baseline's level; "" when there are none. It is called
// only when an anomaly is emitted and allocates only the returned string.
func (e *Engine) knownNetworks(s *tokenState, o *obs) (list, level string) {
	var nets [setSlots]knownNet
	n := 0
	switch {
	case o.holderLearned:
		v := &o.h.nets
		for i := 0; i < setSlots; i++ {
			if v.known&bit32(i) != 0 {
				nets[n] = knownNet{key: v.keys[i], last: v.last[i], v6: v.v6&bit32(i) != 0}
				n++
			}
		}
		level = LevelHolder
	case o.tokLearned:
		t := &s.core.net
		for i := 0; i < maxNetworks; i++ {
			if t.known&bit(i) != 0 {
				nets[n] = knownNet{key: t.keys[i], last: t.last[i], v6: t.v6&bit(i) != 0}
				n++
			}
		}
		level = LevelToken
	}
	if n == 0 {
		return "", ""
	}
	// Insertion sort: at most 32 networks, and no allocation.
	for i := 1; i < n; i++ {
		for j := i; j > 0 && nets[j].before(nets[j-1]); j-- {
			nets[j], nets[j-1] = nets[j-1], nets[j]
		}
	}
	n = min(n, MaxKnownNetworks)
	var buf [MaxKnownNetworks * len("ffff:ffff:ffff:ffff::/64,")]byte
	b := buf[:0]
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendNet(b, nets[i].key, nets[i].v6, e.cfg.IPv4Prefix, e.cfg.IPv6Prefix)
	}
	return string(b), level
}

// appendNet appends a network key as a prefix, as netString formats it.
func appendNet(b []byte, key uint64, v6 bool, p4, p6 int) []byte {
	if !v6 {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], uint32(key))
		return netip.PrefixFrom(netip.AddrFrom4(a), p4).AppendTo(b)
	}
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], key)
	return netip.PrefixFrom(netip.AddrFrom16(a), p6).AppendTo(b)
}
