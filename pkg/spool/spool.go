// Package spool is a bounded on-disk FIFO of messages that could not be
// published yet. An enforcer that cannot reach JetStream (a leader
// election, a partition, a restart of the cluster) writes its usage events
// here instead of losing them, and republishes them, oldest first and with
// their original message ids, once JetStream accepts again.
//
// The spool is a directory of segment files of framed records (length,
// CRC-32C, subject, message id, data) and a small "head" file that says
// how far the records have been taken out. It is bounded in bytes: when an
// append would pass the bound, the oldest segments are dropped first and
// their records counted. A torn or corrupt tail found when the spool is
// opened is cut off, counted and logged; every record before it, and every
// other segment, is kept.
//
// Appends are written to the operating system at once (they survive the
// process being killed) but fsynced only on Close: a power loss may lose
// the last records. One process at a time may open a directory.
package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/privdir"
)

// DefaultMaxBytes bounds a spool's files when Options.MaxBytes is zero.
const DefaultMaxBytes = 256 << 20

// Sentinel errors.
var (
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("spool closed")
	// ErrBusy is returned by Open when another process holds the directory.
	ErrBusy = errors.New("spool directory in use by another process")
	// ErrTooLarge is returned by Append for a record larger than
	// MaxRecordBytes or than the spool's bound.
	ErrTooLarge = errors.New("record too large for the spool")
)

// Options configure a spool.
type Options struct {
	// Dir holds the spool (created 0700 when missing). Required.
	Dir string
	// MaxBytes bounds the size of the segment files (default
	// DefaultMaxBytes; at least 64 KiB).
	MaxBytes int64
	// SegmentBytes is the size at which a segment is closed and a new one
	// started: the unit in which the oldest records are dropped (default
	// MaxBytes/16, at most 16 MiB).
	SegmentBytes int64
	// Log receives what opening found (records recovered, corrupt tails).
	Log zerolog.Logger
}

// Pos is a position in the spool: a segment, a byte offset in it and the
// number of records before that offset. Peek returns the position after
// the records it read; Commit takes them out up to it.
type Pos struct {
	Seg uint64
	Off int64
	Idx int64
}

func (p Pos) before(q Pos) bool { return p.Seg < q.Seg || (p.Seg == q.Seg && p.Off < q.Off) }

// Stats describe a spool.
type Stats struct {
	// Appended records were written since Open; Dropped were removed,
	// unpublished, to stay within the bound; Corrupt torn or corrupt tails
	// were cut off at Open.
	Appended uint64
	Dropped  uint64
	Corrupt  uint64
	// Pending records (PendingBytes of file, framing included) wait to be
	// taken out; Bytes is the size of every segment file.
	Pending      int64
	PendingBytes int64
	Bytes        int64
	MaxBytes     int64
}

type segment struct {
	id    uint64
	size  int64
	count int64
}

// Spool is a bounded on-disk FIFO of records, safe for concurrent use.
type Spool struct {
	dir    string
	max    int64
	segMax int64
	log    zerolog.Logger
	unlock func()

	mu     sync.Mutex
	closed bool
	segs   []segment // oldest first; the last one is written to
	w      *os.File
	// wSize and wCount are the size and records of the last segment that
	// reached its file (Append takes back the rest when a write fails).
	wSize  int64
	wCount int64
	head   Pos
	total  int64
	buf    []byte
	rbuf   []byte

	appended, dropped, corrupt uint64
}

const (
	segSuffix = ".seg"
	headFile  = "head"
	lockFile  = "LOCK"
	minMax    = 64 << 10
)

// Open opens (or creates) the spool in o.Dir, recovering what a previous
// run left: the records not yet taken out are pending again.
func Open(o Options) (*Spool, error) {
	if o.Dir == "" {
		return nil, errors.New("open spool: no directory")
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBytes < minMax {
		return nil, fmt.Errorf("open spool %s: max size %d bytes: want at least %d", o.Dir, o.MaxBytes, minMax)
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = min(o.MaxBytes/16, 16<<20)
	}
	o.SegmentBytes = min(o.SegmentBytes, o.MaxBytes/2)
	if err := privdir.EnsureLogged(o.Dir, o.Log); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	unlock, err := privdir.Lock(filepath.Join(o.Dir, lockFile))
	if errors.Is(err, privdir.ErrLocked) {
		err = ErrBusy
	}
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", o.Dir, err)
	}
	s := &Spool{dir: o.Dir, max: o.MaxBytes, segMax: o.SegmentBytes, log: o.Log, unlock: unlock}
	if err := s.recover(); err != nil {
		unlock()
		return nil, fmt.Errorf("open spool %s: %w", o.Dir, err)
	}
	return s, nil
}

// recover scans the segments, cuts corrupt tails, places the head and
// starts a new segment to write to.
func (s *Spool) recover() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var ids []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 16, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	head, headOK := s.readHead()
	for _, id := range ids {
		seg, headIdx, err := s.scan(id, head)
		if err != nil {
			return err
		}
		if seg.size == 0 || (headOK && id < head.Seg) {
			if err := os.Remove(s.segPath(id)); err != nil {
				return err
			}
			continue
		}
		if headOK && id == head.Seg {
			if headIdx.Off >= seg.size { // every record taken out
				if err := os.Remove(s.segPath(id)); err != nil {
					return err
				}
				continue
			}
			head.Off, head.Idx = headIdx.Off, headIdx.Idx
		}
		s.segs = append(s.segs, seg)
		s.total += seg.size
	}
	switch {
	case len(s.segs) == 0:
		s.head = Pos{}
	case !headOK || head.Seg < s.segs[0].id:
		s.head = Pos{Seg: s.segs[0].id}
	default:
		s.head = head
	}
	next := uint64(1)
	if n := len(s.segs); n > 0 {
		next = s.segs[n-1].id + 1
	}
	if err := s.startSegment(next); err != nil {
		return err
	}
	if len(s.segs) == 1 || s.head.Seg == 0 {
		s.head = Pos{Seg: s.segs[0].id}
	}
	if st := s.statsLocked(); st.Pending > 0 || st.Corrupt > 0 {
		s.log.Info().Str("dir", s.dir).Int64("pending", st.Pending).Int64("bytes", st.PendingBytes).
			Uint64("corrupt", st.Corrupt).Msg("spool recovered")
	}
	return nil
}

// scan reads segment id, cutting it at its first torn or corrupt record,
// and returns its size and count and, when head is in it, the position of
// the last record boundary at or before head.Off.
func (s *Spool) scan(id uint64, head Pos) (segment, Pos, error) {
	path := s.segPath(id)
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return segment{}, Pos{}, err
	}
	defer f.Close()
	seg := segment{id: id}
	at := Pos{Seg: id}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		_, n, buf, err := readRecord(r, s.rbuf)
		s.rbuf = buf
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errShort) || errors.Is(err, errCorrupt) {
			s.corrupt++
			s.log.Warn().Err(err).Str("segment", path).Int64("offset", seg.size).Int64("records_kept", seg.count).
				Msg("spool segment has a torn or corrupt tail: cut off")
			if err := f.Truncate(seg.size); err != nil {
				return seg, at, fmt.Errorf("cut segment %s: %w", path, err)
			}
			break
		}
		if err != nil {
			return seg, at, fmt.Errorf("read segment %s: %w", path, err)
		}
		seg.size += int64(n)
		seg.count++
		if id == head.Seg && seg.size <= head.Off {
			at.Off, at.Idx = seg.size, seg.count
		}
	}
	return seg, at, nil
}

func (s *Spool) segPath(id uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016x%s", id, segSuffix))
}

// startSegment closes the segment written to and starts segment id.
func (s *Spool) startSegment(id uint64) error {
	if s.w != nil {
		if err := s.w.Close(); err != nil {
			return fmt.Errorf("close segment: %w", err)
		}
		s.w = nil
	}
	f, err := os.OpenFile(s.segPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start segment: %w", err)
	}
	s.w = f
	s.wSize, s.wCount = 0, 0
	s.segs = append(s.segs, segment{id: id})
	return nil
}

// Append writes recs at the end of the spool, dropping the oldest
// segments first when the bound would be passed. It returns how many
// records it dropped to make room.
func (s *Spool) Append(recs ...Record) (dropped int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	s.buf = s.buf[:0]
	for i := range recs {
		n := int64(encodedLen(&recs[i]))
		if n > MaxRecordBytes || n > s.segMax {
			return dropped, fmt.Errorf("append to spool: %w: %d bytes", ErrTooLarge, n)
		}
		last := &s.segs[len(s.segs)-1]
		if last.size > 0 && last.size+n > s.segMax {
			if err := s.flushLocked(); err != nil {
				return dropped, err
			}
			if err := s.startSegment(last.id + 1); err != nil {
				return dropped, err
			}
			last = &s.segs[len(s.segs)-1]
		}
		for s.total+n > s.max && len(s.segs) > 1 {
			dropped += s.dropOldest()
		}
		last = &s.segs[len(s.segs)-1]
		s.buf = appendRecord(s.buf, &recs[i])
		last.size += n
		last.count++
		s.total += n
		s.appended++
	}
	return dropped, s.flushLocked()
}

// flushLocked writes the encoded records of s.buf to the last segment.
func (s *Spool) flushLocked() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.w.Write(s.buf)
	s.buf = s.buf[:0]
	last := &s.segs[len(s.segs)-1]
	if err != nil {
		// Take back what did not reach the file (disk full): the segment
		// ends at its last whole write, and the records are not pending.
		terr := s.w.Truncate(s.wSize)
		s.total -= last.size - s.wSize
		s.appended -= uint64(last.count - s.wCount)
		last.size, last.count = s.wSize, s.wCount
		return fmt.Errorf("append to spool: %w", errors.Join(err, terr))
	}
	s.wSize, s.wCount = last.size, last.count
	return nil
}

// dropOldest removes the oldest segment (never the one written to) and
// returns how many of its records had not been taken out.
func (s *Spool) dropOldest() int {
	seg := s.segs[0]
	n := seg.count
	switch {
	case s.head.Seg == seg.id:
		n -= s.head.Idx
	case s.head.Seg > seg.id:
		n = 0
	}
	if err := os.Remove(s.segPath(seg.id)); err != nil {
		s.log.Error().Err(err).Str("segment", s.segPath(seg.id)).Msg("remove dropped spool segment")
	}
	s.segs = s.segs[1:]
	s.total -= seg.size
	s.dropped += uint64(n)
	if s.head.Seg < s.segs[0].id {
		s.head = Pos{Seg: s.segs[0].id}
	}
	return int(n)
}

// Peek returns up to max of the oldest records not taken out, and the
// position after the last of them (for Commit). It returns no records when
// the spool is empty.
func (s *Spool) Peek(max int) ([]Record, Pos, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, Pos{}, ErrClosed
	}
	if err := s.flushLocked(); err != nil {
		return nil, s.head, err
	}
	at := s.head
	var recs []Record
	for i := slices.IndexFunc(s.segs, func(g segment) bool { return g.id == at.Seg }); i >= 0 && i < len(s.segs) && len(recs) < max; i++ {
		g := s.segs[i]
		if g.id != at.Seg {
			at = Pos{Seg: g.id}
		}
		if at.Off >= g.size {
			continue
		}
		var err error
		if recs, at, err = s.readSegment(recs, g, at, max); err != nil {
			return recs, at, err
		}
	}
	return recs, at, nil
}

// readSegment appends the records of g from at to recs, up to max in all.
func (s *Spool) readSegment(recs []Record, g segment, at Pos, max int) ([]Record, Pos, error) {
	f, err := os.Open(s.segPath(g.id))
	if err != nil {
		return recs, at, fmt.Errorf("read spool: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.NewSectionReader(f, at.Off, g.size-at.Off), 64<<10)
	for len(recs) < max {
		rec, n, buf, err := readRecord(r, s.rbuf)
		s.rbuf = buf
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return recs, at, fmt.Errorf("read spool segment %s at %d: %w", s.segPath(g.id), at.Off, err)
		}
		recs = append(recs, rec)
		at.Off += int64(n)
		at.Idx++
	}
	return recs, at, nil
}

// Commit takes the records before p out of the spool (they were
// published). A position that records were dropped past is ignored.
func (s *Spool) Commit(p Pos) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if !s.head.before(p) {
		return nil
	}
	s.head = p
	for len(s.segs) > 1 && (s.segs[0].id < s.head.Seg || (s.segs[0].id == s.head.Seg && s.head.Off >= s.segs[0].size)) {
		seg := s.segs[0]
		if err := os.Remove(s.segPath(seg.id)); err != nil {
			return fmt.Errorf("remove spool segment: %w", err)
		}
		s.segs = s.segs[1:]
		s.total -= seg.size
		if seg.id == s.head.Seg {
			s.head = Pos{Seg: s.segs[0].id}
		}
	}
	return s.writeHead()
}

// headLen is the head file: segment, offset, index, CRC-32C of the three.
const headLen = 28

func (s *Spool) writeHead() error {
	var b [headLen]byte
	binary.LittleEndian.PutUint64(b[0:], s.head.Seg)
	binary.LittleEndian.PutUint64(b[8:], uint64(s.head.Off))
	binary.LittleEndian.PutUint64(b[16:], uint64(s.head.Idx))
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castagnoli))
	tmp := filepath.Join(s.dir, headFile+".tmp")
	if err := os.WriteFile(tmp, b[:], 0o600); err != nil {
		return fmt.Errorf("write spool head: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, headFile)); err != nil {
		return fmt.Errorf("write spool head: %w", err)
	}
	return nil
}

// readHead reads the head file; a missing or damaged one is reported as
// absent (every record is then pending: republishing is de-duplicated).
func (s *Spool) readHead() (Pos, bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, headFile))
	if err != nil || len(b) != headLen || crc32.Checksum(b[:24], castagnoli) != binary.LittleEndian.Uint32(b[24:]) {
		if err == nil {
			s.log.Warn().Str("dir", s.dir).Msg("spool head file damaged: every spooled record is pending again")
		}
		return Pos{}, false
	}
	return Pos{
		Seg: binary.LittleEndian.Uint64(b[0:]),
		Off: int64(binary.LittleEndian.Uint64(b[8:])),
		Idx: int64(binary.LittleEndian.Uint64(b[16:])),
	}, true
}

// Stats returns the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

func (s *Spool) statsLocked() Stats {
	st := Stats{Appended: s.appended, Dropped: s.dropped, Corrupt: s.corrupt, Bytes: s.total, MaxBytes: s.max}
	for _, g := range s.segs {
		switch {
		case g.id < s.head.Seg:
		case g.id == s.head.Seg:
			st.Pending += g.count - s.head.Idx
			st.PendingBytes += g.size - s.head.Off
		default:
			st.Pending += g.count
			st.PendingBytes += g.size
		}
	}
	return st
}

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Close writes the last records and the head to disk and releases the
// directory. It is safe to call twice.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.flushLocked()
	if s.w != nil {
		err = errors.Join(err, s.w.Sync(), s.w.Close())
	}
	err = errors.Join(err, s.writeHead())
	s.unlock()
	if err != nil {
		return fmt.Errorf("close spool %s: %w", s.dir, err)
	}
	return nil
}
