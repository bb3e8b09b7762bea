package replay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
)

// MaxLineBytes is the longest line the reader accepts; a longer one is a bad
// line (skipped), not a fatal error.
const MaxLineBytes = 1 << 20

// BadLine is a line of the input that is not a valid event.
type BadLine struct {
	// Line is the 1-based line number.
	Line int `json:"line"`
	// Err says what is wrong with it.
	Err string `json:"error"`
}

// String is "line N: reason".
func (b BadLine) String() string { return fmt.Sprintf("line %d: %s", b.Line, b.Err) }

// kind is how a replayed event is routed.
type kind uint8

const (
	kindNone   kind = iota
	kindUsage       // USAGE stream
	kindLedger      // TOKENS stream
	kindOther       // valid, but not replayed (anomalies, keys, policy changes)
)

// record is one decoded line: what publishing it needs, without the
// decoded payload (so that a sorted input held in memory costs little more
// than its bytes).
type record struct {
	line    int
	raw     []byte // the line as read, without the newline (valid until the next read, unless owned)
	id      uuid.UUID
	time    time.Time
	subject string
	kind    kind
	size    int // bytes consumed, newline included
}

// lineReader reads JSONL events, one per line, decoding each strictly.
type lineReader struct {
	r    *bufio.Reader
	line int
	long []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)} // longer lines are gathered in long
}

// next returns the next non-empty line decoded. A line that is not a valid
// event comes back with bad set and the reason; io.EOF ends the input.
func (lr *lineReader) next() (rec record, bad *BadLine, err error) {
	for {
		raw, size, tooLong, err := lr.readLine()
		if err != nil {
			return record{}, nil, err
		}
		lr.line++
		if tooLong {
			return record{line: lr.line, size: size}, &BadLine{Line: lr.line, Err: fmt.Sprintf("longer than %d bytes", MaxLineBytes)}, nil
		}
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) == 0 {
			continue
		}
		rec = record{line: lr.line, raw: trimmed, size: size}
		if e, _, err := events.DecodeUsage(trimmed); err == nil {
			rec.id, rec.time, rec.subject, rec.kind = e.ID, e.Time, events.Subject(e), kindUsage
			return rec, nil, nil
		}
		e, err := events.Decode(trimmed)
		if err != nil {
			return rec, &BadLine{Line: lr.line, Err: err.Error()}, nil
		}
		rec.id, rec.time, rec.subject = e.ID, e.Time, events.Subject(e)
		switch e.Type {
		case events.TypeUsageDecided:
			rec.kind = kindUsage
		case events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired,
			events.TypeTokenRestricted, events.TypeTokenReleased:
			rec.kind = kindLedger
		default:
			rec.kind = kindOther
		}
		return rec, nil, nil
	}
}

// readLine returns the next line without its newline, and the bytes it
// took. A line longer than MaxLineBytes is consumed and reported tooLong.
func (lr *lineReader) readLine() (line []byte, size int, tooLong bool, err error) {
	lr.long = lr.long[:0]
	for {
		chunk, err := lr.r.ReadSlice('\n')
		size += len(chunk)
		switch {
		case err == nil || (errors.Is(err, io.EOF) && size > 0):
			if tooLong || len(lr.long)+len(bytes.TrimSuffix(chunk, []byte("\n"))) > MaxLineBytes {
				return nil, size, true, nil
			}
			if len(lr.long) > 0 {
				lr.long = append(lr.long, chunk...)
				chunk = lr.long
			}
			return bytes.TrimSuffix(chunk, []byte("\n")), size, false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if !tooLong && len(lr.long)+len(chunk) <= MaxLineBytes {
				lr.long = append(lr.long, chunk...)
			} else {
				tooLong, lr.long = true, lr.long[:0]
			}
		default:
			return nil, size, false, err
		}
	}
}

// DefaultTolerance is how far an event's time may lie before the latest
// event time above it before the input counts as out of order: enforcers
// and their clocks are a little apart, the detectors' windows are minutes.
const DefaultTolerance = 5 * time.Second

// Sentinel errors of a replay's input.
var (
	// ErrOutOfOrder is wrapped by *OrderError: the input goes back in event
	// time, and the detectors, which work in event time and in input order,
	// would not see what the live system saw.
	ErrOutOfOrder = errors.New("the input is not in time order")
	// ErrNoEvents: the input holds no usage or ledger event to replay (it
	// is empty, every line is bad, or every event is of another type).
	ErrNoEvents = errors.New("nothing to replay")
)

// OrderError is where the input goes back in event time beyond the
// tolerance.
type OrderError struct {
	// Line is the line whose event is too early, Time its event time.
	Line int
	Time time.Time
	// Latest is the latest event time before it, on LatestLine; LatestLine
	// 0 means the end of the previous replay into the same directory
	// (Options.NotBefore).
	Latest     time.Time
	LatestLine int
	// Tolerance is the step back that was allowed.
	Tolerance time.Duration
}

// Error says which line goes back, by how much, and from which line.
func (e *OrderError) Error() string {
	back := e.Latest.Sub(e.Time)
	if e.LatestLine == 0 {
		return fmt.Sprintf("line %d: event time %s is %v before the last event of the previous replay into this directory (%s): "+
			"a replay on top of another takes later events only", e.Line, stamp(e.Time), back, stamp(e.Latest))
	}
	return fmt.Sprintf("%v: line %d: event time %s is %v before line %d's (%s), beyond the %v tolerance; "+
		"the detectors work in event order, so the result would not be what the live system saw",
		ErrOutOfOrder, e.Line, stamp(e.Time), back, e.LatestLine, stamp(e.Latest), e.Tolerance)
}

// Unwrap makes errors.Is(err, ErrOutOfOrder) hold.
func (e *OrderError) Unwrap() error { return ErrOutOfOrder }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// source yields the records to publish, in input order: bad lines counted
// (the first maxBad kept) and skipped, events of other types skipped, each
// event's time checked against the latest before it.
type source struct {
	lr         *lineReader
	res        *Result
	maxBad     int
	skipLedger bool
	tolerance  time.Duration // negative: no check
	notBefore  time.Time
	latest     time.Time
	latestLine int
	// consumed is called with the bytes of each line read.
	consumed func(n int)
}

func newSource(r io.Reader, res *Result, o Options) *source {
	return &source{lr: newLineReader(r), res: res, maxBad: o.MaxBadLines, skipLedger: o.SkipLedger,
		tolerance: o.Tolerance, notBefore: o.NotBefore, consumed: func(int) {}}
}

// next returns the next record to publish; io.EOF ends the input, an
// *OrderError stops it.
func (s *source) next() (record, error) {
	res := s.res
	for {
		rec, bad, err := s.lr.next()
		res.Lines = s.lr.line
		if errors.Is(err, io.EOF) {
			return record{}, io.EOF
		}
		if err != nil {
			return record{}, fmt.Errorf("read events: %w", err)
		}
		s.consumed(rec.size)
		if bad != nil {
			res.Bad++
			if len(res.BadLines) < s.maxBad {
				res.BadLines = append(res.BadLines, *bad)
			}
			continue
		}
		if rec.kind == kindOther || (rec.kind == kindLedger && s.skipLedger) {
			res.Skipped++
			continue
		}
		if !s.notBefore.IsZero() && rec.time.Before(s.notBefore) {
			return rec, &OrderError{Line: rec.line, Time: rec.time, Latest: s.notBefore}
		}
		if s.tolerance >= 0 && s.latestLine > 0 && rec.time.Before(s.latest.Add(-s.tolerance)) {
			return rec, &OrderError{Line: rec.line, Time: rec.time, Latest: s.latest, LatestLine: s.latestLine, Tolerance: s.tolerance}
		}
		if s.latestLine == 0 || rec.time.After(s.latest) {
			s.latest, s.latestLine = rec.time, rec.line
		}
		if res.FirstEvent.IsZero() || rec.time.Before(res.FirstEvent) {
			res.FirstEvent = rec.time
		}
		if rec.time.After(res.LastEvent) {
			res.LastEvent = rec.time
		}
		return rec, nil
	}
}

// nothingError explains why an input that published nothing did.
func nothingError(r *Result) error {
	switch {
	case r.Bad == 0 && r.Skipped == 0:
		return fmt.Errorf("%w: the input is empty", ErrNoEvents)
	case r.Skipped == 0:
		first := ""
		if len(r.BadLines) > 0 {
			first = "; the first, " + r.BadLines[0].String()
		}
		return fmt.Errorf("%w: none of the %d non-empty lines is a valid event%s", ErrNoEvents, r.Bad, first)
	default:
		return fmt.Errorf("%w: no usage or ledger event to replay: %d valid events skipped (of other types, or ledger events left out), %d bad lines",
			ErrNoEvents, r.Skipped, r.Bad)
	}
}
