package detect

import (
	"strings"
	"time"
)

// tokenState is everything the engine remembers about one token. All of it
// has a fixed size: the strings are the token id (owned by the engine) and
// the interned tenant and holder names.
//
// Fields are ordered by use: what every event reads or writes comes first,
// so that an event touches few cache lines of a large table.
type tokenState struct {
	// zone indexes the engine's zone table (0 = UTC).
	zone uint16
	core tokenCore
	// tenant and holder are interned names.
	tenant string
	holder string
}

// tokenCore is the numeric part of a token's state: baselines, detector
// windows, risk signals and cooldowns. Times are Unix seconds in event
// time. The hour profile lives with the holder.
type tokenCore struct {
	// learnEvents counts allowed uses (saturating).
	learnEvents uint32
	// flags: flagLedger when the ledger told us about the token.
	flags uint8
	// endKind says how endAt became known.
	endKind uint8
	// firstSeen is the event time of the first allowed use (0 = none).
	firstSeen int64
	// endAt is the earliest known end of the token (revoked, retired by
	// rotation, expired; 0 = none).
	endAt int64
	vol   volumeState
	net   netState
	cli   clientState
	iss   issuance
	probe probeState
	sweep [sweepTrackers]sweepTracker
	risk  riskState
	// cool is the event time of the last alert per detector.
	cool [numDetectors]int64
}

// tokenClients is how many clients a token remembers.
const tokenClients = 4

// clientState is a token's own few clients (family hashes), those of its
// baseline marked known.
type clientState struct {
	keys    [tokenClients]uint64
	used    uint8
	known   uint8
	next    uint8 // round-robin slot to replace
	alerted uint8 // new_client reported the slot's client for the token
}

func (c *clientState) find(key uint64) int {
	for i := 0; i < tokenClients; i++ {
		if c.used&(1<<i) != 0 && c.keys[i] == key {
			return i
		}
	}
	return -1
}

func (c *clientState) insert(key uint64) int {
	i := -1
	for j := 0; j < tokenClients; j++ {
		if c.used&(1<<j) == 0 {
			i = j
			break
		}
	}
	if i < 0 {
		// Replace round-robin, sparing the baseline while it can.
		for k := 0; k < tokenClients; k++ {
			j := int(c.next+uint8(k)) % tokenClients
			if c.known&(1<<j) == 0 {
				i = j
				break
			}
		}
		if i < 0 {
			i = int(c.next) % tokenClients
		}
		c.next = uint8((i + 1) % tokenClients)
	}
	c.keys[i] = key
	c.used |= 1 << i
	c.known &^= 1 << i
	c.alerted &^= 1 << i
	return i
}

// issuance is where the token was requested from (TokenIssued.Requested).
type issuance struct {
	net    uint64
	client uint64 // family hash, 0 = unknown
	flags  uint8  // issNet, issV6
}

const (
	issNet = 1 << 0
	issV6  = 1 << 1
)

const flagLedger = 1 << 0

// learned reports whether the token's baseline is trusted at t.
func (c *tokenCore) learned(t int64, l LearningConfig) bool {
	if c.firstSeen == 0 {
		return l.MinEvents == 0 && l.MinAge == 0
	}
	return int(c.learnEvents) >= l.MinEvents && time.Duration(t-c.firstSeen)*time.Second >= l.MinAge
}

// used reports whether the token has been seen in any usage event.
func (c *tokenCore) used() bool { return c.firstSeen != 0 || c.vol.since != 0 }

// inherit copies the baselines of a rotated predecessor: the successor is
// the same workload with a fresh secret. Lifecycle, cooldowns, probing
// windows and risk signals are not inherited; the issuance context is the
// successor's own.
func (c *tokenCore) inherit(p *tokenCore) {
	c.firstSeen = p.firstSeen
	c.learnEvents = p.learnEvents
	c.net = p.net
	c.cli = p.cli
	c.vol = p.vol
	c.vol.count, c.vol.flagged, c.vol.hasPending = 0, 0, 0
	c.vol.sCount, c.vol.sFlagged = 0, 0
}

// maxInterned bounds the tenant/holder name table; past it names are
// copied per token instead of shared.
const maxInterned = 1 << 16

// interner shares the few distinct tenant and holder names among tokens.
type interner map[string]string

func (m interner) get(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := m[s]; ok {
		return v
	}
	v := strings.Clone(s)
	if len(m) < maxInterned {
		m[v] = v
	}
	return v
}

// maxZones bounds the zone table; further zones fall back to UTC.
const maxZones = 1024

// zoneTable maps IANA zone names to small indices; index 0 is UTC and so is
// any zone that does not load.
type zoneTable struct {
	names []string
	locs  []*time.Location
	index map[string]uint16
}

func newZoneTable() zoneTable {
	return zoneTable{names: []string{""}, locs: []*time.Location{time.UTC}, index: map[string]uint16{"": 0, "UTC": 0}}
}

func (z *zoneTable) lookup(name string) uint16 {
	if i, ok := z.index[name]; ok {
		return i
	}
	if len(z.names) >= maxZones {
		return 0
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		z.index[strings.Clone(name)] = 0
		return 0
	}
	i := uint16(len(z.names))
	name = strings.Clone(name)
	z.names = append(z.names, name)
	z.locs = append(z.locs, loc)
	z.index[name] = i
	return i
}

func (z *zoneTable) loc(i uint16) *time.Location {
	if int(i) < len(z.locs) {
		return z.locs[i]
	}
	return time.UTC
}

func (z *zoneTable) name(i uint16) string {
	if i == 0 || int(i) >= len(z.names) {
		return "UTC"
	}
	return z.names[i]
}
