package detect

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
)

// Snapshot errors callers may branch on.
var (
	// ErrSnapshot means the snapshot is truncated, corrupt or not one.
	ErrSnapshot = errors.New("bad detector snapshot")
	// ErrSnapshotVersion means the snapshot was written by a build whose
	// state layout this build does not read.
	ErrSnapshotVersion = errors.New("unsupported detector snapshot version")
)

// snapshotMagic opens every snapshot; snapshotVersion changes whenever the
// layout of the state does. Older versions (1: per-token baselines only;
// 2: without the episode, slow-probing, sliding-sweep, tenant-learning and
// workload-network state) are not read: Restore reports
// ErrSnapshotVersion and callers start fresh.
const (
	snapshotMagic   = "CORDONDT"
	snapshotVersion = 3
	maxSnapString   = 1 << 12
)

// Snapshot writes the engine's state — every tracked token's baselines,
// windows, lifecycle, risk signals and cooldowns, every holder's and
// tenant's baselines and every followed source, each table least recently
// seen first, and the filter of workload networks — in a versioned binary
// format ending with a CRC-32. It holds the engine's lock while writing.
func (e *Engine) Snapshot(w io.Writer) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	enc := &encoder{w: bufio.NewWriterSize(w, 1<<16), crc: crc32.NewIEEE()}
	enc.raw([]byte(snapshotMagic))
	enc.uvarint(snapshotVersion)
	enc.uvarint(maxNetworks)
	enc.uvarint(uint64(numDetectors))
	enc.uvarint(setSlots)
	enc.uvarint(uint64(len(e.zones.names)))
	for _, n := range e.zones.names {
		enc.str(n)
	}
	enc.uvarint(uint64(len(e.clients)))
	for h, n := range e.clients {
		enc.u64(&h)
		enc.str(n)
	}
	enc.uvarint(uint64(e.tab.len()))
	enc.flush()
	for i := e.tab.tail; i >= 0 && enc.err == nil; i = e.tab.link(i).prev {
		s := e.tab.at(i)
		enc.str(e.tab.key(i))
		enc.str(s.tenant)
		enc.str(s.holder)
		enc.uvarint(uint64(s.zone))
		s.core.visit(enc)
		enc.flush()
	}
	enc.uvarint(uint64(e.holders.len()))
	for i := e.holders.tail; i >= 0 && enc.err == nil; i = e.holders.link(i).prev {
		enc.str(e.holders.key(i))
		e.holders.at(i).visit(enc)
		enc.flush()
	}
	enc.uvarint(uint64(e.tenants.len()))
	for i := e.tenants.tail; i >= 0 && enc.err == nil; i = e.tenants.link(i).prev {
		enc.str(e.tenants.key(i))
		e.tenants.at(i).visit(enc)
		enc.flush()
	}
	enc.uvarint(uint64(e.sources.len()))
	for i := e.sources.tail; i >= 0 && enc.err == nil; i = e.sources.link(i).prev {
		enc.str(e.sources.key(i))
		e.sources.at(i).visit(enc)
		enc.flush()
	}
	e.workNets.visit(enc)
	enc.flush()
	if enc.err == nil {
		var sum [4]byte
		binary.LittleEndian.PutUint32(sum[:], enc.crc.Sum32())
		_, enc.err = enc.w.Write(sum[:])
	}
	if enc.err == nil {
		enc.err = enc.w.Flush()
	}
	if enc.err != nil {
		return fmt.Errorf("write detector snapshot: %w", enc.err)
	}
	return nil
}

// restoreTable reads count entries of one table: key, then what read
// decodes into the entry's state. When count exceeds the table's bound,
// the most recently seen entries are kept.
func restoreTable[S any](dec *decoder, t *table[S], what string, read func(key string, s *S) bool) {
	count := dec.uvarint()
	skip := uint64(0)
	if count > uint64(t.max) {
		skip = count - uint64(t.max)
	}
	var scratch S
	for i := uint64(0); i < count && dec.err == nil; i++ {
		key := dec.str()
		if dec.err != nil {
			return
		}
		if i < skip {
			if !read(key, &scratch) {
				return
			}
			continue
		}
		if _, dup := t.find(key); dup || key == "" {
			dec.fail("%s key %q repeated or empty", what, key)
			return
		}
		if !read(key, t.at(t.create(key))) {
			return
		}
	}
}

// Restore replaces the engine's state with a snapshot. When the snapshot
// holds more tokens (holders, tenants, sources) than the bounds, the most
// recently seen are kept. On error the engine's state is left as it was; a
// snapshot of an older build gives ErrSnapshotVersion.
func (e *Engine) Restore(r io.Reader) error {
	dec := &decoder{r: bufio.NewReaderSize(r, 1<<16), crc: crc32.NewIEEE()}
	magic := make([]byte, len(snapshotMagic))
	dec.read(magic)
	if dec.err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("%w: not a detector snapshot", ErrSnapshot)
	}
	if v := dec.uvarint(); v != snapshotVersion {
		if v < snapshotVersion {
			return fmt.Errorf("%w: checkpoint from an older build (version %d, this build reads %d)", ErrSnapshotVersion, v, snapshotVersion)
		}
		return fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshotVersion, v, snapshotVersion)
	}
	if n, d, h := dec.uvarint(), dec.uvarint(), dec.uvarint(); n != maxNetworks || d != uint64(numDetectors) || h != setSlots {
		return fmt.Errorf("%w: layout with %d networks, %d detectors and %d holder slots, this build has %d, %d and %d",
			ErrSnapshotVersion, n, d, h, maxNetworks, numDetectors, setSlots)
	}

	zones := newZoneTable()
	nz := dec.uvarint()
	if nz == 0 || nz > maxZones {
		dec.fail("zone count %d", nz)
		nz = 0 // never size anything by a count that failed its check
	}
	remap := make([]uint16, 0, nz)
	for i := uint64(0); i < nz && dec.err == nil; i++ {
		name := dec.str()
		if i == 0 {
			remap = append(remap, 0)
			continue
		}
		remap = append(remap, zones.lookup(name))
	}
	clients := clientNames{}
	nc := dec.uvarint()
	if nc > maxClientNames {
		dec.fail("client name count %d", nc)
	}
	for i := uint64(0); i < nc && dec.err == nil; i++ {
		var hb [8]byte
		dec.read(hb[:])
		clients.put(binary.LittleEndian.Uint64(hb[:]), dec.str())
	}
	names := interner{}
	tab := newTable[tokenState](e.cfg.MaxTokens)
	restoreTable(dec, &tab, "token", func(_ string, s *tokenState) bool {
		tenant, holder := dec.str(), dec.str()
		zone := dec.uvarint()
		dec.fixed(&s.core, tokenCoreSize)
		if dec.err != nil {
			return false
		}
		if zone >= uint64(len(remap)) {
			dec.fail("zone index %d of %d", zone, len(remap))
			return false
		}
		s.tenant, s.holder, s.zone = names.get(tenant), names.get(holder), remap[zone]
		return true
	})
	holders := newTable[holderState](e.cfg.MaxHolders)
	restoreTable(dec, &holders, "holder", func(_ string, h *holderState) bool {
		dec.fixed(h, holderStateSize)
		if dec.err == nil && int(h.zone) >= len(remap) {
			dec.fail("holder zone index %d of %d", h.zone, len(remap))
		}
		if dec.err != nil {
			return false
		}
		h.zone = remap[h.zone]
		return true
	})
	tenants := newTable[tenantState](e.cfg.MaxTenants)
	restoreTable(dec, &tenants, "tenant", func(_ string, t *tenantState) bool {
		dec.fixed(t, tenantStateSize)
		return dec.err == nil
	})
	sources := newTable[sourceState](e.cfg.MaxSources)
	restoreTable(dec, &sources, "source", func(_ string, s *sourceState) bool {
		dec.fixed(s, sourceStateSize)
		return dec.err == nil
	})
	var work bloom64k
	dec.fixed(&work, workNetsSize)
	if dec.err == nil {
		want := dec.crc.Sum32()
		var sum [4]byte
		if _, err := io.ReadFull(dec.r, sum[:]); err != nil {
			dec.err = fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		} else if binary.LittleEndian.Uint32(sum[:]) != want {
			dec.fail("checksum mismatch")
		}
	}
	if dec.err != nil {
		if errors.Is(dec.err, ErrSnapshot) {
			return dec.err
		}
		return fmt.Errorf("%w: %v", ErrSnapshot, dec.err)
	}
	e.mu.Lock()
	e.tab, e.holders, e.tenants, e.sources = tab, holders, tenants, sources
	e.workNets = work
	e.zones, e.names, e.clients = zones, names, clients
	e.told = map[string]bool{}
	e.shareAll()
	e.mu.Unlock()
	return nil
}

// visitor walks the numeric fields of a state; the same walk encodes and
// decodes, so the two cannot drift apart.
type visitor interface {
	i64(*int64)
	u64(*uint64)
	u32(*uint32)
	u16(*uint16)
	u8(*uint8)
	f64(*float64)
	raw([]byte)
}

// visitable is a fixed-size state the snapshot walks.
type visitable interface{ visit(visitor) }

func (c *tokenCore) visit(v visitor) {
	v.i64(&c.firstSeen)
	v.u32(&c.learnEvents)
	v.u8(&c.flags)
	v.i64(&c.endAt)
	v.u8(&c.endKind)
	for i := range c.cool {
		v.i64(&c.cool[i])
	}
	n := &c.net
	for i := 0; i < maxNetworks; i++ {
		v.u64(&n.keys[i])
		v.u32(&n.first[i])
		v.u32(&n.last[i])
	}
	v.u16(&n.used)
	v.u16(&n.known)
	v.u16(&n.v6)
	v.u16(&n.alerted)
	v.u8(&n.maxConcurrent)
	c.vol.visit(v)
	cl := &c.cli
	for i := range cl.keys {
		v.u64(&cl.keys[i])
	}
	v.u8(&cl.used)
	v.u8(&cl.known)
	v.u8(&cl.next)
	v.u8(&cl.alerted)
	v.u64(&c.iss.net)
	v.u64(&c.iss.client)
	v.u8(&c.iss.flags)
	p := &c.probe
	for i := range p.seen {
		v.u32(&p.seen[i])
		v.u32(&p.at[i])
		v.u32(&p.slow[i])
		v.u32(&p.slowAt[i])
	}
	v.u8(&p.slowAlarm)
	for i := range p.enum {
		r := &p.enum[i]
		v.u32(&r.key)
		v.u16(&r.run)
		v.u64(&r.last)
		v.i64(&r.start)
		v.u8(&r.learnt)
	}
	for i := range c.sweep {
		w := &c.sweep[i]
		v.u32(&w.key)
		v.u32(&w.start)
		v.u16(&w.denied)
		v.u8(&w.flagged)
		v.u16(&w.pending)
		for j := range w.bits {
			v.u64(&w.bits[j])
			v.u64(&w.prev[j])
		}
	}
	rk := &c.risk
	for i := range rk.at {
		v.u32(&rk.at[i])
	}
	v.raw(rk.w[:])
	v.raw(rk.lvl[:])
	v.u32(&rk.alertAt)
	v.u16(&rk.raised)
	v.u8(&rk.acts)
	v.u32(&rk.actsAt)
}

func (vol *volumeState) visit(v visitor) {
	v.i64(&vol.since)
	v.i64(&vol.minute)
	v.u32(&vol.count)
	v.u8(&vol.flagged)
	v.u32(&vol.pending)
	v.u8(&vol.hasPending)
	v.f64(&vol.peak)
	v.f64(&vol.mean)
	v.i64(&vol.sMinute)
	v.u32(&vol.sCount)
	v.u8(&vol.sFlagged)
}

func (s *valueSet) visit(v visitor) {
	v.u32(&s.used)
	v.u32(&s.known)
	v.u32(&s.v6)
	for i := 0; i < setSlots; i++ {
		v.u64(&s.keys[i])
		v.u32(&s.first[i])
		v.u32(&s.last[i])
	}
	v.raw(s.toks[:])
	v.raw(s.addrs[:])
}

func (h *holderState) visit(v visitor) {
	v.u32(&h.learnEvents)
	v.u16(&h.zone)
	v.u8(&h.maxConcurrent)
	v.i64(&h.firstSeen)
	h.nets.visit(v)
	h.clients.visit(v)
	v.raw(h.hours[:])
	for g := range h.actions {
		for i := range h.actions[g] {
			v.u64(&h.actions[g][i])
		}
	}
	v.i64(&h.actGen)
	v.i64(&h.vol.since)
	v.i64(&h.vol.minute)
	v.f64(&h.vol.peak)
	v.f64(&h.vol.sPeak)
	v.f64(&h.breadth)
	v.i64(&h.breadthAt)
	v.raw(h.denied[:])
	v.i64(&h.deniedGen)
}

func (t *tenantState) visit(v visitor) {
	v.u32(&t.learnEvents)
	v.i64(&t.firstSeen)
	for i := range t.spaces.keys {
		v.u64(&t.spaces.keys[i])
	}
	v.u32(&t.spaces.used)
	v.u32(&t.spaces.v6)
	v.u8(&t.spaces.next)
	for i := range t.seen {
		v.u64(&t.seen[i])
	}
}

func (s *sourceState) visit(v visitor) {
	v.i64(&s.start)
	v.u64(&s.count)
	v.i64(&s.cool)
	v.i64(&s.sStart)
	v.u64(&s.sCount)
}

func (b *bloom64k) visit(v visitor) {
	for i := range b {
		v.u64(&b[i])
	}
}

// encoder appends to buf; flush hands buf to the checksum and the writer
// in one piece (per token), which keeps snapshots fast.
type encoder struct {
	w   *bufio.Writer
	crc hash.Hash32
	buf []byte
	err error
}

func (e *encoder) flush() {
	if e.err == nil && len(e.buf) > 0 {
		e.crc.Write(e.buf)
		_, e.err = e.w.Write(e.buf)
	}
	e.buf = e.buf[:0]
}

func (e *encoder) raw(b []byte)     { e.buf = append(e.buf, b...) }
func (e *encoder) uvarint(x uint64) { e.buf = binary.AppendUvarint(e.buf, x) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }
func (e *encoder) i64(p *int64)     { e.buf = binary.LittleEndian.AppendUint64(e.buf, uint64(*p)) }
func (e *encoder) u64(p *uint64)    { e.buf = binary.LittleEndian.AppendUint64(e.buf, *p) }
func (e *encoder) u32(p *uint32)    { e.buf = binary.LittleEndian.AppendUint32(e.buf, *p) }
func (e *encoder) u16(p *uint16)    { e.buf = binary.LittleEndian.AppendUint16(e.buf, *p) }
func (e *encoder) u8(p *uint8)      { e.buf = append(e.buf, *p) }
func (e *encoder) f64(p *float64) {
	e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(*p))
}

// sizeOf is the encoded size of a state.
func sizeOf(x visitable) int {
	var e encoder
	x.visit(&e)
	return len(e.buf)
}

// Encoded sizes of the states.
var (
	tokenCoreSize   = sizeOf(&tokenCore{})
	holderStateSize = sizeOf(&holderState{})
	tenantStateSize = sizeOf(&tenantState{})
	sourceStateSize = sizeOf(&sourceState{})
	workNetsSize    = sizeOf(&bloom64k{})
)

// decoder reads the header and strings from r; a token's core is read
// whole into block and decoded from there.
type decoder struct {
	r     *bufio.Reader
	crc   hash.Hash32
	buf   [8]byte
	block []byte
	off   int
	err   error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, args...)...)
	}
}

func (d *decoder) read(b []byte) {
	if d.err != nil {
		return
	}
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
		return
	}
	d.crc.Write(b)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	for shift := 0; shift < 64; shift += 7 {
		b, err := d.r.ReadByte()
		if err != nil {
			d.err = fmt.Errorf("%w: truncated: %v", ErrSnapshot, err)
			return 0
		}
		d.buf[0] = b
		d.crc.Write(d.buf[:1])
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x
		}
	}
	d.fail("varint overflows")
	return 0
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > maxSnapString {
		d.fail("string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	d.read(b)
	return string(b)
}

// fixed decodes one fixed-size state from the stream: its encoded bytes
// are read whole, then walked.
func (d *decoder) fixed(x visitable, n int) {
	if cap(d.block) < n {
		d.block = make([]byte, n)
	}
	d.block, d.off = d.block[:n], 0
	d.read(d.block)
	if d.err == nil {
		x.visit(d)
	}
}

func (d *decoder) take(n int) []byte {
	b := d.block[d.off : d.off+n]
	d.off += n
	return b
}

func (d *decoder) raw(b []byte)   { copy(b, d.take(len(b))) }
func (d *decoder) i64(p *int64)   { *p = int64(binary.LittleEndian.Uint64(d.take(8))) }
func (d *decoder) u64(p *uint64)  { *p = binary.LittleEndian.Uint64(d.take(8)) }
func (d *decoder) u32(p *uint32)  { *p = binary.LittleEndian.Uint32(d.take(4)) }
func (d *decoder) u16(p *uint16)  { *p = binary.LittleEndian.Uint16(d.take(2)) }
func (d *decoder) u8(p *uint8)    { *p = d.take(1)[0] }
func (d *decoder) f64(p *float64) { *p = math.Float64frombits(binary.LittleEndian.Uint64(d.take(8))) }
