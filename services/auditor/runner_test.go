package auditor

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
)

// fillGroup observes n rows into r's open group the way a batch's records
// arrive: one payload variable, overwritten for each record.
func fillGroup(r *runner, first uint64, n int, tag string) {
	r.cur = r.newGroup(first)
	var u events.UsageDecided
	for i := range n {
		u = events.UsageDecided{TokenID: fmt.Sprintf("%s-%d", tag, i), Tenant: "acme", Holder: "billing", Enforcer: "edge-1",
			Service: "billing", SourceIP: "10.0.0.1", Method: "GET", Route: "/x", Decision: events.DecisionAllow, Reason: events.ReasonOK}
		e := events.Envelope{ID: uuid.Must(uuid.NewV7()), Type: events.TypeUsageDecided, Time: time.Unix(int64(i), 0), Source: "enforcer/edge-1", Version: events.SchemaVersion}
		r.observe(e, &u, true, false)
	}
	r.cur.last = first + uint64(n)
}

// TestGroupRowsOwnTheirPayloads: every row of an insert group keeps its
// own payload although the decoder reuses one variable, across chunk
// boundaries, and after the chunks of a written group serve the next one
// (a chunk handed back while rows still point into it would show here as
// rows of the next group). Once warm, filling and recycling a group
// allocates nothing.
func TestGroupRowsOwnTheirPayloads(t *testing.T) {
	r := &runner{a: &Auditor{o: Options{BatchSize: 100_000}}, st: &partStats{}}
	check := func(g *group, n int, tag string) {
		t.Helper()
		if len(g.envs) != n {
			t.Fatalf("group has %d rows, want %d", len(g.envs), n)
		}
		seen := map[*events.UsageDecided]bool{}
		for i, e := range g.envs {
			u := e.Data.(*events.UsageDecided)
			if want := fmt.Sprintf("%s-%d", tag, i); u.TokenID != want {
				t.Fatalf("row %d carries token %q, want %q", i, u.TokenID, want)
			}
			if seen[u] {
				t.Fatalf("row %d shares its payload with another row", i)
			}
			seen[u] = true
		}
	}
	for _, n := range []int{1, rowChunk - 1, rowChunk, rowChunk + 1, 3*rowChunk + 7} {
		fillGroup(r, 1, n, "a")
		a := r.cur
		fillGroup(r, 2, n, "b") // a second group while the first is "in flight"
		b := r.cur
		check(&a, n, "a")
		r.recycle(&a)
		fillGroup(r, 3, n, "c") // reuses a's chunks and rows
		c := r.cur
		check(&b, n, "b")
		check(&c, n, "c")
		r.recycle(&b)
		r.recycle(&c)
	}
	var u events.UsageDecided // the decoder's, outside the loop
	allocs := testing.AllocsPerRun(3, func() {
		r.cur = r.newGroup(1)
		for i := range 2*rowChunk + 1 {
			u.TokenID = "t"
			r.observe(events.Envelope{Time: time.Unix(int64(i), 0)}, &u, true, false)
		}
		g := r.cur
		r.recycle(&g)
	})
	if allocs != 0 {
		t.Fatalf("a warm group allocates %v times, want 0", allocs)
	}
}

// TestGroupRowsGrowByDoubling: a group that outgrows its buffer doubles
// it, so that filling a group copies its rows about once in all (append
// alone grows a large slice by a quarter, copying the rows again at each
// of many steps).
func TestGroupRowsGrowByDoubling(t *testing.T) {
	r := &runner{a: &Auditor{o: Options{BatchSize: 50_000}}, st: &partStats{}}
	r.cur = r.newGroup(1)
	var u events.UsageDecided
	steps, c := 0, cap(r.cur.envs)
	for i := range 40_000 {
		r.observe(events.Envelope{Time: time.Unix(int64(i), 0)}, &u, true, false)
		if cap(r.cur.envs) != c {
			if cap(r.cur.envs) < 2*c {
				t.Fatalf("row %d: the buffer grew from %d to %d rows, want at least double", i, c, cap(r.cur.envs))
			}
			steps, c = steps+1, cap(r.cur.envs)
		}
	}
	if steps > 4 {
		t.Fatalf("40,000 rows took %d reallocations from %d rows, want at most 4", steps, initialEnvs)
	}
}

// TestLegacyMemo: a legacy message's partition is found again by its
// sequence only; a slot reused by another sequence, or a partition out of
// range, is a miss (the runner decodes the message as before).
func TestLegacyMemo(t *testing.T) {
	var m legacyMemo
	for _, tc := range []struct {
		seq uint64
		p   int
	}{{1, 0}, {2, 7}, {3, events.MaxUsagePartitions - 1}, {1 << 40, 5}} {
		m.put(tc.seq, tc.p)
		if p, ok := m.get(tc.seq); !ok || p != tc.p {
			t.Fatalf("seq %d: got %d, %v, want %d", tc.seq, p, ok, tc.p)
		}
	}
	if _, ok := m.get(4); ok {
		t.Fatal("a sequence never put was found")
	}
	m.put(5, 3)
	m.put(5+legacyMemoSlots, 4) // the same slot
	if _, ok := m.get(5); ok {
		t.Fatal("a sequence whose slot was reused was found")
	}
	if p, ok := m.get(5 + legacyMemoSlots); !ok || p != 4 {
		t.Fatalf("the slot's new sequence: %d, %v", p, ok)
	}
	for _, bad := range []int{-1, events.MaxUsagePartitions} {
		m.put(9, bad)
		if _, ok := m.get(9); ok {
			t.Fatalf("partition %d was recorded", bad)
		}
	}
}
