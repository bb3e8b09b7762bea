package replay_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/replay"
)

// FuzzCheck feeds arbitrary input to the replay's reader (Check reads it
// exactly as Run does, publishing nothing). It must never panic; every
// non-empty line is counted once (published, skipped or bad); the bad lines
// kept are the first ones, in order; an input Check accepts in order is
// accepted sorted with the same counts; and sorting never meets an order
// error.
func FuzzCheck(f *testing.F) {
	sample, err := os.ReadFile("testdata/sample.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add(bytes.ReplaceAll(sample, []byte("\n"), []byte("\r\n")))
	f.Add([]byte(""))
	f.Add([]byte("\n\n{}\n[]\nnull\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, o := range []replay.Options{{}, {Tolerance: -1}, {Tolerance: time.Nanosecond, SkipLedger: true}} {
			res, err := replay.Check(bytes.NewReader(data), o)
			if res == nil {
				t.Fatalf("no result (err %v)", err)
			}
			if n := res.Events() + res.Skipped + res.Bad; n > res.Lines {
				t.Fatalf("%d lines counted of %d read", n, res.Lines)
			}
			if len(res.BadLines) > 10 || len(res.BadLines) > res.Bad {
				t.Fatalf("%d bad lines kept of %d", len(res.BadLines), res.Bad)
			}
			for i, bl := range res.BadLines {
				if bl.Line < 1 || bl.Line > res.Lines || i > 0 && bl.Line <= res.BadLines[i-1].Line || bl.Err == "" {
					t.Fatalf("bad line %d: %+v (of %d lines)", i, bl, res.Lines)
				}
			}
			if err != nil && !errors.Is(err, replay.ErrOutOfOrder) && !errors.Is(err, replay.ErrNoEvents) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, replay.ErrOutOfOrder) && o.Tolerance < 0 {
				t.Fatalf("order error with the check off: %v", err)
			}
			so := o
			so.Sort = true
			sres, serr := replay.Check(bytes.NewReader(data), so)
			if errors.Is(serr, replay.ErrOutOfOrder) {
				t.Fatalf("order error when sorting: %v", serr)
			}
			if err == nil && (serr != nil || sres.Events() != res.Events() || sres.Bad != res.Bad || sres.Lines != res.Lines) {
				t.Fatalf("sorted check differs: %+v %v, in order %+v", sres, serr, res)
			}
		}
	})
}
