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
	id   string
	// tenant and holder are interned names.
	tenant string
	holder string
}

// tokenCore is the numeric part of a token's state: baselines, detector
// windows and cooldowns. Times are Unix seconds in event time.
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
	probe probeState
	hours hourProfile
	// cool is the event time of the last alert per detector.
	cool [numDetectors]int64
}

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
// the same workload with a fresh secret. Lifecycle, cooldowns and probing
// windows are not inherited.
func (c *tokenCore) inherit(p *tokenCore) {
	c.firstSeen = p.firstSeen
	c.learnEvents = p.learnEvents
	c.net = p.net
	c.hours = p.hours
	c.vol = p.vol
	c.vol.count, c.vol.flagged, c.vol.hasPending = 0, 0, 0
}

// chunkBits sizes the slabs the table grows by; slabs never move, so a
// growing table never copies state.
const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
)

// link places a token in the least-recently-seen list (indices into the
// table, -1 none): prev is more recently seen, next less recently seen.
// Links live apart from the states, densely, so that moving a token to the
// front does not pull its neighbours' whole states into the cache.
type link struct{ prev, next int32 }

type chunk struct {
	states [chunkSize]tokenState
	links  [chunkSize]link
}

// table holds token states in fixed slabs, indexed by token id, linked in
// least-recently-seen order, with at most max entries.
type table struct {
	index   map[string]int32
	chunks  []*chunk
	n       int32
	head    int32 // most recently seen
	tail    int32 // least recently seen
	max     int
	evicted uint64
}

func newTable(max int) table {
	return table{index: make(map[string]int32), head: -1, tail: -1, max: max}
}

func (t *table) find(id string) (int32, bool) {
	i, ok := t.index[id]
	return i, ok
}

func (t *table) at(i int32) *tokenState { return &t.chunks[i>>chunkBits].states[i&(chunkSize-1)] }

func (t *table) link(i int32) *link { return &t.chunks[i>>chunkBits].links[i&(chunkSize-1)] }

func (t *table) len() int { return len(t.index) }

// touch returns the token's state, marked most recently seen, creating it
// (and evicting the least recently seen token when full) if needed.
func (t *table) touch(id string) (s *tokenState, created bool) {
	if i, ok := t.find(id); ok {
		t.moveFront(i)
		return t.at(i), false
	}
	return t.create(id), true
}

// lookup returns the token's state without touching it, or nil.
func (t *table) lookup(id string) *tokenState {
	if i, ok := t.find(id); ok {
		return t.at(i)
	}
	return nil
}

func (t *table) create(id string) *tokenState {
	var i int32
	if t.len() >= t.max && t.tail >= 0 {
		i = t.tail
		t.unlink(i)
		delete(t.index, t.at(i).id)
		t.evicted++
	} else {
		i = t.n
		t.n++
		if int(i>>chunkBits) == len(t.chunks) {
			t.chunks = append(t.chunks, new(chunk))
		}
	}
	s := t.at(i)
	// Own the id: the caller's string may pin a whole decoded message.
	*s = tokenState{id: strings.Clone(id)}
	t.index[s.id] = i
	t.pushFront(i)
	return s
}

func (t *table) unlink(i int32) {
	l := t.link(i)
	if l.prev >= 0 {
		t.link(l.prev).next = l.next
	} else {
		t.head = l.next
	}
	if l.next >= 0 {
		t.link(l.next).prev = l.prev
	} else {
		t.tail = l.prev
	}
	l.prev, l.next = -1, -1
}

func (t *table) pushFront(i int32) {
	l := t.link(i)
	l.prev, l.next = -1, t.head
	if t.head >= 0 {
		t.link(t.head).prev = i
	}
	t.head = i
	if t.tail < 0 {
		t.tail = i
	}
}

func (t *table) moveFront(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
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
