package detect

import (
	"encoding/binary"
	"math"
	"math/bits"
	"strings"
	"time"
)

// Levels of a baseline, from the narrowest: what a token did, what its
// holder (every token the workload was issued) did, what its tenant did.
// An anomaly names the broadest level whose baseline the use broke
// (Evidence.Details["level"]).
const (
	LevelToken  = "token"
	LevelHolder = "holder"
	LevelTenant = "tenant"
)

// setSlots is how many networks (or clients) a holder remembers.
const setSlots = 32

// rolloutBits is the width of the per-value token bitmap that recognises
// a rollout (RolloutTokens at most this).
const rolloutBits = 8

// valueSet is a holder's fixed-size set of networks or clients: the
// baseline ("known") and the values seen recently, each with its first
// and last use and bitmaps of the tokens and of the instances (source
// addresses), by hash, that used it allowed. When every slot is taken the
// least recently used value outside the baseline goes first.
type valueSet struct {
	used  uint32
	known uint32
	v6    uint32
	keys  [setSlots]uint64
	first [setSlots]uint32
	last  [setSlots]uint32
	toks  [setSlots]uint8
	addrs [setSlots]uint8
}

func bit32(i int) uint32 { return 1 << uint(i) }

func (v *valueSet) find(key uint64, v6 bool) int {
	for i := 0; i < setSlots; i++ {
		if v.used&bit32(i) != 0 && v.keys[i] == key && (v.v6&bit32(i) != 0) == v6 {
			return i
		}
	}
	return -1
}

func (v *valueSet) isKnown(slot int) bool { return slot >= 0 && v.known&bit32(slot) != 0 }

func (v *valueSet) insert(key uint64, v6 bool, t uint32) int {
	victim, victimKnown := -1, true
	for i := 0; i < setSlots; i++ {
		if v.used&bit32(i) == 0 {
			victim = i
			break
		}
		known := v.known&bit32(i) != 0
		switch {
		case victim < 0,
			victimKnown && !known,
			victimKnown == known && v.last[i] < v.last[victim]:
			victim, victimKnown = i, known
		}
	}
	i := victim
	v.keys[i], v.first[i], v.last[i], v.toks[i], v.addrs[i] = key, t, t, 0, 0
	v.used |= bit32(i)
	v.known &^= bit32(i)
	if v6 {
		v.v6 |= bit32(i)
	} else {
		v.v6 &^= bit32(i)
	}
	return i
}

// countKnown is the size of the baseline.
func (v *valueSet) countKnown() int { return bits.OnesCount32(v.known) }

// bloom1k is a 1,024-bit Bloom filter (4 hashes).
type bloom1k [16]uint64

// bloom8k is an 8,192-bit Bloom filter (3 hashes).
type bloom8k [128]uint64

// bloom64k is a 65,536-bit Bloom filter (3 hashes): about 2% false
// positives at 10,000 values.
type bloom64k [1024]uint64

func (b *bloom64k) add(h uint64) {
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := uint32(0); i < 3; i++ {
		p := (h1 + i*h2) & 65535
		b[p>>6] |= 1 << (p & 63)
	}
}

func (b *bloom64k) has(h uint64) bool {
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := uint32(0); i < 3; i++ {
		p := (h1 + i*h2) & 65535
		if b[p>>6]&(1<<(p&63)) == 0 {
			return false
		}
	}
	return true
}

// mix64 is splitmix64's finaliser: a cheap, well-spread 64-bit hash.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (b *bloom1k) add(h uint64) {
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := uint32(0); i < 4; i++ {
		p := (h1 + i*h2) & 1023
		b[p>>6] |= 1 << (p & 63)
	}
}

func (b *bloom1k) has(h uint64) bool {
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := uint32(0); i < 4; i++ {
		p := (h1 + i*h2) & 1023
		if b[p>>6]&(1<<(p&63)) == 0 {
			return false
		}
	}
	return true
}

func (b *bloom8k) add(h uint64) {
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := uint32(0); i < 3; i++ {
		p := (h1 + i*h2) & 8191
		b[p>>6] |= 1 << (p & 63)
	}
}

func (b *bloom8k) has(h uint64) bool {
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := uint32(0); i < 3; i++ {
		p := (h1 + i*h2) & 8191
		if b[p>>6]&(1<<(p&63)) == 0 {
			return false
		}
	}
	return true
}

// Salts that keep networks and clients apart in one tenant filter.
const (
	saltNet4   = 0x6e657434
	saltNet6   = 0x6e657436
	saltClient = 0x636c6965
)

// holderState is what the engine remembers about one holder (a tenant's
// workload): the baselines every token of it feeds, all fixed-size.
type holderState struct {
	// learnEvents counts allowed uses of the holder's tokens (saturating).
	learnEvents uint32
	// zone is the zone of the hour profile (the first zone a token of the
	// holder claimed; 0 = UTC).
	zone uint16
	// maxConcurrent is the most networks one token of the holder used at
	// once while the holder learnt.
	maxConcurrent uint8
	// firstSeen is the event time of the first allowed use (0 = none).
	firstSeen int64
	nets      valueSet
	clients   valueSet
	hours     hourProfile
	// actions are the actions done in the current generation (started at
	// actGen) and the previous one: an action in neither is new.
	actions [2]bloom1k
	actGen  int64
	vol     holderVolume
	// breadth is the most distinct resources one token touched on one
	// route within a sweep window, decaying (half-life a week), and when
	// it was last updated (Unix seconds).
	breadth   float64
	breadthAt int64
	// denied is the most distinct actions one token was denied with a
	// probing reason within scope_probing.horizon, outside probing, in
	// the current week (started at deniedGen) and the one before.
	denied    [2]uint8
	deniedGen int64
}

// holderVolume is the holder's per-token rate baseline: the busiest
// minute of any of its tokens, and of its sensitive routes, decaying.
type holderVolume struct {
	since  int64 // event time of the first use (Unix seconds)
	minute int64 // minute of the last decay
	peak   float64
	sPeak  float64
}

// decayTo decays the peaks to minute m.
func (v *holderVolume) decayTo(m int64, halfLifeMin float64) {
	if m > v.minute {
		f := math.Exp2(-float64(m-v.minute) / halfLifeMin)
		v.peak *= f
		v.sPeak *= f
		v.minute = m
	}
}

// learned reports whether the holder's baseline is trusted at t.
func (h *holderState) learned(t int64, l LearningConfig) bool {
	if h.firstSeen == 0 {
		return false
	}
	return int(h.learnEvents) >= l.MinEvents && time.Duration(t-h.firstSeen)*time.Second >= l.MinAge
}

// breadthHalfLife is how fast a holder's sweep breadth decays.
const breadthHalfLife = 7 * 24 * 3600

// deniedWeek is the length of a generation of the holder's usual count
// of denied actions: the usual is the most of the last one to two weeks.
const deniedWeek = 7 * 24 * 3600

// rollDenied starts a new generation of the usual count when a week has
// passed.
func (h *holderState) rollDenied(t int64) {
	switch {
	case h.deniedGen == 0 || t-h.deniedGen >= 2*deniedWeek:
		h.denied, h.deniedGen = [2]uint8{}, t
	case t-h.deniedGen >= deniedWeek:
		h.denied[1], h.denied[0], h.deniedGen = h.denied[0], 0, t
	}
}

// deniedNow returns the holder's usual count of distinct denied actions
// of one token within the probing horizon: the most of this week and the
// one before.
func (h *holderState) deniedNow(t int64) int {
	h.rollDenied(t)
	return int(max(h.denied[0], h.denied[1]))
}

// teachDenied records that one token was denied n distinct actions
// within the horizon, at t, without probing.
func (h *holderState) teachDenied(n int, t int64) {
	h.rollDenied(t)
	h.denied[0] = max(h.denied[0], uint8(min(n, 255)))
}

// breadthAt returns the holder's breadth decayed to t.
func (h *holderState) breadthNow(t int64) float64 {
	if h.breadth == 0 || t <= h.breadthAt {
		return h.breadth
	}
	return h.breadth * math.Exp2(-float64(t-h.breadthAt)/breadthHalfLife)
}

// teachBreadth records n distinct resources in one window at t.
func (h *holderState) teachBreadth(n float64, t int64) {
	b := h.breadthNow(t)
	if t > h.breadthAt {
		h.breadthAt = t
	}
	h.breadth = max(b, n)
}

// tenantState is a tenant's baseline: the networks and clients its
// holders' baselines hold, in one Bloom filter (false positives make a
// level "holder" instead of "tenant", never an alert); the address
// spaces its learnt holders' baselines hold, exactly (a false positive
// there would hide a foreign network); and how much allowed use it has
// seen, to know when it is learnt.
type tenantState struct {
	learnEvents uint32
	firstSeen   int64
	spaces      spaceSet
	seen        bloom8k
}

// tenantSpaces is how many address spaces a tenant remembers; past it
// the oldest added is forgotten (and re-learnt at its next use).
const tenantSpaces = 32

// spaceSet is a tenant's address spaces (Config.AddressSpace keys).
type spaceSet struct {
	keys [tenantSpaces]uint64
	used uint32
	v6   uint32
	next uint8
}

func (s *spaceSet) has(key uint64, v6 bool) bool {
	for i := 0; i < tenantSpaces; i++ {
		if s.used&bit32(i) != 0 && s.keys[i] == key && (s.v6&bit32(i) != 0) == v6 {
			return true
		}
	}
	return false
}

func (s *spaceSet) add(key uint64, v6 bool) {
	if s.has(key, v6) {
		return
	}
	i := int(s.next) % tenantSpaces
	s.next = uint8((i + 1) % tenantSpaces)
	s.keys[i] = key
	s.used |= bit32(i)
	if v6 {
		s.v6 |= bit32(i)
	} else {
		s.v6 &^= bit32(i)
	}
}

// learned reports whether the tenant's baseline is trusted at t (the
// holder thresholds over all its holders' uses).
func (tn *tenantState) learned(t int64, l LearningConfig) bool {
	if tn.firstSeen == 0 {
		return false
	}
	return int(tn.learnEvents) >= l.MinEvents && time.Duration(t-tn.firstSeen)*time.Second >= l.MinAge
}

// holderKey builds "tenant\x00holder" into buf.
func holderKey(buf []byte, tenant, holder string) []byte {
	buf = append(buf[:0], tenant...)
	buf = append(buf, 0)
	return append(buf, holder...)
}

// splitHolderKey is the inverse of holderKey.
func splitHolderKey(k string) (tenant, holder string) {
	tenant, holder, _ = strings.Cut(k, "\x00")
	return tenant, holder
}

// netHash is the filter hash of a network key.
func netHash(key uint64, v6 bool) uint64 {
	if v6 {
		return mix64(key ^ saltNet6)
	}
	return mix64(key ^ saltNet4)
}

// clientFamily is the family of a normalised client: "curl/8" → "curl".
func clientFamily(c string) string {
	if i := strings.IndexByte(c, '/'); i >= 0 {
		return c[:i]
	}
	return c
}

// fnv64 hashes a string (FNV-1a 64).
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// tokenBit picks a token's bit in a value's rollout bitmap.
func tokenBit(id string) uint8 { return 1 << (fnv64(id) % rolloutBits) }

// addrBit picks a source address's bit in a value's instance bitmap.
func addrBit(addr string) uint8 { return 1 << (mix64(fnv64(addr)) % rolloutBits) }

// sourceState is a source network's count of decisions naming no token,
// in forging_burst's window and in its slow window.
type sourceState struct {
	start  int64 // window start, Unix seconds
	count  uint64
	cool   int64 // last alert
	sStart int64 // slow window start
	sCount uint64
}

// sourceKey is the table key of a source network.
func sourceKey(buf []byte, key uint64, v6 bool) []byte {
	buf = binary.BigEndian.AppendUint64(buf[:0], key)
	if v6 {
		return append(buf, 6)
	}
	return append(buf, 4)
}
