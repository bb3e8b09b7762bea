package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Record is one message kept for later: where it goes, its JetStream
// message id (kept so that a republish is de-duplicated) and its payload.
type Record struct {
	Subject string
	ID      string
	Data    []byte
}

// MaxRecordBytes bounds one encoded record; Append refuses bigger ones.
const MaxRecordBytes = 1 << 20

// headerLen is the frame header: body length and CRC-32C of the body,
// both little-endian uint32.
const headerLen = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoding errors: errShort is a record cut off by the end of the input
// (a torn write), errCorrupt one whose frame or body does not hold.
var (
	errShort   = errors.New("record truncated")
	errCorrupt = errors.New("record corrupt")
)

// appendRecord appends the frame of r to b.
//
//	frame = len(body) uint32 LE | crc32c(body) uint32 LE | body
//	body  = uvarint len(subject) | subject | uvarint len(id) | id | data
func appendRecord(b []byte, r *Record) []byte {
	start := len(b)
	b = append(b, make([]byte, headerLen)...)
	b = binary.AppendUvarint(b, uint64(len(r.Subject)))
	b = append(b, r.Subject...)
	b = binary.AppendUvarint(b, uint64(len(r.ID)))
	b = append(b, r.ID...)
	b = append(b, r.Data...)
	body := b[start+headerLen:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(body, castagnoli))
	return b
}

// encodedLen is the size of r's frame.
func encodedLen(r *Record) int {
	return headerLen + uvarintLen(len(r.Subject)) + len(r.Subject) + uvarintLen(len(r.ID)) + len(r.ID) + len(r.Data)
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// decodeRecord decodes the frame at the start of b and returns the record
// (its strings and data are copies) and the frame's size. It returns
// errShort when b ends inside the frame and errCorrupt when the frame
// does not hold (length out of bounds, checksum, body fields).
func decodeRecord(b []byte) (Record, int, error) {
	if len(b) < headerLen {
		return Record{}, 0, errShort
	}
	n, err := frameLen(b[:headerLen])
	if err != nil {
		return Record{}, 0, err
	}
	if len(b) < headerLen+n {
		return Record{}, 0, errShort
	}
	r, err := decodeBody(b[:headerLen], b[headerLen:headerLen+n])
	if err != nil {
		return Record{}, 0, err
	}
	return r, headerLen + n, nil
}

// readRecord reads one frame from r into buf (grown as needed) and returns
// the record, the frame's size and buf. io.EOF means r ended cleanly
// between frames.
func readRecord(r io.Reader, buf []byte) (Record, int, []byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Record{}, 0, buf, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Record{}, 0, buf, errShort
		}
		return Record{}, 0, buf, err
	}
	n, err := frameLen(h[:])
	if err != nil {
		return Record{}, 0, buf, err
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Record{}, 0, buf, errShort
		}
		return Record{}, 0, buf, err
	}
	rec, err := decodeBody(h[:], buf)
	return rec, headerLen + n, buf, err
}

func frameLen(h []byte) (int, error) {
	n := binary.LittleEndian.Uint32(h)
	if n < 2 || n > MaxRecordBytes-headerLen {
		return 0, fmt.Errorf("%w: body length %d", errCorrupt, n)
	}
	return int(n), nil
}

func decodeBody(h, body []byte) (Record, error) {
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return Record{}, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	subject, rest, ok := field(body)
	if !ok || subject == "" {
		return Record{}, fmt.Errorf("%w: bad subject", errCorrupt)
	}
	id, rest, ok := field(rest)
	if !ok {
		return Record{}, fmt.Errorf("%w: bad message id", errCorrupt)
	}
	return Record{Subject: subject, ID: id, Data: append([]byte(nil), rest...)}, nil
}

// field reads a uvarint-prefixed string.
func field(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}
