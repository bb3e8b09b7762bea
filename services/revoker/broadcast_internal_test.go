package revoker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestHeartbeatChunks: a pending list longer than one heartbeat holds —
// by count (events.MaxDenyPending) or by size (the server's max payload) —
// goes out in several heartbeats with the same Seq, More on all but the
// last, together carrying every pending change once; each decodes.
func TestHeartbeatChunks(t *testing.T) {
	env := natstest.Run(t)
	cases := []struct {
		name      string
		n, size   int
		minChunks int
	}{
		{"by count", 1100, 100, 3},
		{"by size", 300, events.MaxDenyValue - 100, 3},
		{"one", 3, 100, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var st counters
			b := newBroadcaster(env.NC, "rev-"+strings.ReplaceAll(tc.name, " ", "-"), 50*time.Millisecond, 16, time.Now, zerolog.Nop(), &st)
			value := []byte(`{"reason":"` + strings.Repeat("x", tc.size) + `"}`)
			for i := range tc.n {
				b.announce(fmt.Sprintf("tok.%06d", i), value, 0)
			}
			b.announce("tok.written", value, 42) // not pending
			var (
				mu  sync.Mutex
				got []events.DenyHeartbeat
				bad []error
			)
			sub, err := env.NC.Subscribe(events.SubjectDenyHeartbeat, func(m *nats.Msg) {
				h, err := events.DecodeDenyHeartbeat(m.Data)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					bad = append(bad, err)
				}
				if h.Origin == b.origin {
					got = append(got, h)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			if err := env.NC.Flush(); err != nil {
				t.Fatal(err)
			}
			b.heartbeat()
			natstest.WaitFor(t, 10*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(bad) > 0 {
					t.Fatalf("heartbeat does not decode: %v", bad)
				}
				if len(got) == 0 || got[len(got)-1].More {
					return fmt.Errorf("%d heartbeats, the last with more to come", len(got))
				}
				return nil
			})
			if len(got) < tc.minChunks || st.broadcastErrors.Load() != 0 {
				t.Fatalf("%d heartbeats (want at least %d), %d errors", len(got), tc.minChunks, st.broadcastErrors.Load())
			}
			seen := map[uint64]bool{}
			for i, h := range got {
				if h.Seq != uint64(tc.n+1) || h.KVRev != 42 || h.More != (i < len(got)-1) || h.Interval != 50*time.Millisecond {
					t.Fatalf("heartbeat %d of %d: seq %d kv_rev %d more %v", i+1, len(got), h.Seq, h.KVRev, h.More)
				}
				for _, p := range h.Pending {
					if seen[p.Seq] {
						t.Fatalf("pending change %d carried twice", p.Seq)
					}
					seen[p.Seq] = true
				}
			}
			if len(seen) != tc.n {
				t.Fatalf("heartbeats carried %d pending changes, want %d", len(seen), tc.n)
			}
		})
	}
}

// TestJournalDamage: a torn last line (a crash while appending) loses
// only that record; damage before the last line is an error naming the
// line.
func TestJournalDamage(t *testing.T) {
	add := `{"add":{"id":"a","kind":"token","since":"2026-12-03T10:00:00Z","token":{"key":"tok.x","rec":{"kind":"token","token_id":"x","reason":"r","actor":"a","revoked_at":"2026-12-03T10:00:00Z","expiry":"2026-12-03T11:00:00Z"}}}}`
	cases := []struct {
		name, text string
		jobs       int
		err        string
	}{
		{"empty", "", 0, ""},
		{"added", add + "\n", 1, ""},
		{"added then done", add + "\n" + `{"done":"a"}` + "\n", 0, ""},
		{"torn last line", add + "\n" + `{"add":{"id":"b","ki`, 1, ""},
		{"damage inside", add + "\n" + `{"add":` + "\n" + add + "\n", 0, "line 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, journalFile), []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			j, jobs, err := openJournal(dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer j.close()
			if len(jobs) != tc.jobs {
				t.Fatalf("%d jobs, want %d", len(jobs), tc.jobs)
			}
			// The journal is rewritten compacted: reading it again gives
			// the same jobs.
			j.close()
			j2, again, err := openJournal(dir)
			if err != nil || len(again) != tc.jobs {
				t.Fatalf("reopened: %d jobs, %v", len(again), err)
			}
			j2.close()
		})
	}
}
