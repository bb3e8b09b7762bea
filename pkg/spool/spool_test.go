package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/rs/zerolog"
)

func rec(i int) Record {
	return Record{Subject: "cordon.usage.acme.edge-1", ID: fmt.Sprintf("id-%06d", i), Data: bytes.Repeat([]byte{byte('a' + i%26)}, 100)}
}

func open(t *testing.T, dir string, max, seg int64) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: dir, MaxBytes: max, SegmentBytes: seg, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func appendN(t *testing.T, s *Spool, from, to int) int {
	t.Helper()
	dropped := 0
	for i := from; i < to; i++ {
		n, err := s.Append(rec(i))
		if err != nil {
			t.Fatal(err)
		}
		dropped += n
	}
	return dropped
}

// drain takes every pending record out, batch records at a time, and
// returns their ids in order.
func drain(t *testing.T, s *Spool, batch int) []string {
	t.Helper()
	var ids []string
	for {
		recs, next, err := s.Peek(batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return ids
		}
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
		if err := s.Commit(next); err != nil {
			t.Fatal(err)
		}
	}
}

func idsFrom(from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, rec(i).ID)
	}
	return ids
}

func TestFIFOAcrossSegments(t *testing.T) {
	for _, batch := range []int{1, 7, 1000} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			s := open(t, t.TempDir(), 1<<20, 2048)
			if d := appendN(t, s, 0, 300); d != 0 {
				t.Fatalf("dropped %d under the bound", d)
			}
			if st := s.Stats(); st.Pending != 300 || st.Appended != 300 {
				t.Fatalf("stats %+v", st)
			}
			got := drain(t, s, batch)
			if !slices.Equal(got, idsFrom(0, 300)) {
				t.Fatalf("got %d records out of order or missing", len(got))
			}
			st := s.Stats()
			if st.Pending != 0 || st.PendingBytes != 0 {
				t.Fatalf("stats after drain %+v", st)
			}
			if st.Bytes > 2048 {
				t.Fatalf("%d bytes of segments kept after everything was committed", st.Bytes)
			}
			// The spool keeps working after it was emptied.
			appendN(t, s, 300, 310)
			if got := drain(t, s, batch); !slices.Equal(got, idsFrom(300, 310)) {
				t.Fatalf("after emptying: %v", got)
			}
		})
	}
}

// TestFullDropsOldest: past the bound the oldest records go first, are
// counted, and the newest are kept in order.
func TestFullDropsOldest(t *testing.T) {
	const max, seg = 64 << 10, 4 << 10
	s := open(t, t.TempDir(), max, seg)
	size := int64(encodedLen(ptr(rec(0))))
	fit := int(max / size)
	n := 3 * fit
	dropped := appendN(t, s, 0, n)
	st := s.Stats()
	if st.Bytes > max {
		t.Fatalf("spool holds %d bytes, bound %d", st.Bytes, max)
	}
	if uint64(dropped) != st.Dropped || dropped == 0 {
		t.Fatalf("Append reported %d dropped, stats %d", dropped, st.Dropped)
	}
	if int(st.Pending)+dropped != n {
		t.Fatalf("pending %d + dropped %d != appended %d", st.Pending, dropped, n)
	}
	got := drain(t, s, 50)
	if want := idsFrom(dropped, n); !slices.Equal(got, want) {
		t.Fatalf("kept %d records from %v, want the newest %d from %s", len(got), first(got), len(want), want[0])
	}
	if int64(len(got)) < int64(fit)/2 {
		t.Fatalf("kept only %d records of about %d that fit", len(got), fit)
	}
}

// TestDropWhileDraining: records dropped between Peek and Commit are not
// committed twice, and the head never moves back.
func TestDropWhileDraining(t *testing.T) {
	s := open(t, t.TempDir(), 64<<10, 4<<10)
	appendN(t, s, 0, 100)
	recs, next, err := s.Peek(10)
	if err != nil || len(recs) != 10 {
		t.Fatal(len(recs), err)
	}
	dropped := appendN(t, s, 100, 1000)
	if err := s.Commit(next); err != nil {
		t.Fatal(err)
	}
	got := drain(t, s, 64)
	if st := s.Stats(); int(st.Dropped) != dropped {
		t.Fatalf("stats %+v, Append said %d", st, dropped)
	}
	if want := idsFrom(dropped, 1000); !slices.Equal(got, want) {
		t.Fatalf("got %d records from %v, want %d from %s", len(got), first(got), len(want), want[0])
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, 100)
	recs, next, err := s.Peek(30)
	if err != nil || len(recs) != 30 {
		t.Fatal(err)
	}
	if err := s.Commit(next); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Open of a directory in use: %v, want ErrBusy", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 1<<20, 2048)
	if st := s.Stats(); st.Pending != 70 {
		t.Fatalf("reopened: %+v, want 70 pending", st)
	}
	appendN(t, s, 100, 110)
	if got := drain(t, s, 16); !slices.Equal(got, idsFrom(30, 110)) {
		t.Fatalf("reopened: got %d records from %v", len(got), first(got))
	}
}

// TestReopenDrained: a spool whose records were all taken out reopens
// empty, without the old segments' bytes.
func TestReopenDrained(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, 100)
	drain(t, s, 33)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := open(t, dir, 1<<20, 2048)
	if st := r.Stats(); st.Pending != 0 || st.Bytes != 0 {
		t.Fatalf("reopened after draining: %+v", st)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix)); len(segs) != 1 {
		t.Fatalf("segments left: %v, want only the new one", segs)
	}
}

// TestCrashRecovers opens a copy of a spool that was never closed (what a
// killed process leaves): every appended record is pending.
func TestCrashRecovers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20, 2048)
	appendN(t, s, 0, 50)
	recs, next, _ := s.Peek(20)
	if len(recs) != 20 {
		t.Fatal(len(recs))
	}
	if err := s.Commit(next); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 50, 60)
	crashed := copyDir(t, dir)
	c := open(t, crashed, 1<<20, 2048)
	if got := drain(t, c, 100); !slices.Equal(got, idsFrom(20, 60)) {
		t.Fatalf("after a crash: got %d records from %v", len(got), first(got))
	}
}

// TestCorruptSegment damages a closed spool: a torn last record, a flipped
// byte in an older segment, a damaged head file. Opening cuts and counts
// the damage and recovers every record before it and every other segment.
func TestCorruptSegment(t *testing.T) {
	size := encodedLen(ptr(rec(0)))
	perSeg := 2048 / size
	cases := []struct {
		name    string
		damage  func(t *testing.T, segs []string, dir string)
		want    []string
		corrupt uint64
	}{
		{"torn tail", func(t *testing.T, segs []string, _ string) {
			last := segs[len(segs)-1]
			st, _ := os.Stat(last)
			if err := os.Truncate(last, st.Size()-7); err != nil {
				t.Fatal(err)
			}
		}, idsFrom(0, 99), 1},
		{"flipped byte in the second segment", func(t *testing.T, segs []string, _ string) {
			flip(t, segs[1], int64(2*size+20)) // third record of the segment
		}, append(idsFrom(0, perSeg+2), idsFrom(2*perSeg, 100)...), 1},
		{"absurd length", func(t *testing.T, segs []string, _ string) {
			f, _ := os.OpenFile(segs[0], os.O_WRONLY, 0)
			_, _ = f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f}, 0)
			f.Close()
		}, idsFrom(perSeg, 100), 1},
		{"damaged head", func(t *testing.T, _ []string, dir string) {
			if err := os.WriteFile(filepath.Join(dir, headFile), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, idsFrom(0, 100), 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 2048})
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, 0, 100)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
			slices.Sort(segs)
			c.damage(t, segs, dir)
			r := open(t, dir, 1<<20, 2048)
			if st := r.Stats(); st.Corrupt != c.corrupt || st.Pending != int64(len(c.want)) {
				t.Fatalf("stats %+v, want %d corrupt, %d pending", st, c.corrupt, len(c.want))
			}
			if got := drain(t, r, 13); !slices.Equal(got, c.want) {
				t.Fatalf("recovered %d records from %v, want %d", len(got), first(got), len(c.want))
			}
		})
	}
}

func TestAppendRefusesHugeRecord(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20, 4096)
	_, err := s.Append(Record{Subject: "x", ID: "y", Data: make([]byte, 5000)})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if _, err := Open(Options{Dir: t.TempDir(), MaxBytes: 1000}); err == nil {
		t.Fatal("a 1000-byte bound was accepted")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []Record{rec(1), {Subject: "s", ID: "", Data: nil}, {Subject: "a.b", ID: "019ae1f0", Data: []byte("{}")}} {
		b := appendRecord(nil, &r)
		if len(b) != encodedLen(&r) {
			t.Fatalf("encodedLen %d, frame %d", encodedLen(&r), len(b))
		}
		got, n, err := decodeRecord(b)
		if err != nil || n != len(b) || got.Subject != r.Subject || got.ID != r.ID || !bytes.Equal(got.Data, r.Data) {
			t.Fatalf("round trip of %+v: %+v, %d, %v", r, got, n, err)
		}
		if _, _, err := decodeRecord(b[:len(b)-1]); !errors.Is(err, errShort) {
			t.Fatalf("cut record: %v, want errShort", err)
		}
	}
}

// FuzzDecodeRecord: the decoder never panics, refuses with one of its two
// errors, and what it accepts encodes to a frame that decodes to the same
// record. Seeds in testdata/fuzz.
func FuzzDecodeRecord(f *testing.F) {
	r := rec(3)
	f.Add(appendRecord(nil, &r))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, n, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errShort) && !errors.Is(err, errCorrupt) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n < headerLen || n > len(b) {
			t.Fatalf("frame size %d of %d bytes", n, len(b))
		}
		back, m, err := decodeRecord(appendRecord(nil, &got))
		if err != nil || m > n || back.Subject != got.Subject || back.ID != got.ID || !bytes.Equal(back.Data, got.Data) {
			t.Fatalf("accepted record does not round-trip: %+v vs %+v (%v)", got, back, err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func first(ids []string) string {
	if len(ids) == 0 {
		return "(none)"
	}
	return ids[0]
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == lockFile {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// TestConcurrentAppendAndDrain: one goroutine appends while another takes
// records out (the publisher and the drainer): every record comes out
// once, in order.
func TestConcurrentAppendAndDrain(t *testing.T) {
	s := open(t, t.TempDir(), 8<<20, 4096)
	const n = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i += 10 {
			batch := make([]Record, 10)
			for j := range batch {
				batch[j] = rec(i + j)
			}
			if _, err := s.Append(batch...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var got []string
	for len(got) < n {
		recs, next, err := s.Peek(64)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			select {
			case <-done:
				if s.Stats().Pending == 0 && len(got) < n {
					t.Fatalf("appender done, %d of %d records out", len(got), n)
				}
			default:
			}
			continue
		}
		for _, r := range recs {
			got = append(got, r.ID)
		}
		if err := s.Commit(next); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if !slices.Equal(got, idsFrom(0, n)) {
		t.Fatalf("got %d records, not in order", len(got))
	}
}

func BenchmarkAppend(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]Record, 64)
	for i := range batch {
		batch[i] = Record{Subject: "cordon.usage.acme.edge-1", ID: fmt.Sprintf("019ae1f0-0000-7000-8000-%012d", i), Data: bytes.Repeat([]byte("x"), 600)}
	}
	b.SetBytes(int64(len(batch) * encodedLen(&batch[0])))
	for b.Loop() {
		if _, err := s.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
}
