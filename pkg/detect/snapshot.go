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
// layout of tokenCore does.
const (
	snapshotMagic   = "CORDONDT"
	snapshotVersion = 1
	maxSnapString   = 1 << 12
)

// Snapshot writes the engine's state — every tracked token's baselines,
// windows, lifecycle and cooldowns, least recently seen first — in a
// versioned binary format ending with a CRC-32. It holds the engine's lock
// while writing.
func (e *Engine) Snapshot(w io.Writer) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	enc := &encoder{w: bufio.NewWriterSize(w, 1<<16), crc: crc32.NewIEEE()}
	enc.raw([]byte(snapshotMagic))
	enc.uvarint(snapshotVersion)
	enc.uvarint(maxNetworks)
	enc.uvarint(uint64(numDetectors))
	enc.uvarint(uint64(len(e.zones.names)))
	for _, n := range e.zones.names {
		enc.str(n)
	}
	enc.uvarint(uint64(e.tab.len()))
	enc.flush()
	for i := e.tab.tail; i >= 0 && enc.err == nil; i = e.tab.link(i).prev {
		s := e.tab.at(i)
		enc.str(s.id)
		enc.str(s.tenant)
		enc.str(s.holder)
		enc.uvarint(uint64(s.zone))
		s.core.visit(enc)
		enc.flush()
	}
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

// Restore replaces the engine's state with a snapshot. When the snapshot
// holds more tokens than MaxTokens, the most recently seen are kept. On
// error the engine's state is left as it was.
func (e *Engine) Restore(r io.Reader) error {
	dec := &decoder{r: bufio.NewReaderSize(r, 1<<16), crc: crc32.NewIEEE()}
	magic := make([]byte, len(snapshotMagic))
	dec.read(magic)
	if dec.err != nil || string(magic) != snapshotMagic {
		return fmt.Errorf("%w: not a detector snapshot", ErrSnapshot)
	}
	if v := dec.uvarint(); v != snapshotVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshotVersion, v, snapshotVersion)
	}
	if n, d := dec.uvarint(), dec.uvarint(); n != maxNetworks || d != uint64(numDetectors) {
		return fmt.Errorf("%w: layout with %d networks and %d detectors, this build has %d and %d", ErrSnapshotVersion, n, d, maxNetworks, numDetectors)
	}

	maxTok := e.cfg.MaxTokens
	zones := newZoneTable()
	nz := dec.uvarint()
	if nz == 0 || nz > maxZones {
		dec.fail("zone count %d", nz)
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
	names := interner{}
	tab := newTable(maxTok)
	count := dec.uvarint()
	skip := uint64(0)
	if count > uint64(maxTok) {
		skip = count - uint64(maxTok)
	}
	var core tokenCore
	for i := uint64(0); i < count && dec.err == nil; i++ {
		id, tenant, holder := dec.str(), dec.str(), dec.str()
		zone := dec.uvarint()
		dec.core(&core)
		if dec.err != nil {
			break
		}
		if zone >= uint64(len(remap)) {
			dec.fail("zone index %d of %d", zone, len(remap))
			break
		}
		if i < skip {
			continue
		}
		if _, dup := tab.find(id); dup || id == "" {
			dec.fail("token id %q repeated or empty", id)
			break
		}
		s := tab.create(id)
		s.tenant, s.holder, s.zone = names.get(tenant), names.get(holder), remap[zone]
		s.core = core
	}
	if dec.err == nil {
		want := dec.crc.Sum32()
		var sum [4]byte
		if _, err := io.ReadFull(dec.r, sum[:]); err != nil {
			dec.err = err
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
	e.tab, e.zones, e.names = tab, zones, names
	e.mu.Unlock()
	return nil
}

// visitor walks the numeric fields of a token's state; the same walk
// encodes and decodes, so the two cannot drift apart.
type visitor interface {
	i64(*int64)
	u64(*uint64)
	u32(*uint32)
	u16(*uint16)
	u8(*uint8)
	f64(*float64)
	raw([]byte)
}

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
	v.u8(&n.maxConcurrent)
	v.raw(c.hours[:])
	vol := &c.vol
	v.i64(&vol.since)
	v.i64(&vol.minute)
	v.u32(&vol.count)
	v.u8(&vol.flagged)
	v.u32(&vol.pending)
	v.u8(&vol.hasPending)
	v.f64(&vol.peak)
	v.f64(&vol.mean)
	p := &c.probe
	for i := range p.seen {
		v.u32(&p.seen[i])
		v.u32(&p.at[i])
	}
	for i := range p.enum {
		r := &p.enum[i]
		v.u32(&r.key)
		v.u16(&r.run)
		v.u64(&r.last)
		v.i64(&r.start)
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

// coreSize is the encoded size of a tokenCore.
var coreSize = func() int {
	var e encoder
	var c tokenCore
	c.visit(&e)
	return len(e.buf)
}()

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

// core decodes one tokenCore from the stream.
func (d *decoder) core(c *tokenCore) {
	if cap(d.block) < coreSize {
		d.block = make([]byte, coreSize)
	}
	d.block, d.off = d.block[:coreSize], 0
	d.read(d.block)
	if d.err == nil {
		c.visit(d)
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
