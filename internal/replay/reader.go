package replay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
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

// record is one decoded line.
type record struct {
	line int
	raw  []byte // the line as read, without the newline (valid until the next read)
	env  events.Envelope
	kind kind
	size int // bytes consumed, newline included
}

// lineReader reads JSONL events, one per line, decoding each strictly.
type lineReader struct {
	r    *bufio.Reader
	line int
	long []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 1<<20)}
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
		if e, _, err := auditor.DecodeUsage(trimmed); err == nil {
			rec.env, rec.kind = e, kindUsage
			return rec, nil, nil
		}
		e, err := events.Decode(trimmed)
		if err != nil {
			return rec, &BadLine{Line: lr.line, Err: err.Error()}, nil
		}
		rec.env = e
		switch e.Type {
		case events.TypeUsageDecided:
			rec.kind = kindUsage
		case events.TypeTokenIssued, events.TypeTokenRotated, events.TypeTokenRevoked, events.TypeTokenExpired:
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
