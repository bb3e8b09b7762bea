package auditor_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestCombinedInserts: by default the groups an auditor's partitions close
// on their common beat go to ClickHouse in one insert; with
// SeparateInserts each partition writes its own. Both write every event
// exactly once, and the default writes fewer inserts for the same input.
func TestCombinedInserts(t *testing.T) {
	env := natstest.Run(t)
	last, ids := publishBatches(t, env.JS, simulated(t, 8000), 150)
	slices.Sort(ids)
	inserts := map[bool]auditor.Stats{}
	for _, separate := range []bool{false, true} {
		t.Run(fmt.Sprintf("separate=%v", separate), func(t *testing.T) {
			s := openStore(t, fmt.Sprintf("combine_%v", separate))
			var an idSet
			o := partitioned(t, env.JS, s, t.TempDir(), nil, fmt.Sprintf("combine-%v", separate), &an)
			// Groups close on the beat (a caught-up partition writes early
			// only from BatchSize/10 rows, more than a partition gets here).
			o.BatchSize, o.BatchWait, o.SeparateInserts = 100_000, time.Second, separate
			a, _, _ := run(t, o)
			waitWritten(t, last, 8, a)
			wantRowsOnce(t, s, ids)
			st := a.Stats()
			if separate && st.CombinedInserts != 0 {
				t.Fatalf("%d combined inserts with SeparateInserts", st.CombinedInserts)
			}
			if !separate && st.CombinedInserts == 0 {
				t.Fatalf("no combined insert (%d inserts for 8 partitions)", st.Batches)
			}
			inserts[separate] = st
		})
	}
	if c, s := inserts[false].Batches, inserts[true].Batches; c >= s {
		t.Fatalf("combined: %d inserts, separate: %d: combining saved none", c, s)
	}
}

// flakyStore fails every usage insert while failing is set, and records
// the events of the first insert it failed.
type flakyStore struct {
	*store.Store
	failing atomic.Bool
	mu      sync.Mutex
	first   []events.Envelope
	failed  chan struct{} // closed at the first failure
}

func (f *flakyStore) InsertUsageOnce(ctx context.Context, token string, evs []events.Envelope) error {
	if f.failing.Load() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.first == nil {
			f.first = slices.Clone(evs)
			close(f.failed)
		}
		return errors.New("injected insert failure")
	}
	return f.Store.InsertUsageOnce(ctx, token, evs)
}

// TestCombinedInsertAbandoned: a partition is lost while the combined
// insert that holds its group is retried. The insert cannot be written
// without it (its token covers every member), so it is abandoned: the
// lost partition writes nothing more, the others start again at once and
// write their groups from their intents; once the partition is back,
// every event is stored exactly once.
func TestCombinedInsertAbandoned(t *testing.T) {
	env := natstest.Run(t)
	envs := simulated(t, 6000)
	fs := &flakyStore{Store: openStore(t, "abandon"), failed: make(chan struct{})}
	owner := newSwitchOwner([]int{0, 1, 2, 3, 4, 5, 6, 7})
	var an idSet
	o := partitioned(t, env.JS, nil, t.TempDir(), nil, "abandon", &an)
	o.Store, o.Owner = fs, owner
	// No group closes by itself (no beat, no checkpoint, no caught-up
	// partition holds BatchSize/10 rows): the test closes them all at
	// once, so that they go in one insert whatever the machine's speed.
	o.BatchSize, o.BatchWait, o.CheckpointEvery = 100_000, time.Hour, time.Hour
	a, _, _ := run(t, o)
	seenAll := func(last uint64) {
		t.Helper()
		natstest.WaitFor(t, 60*time.Second, func() error {
			st := a.Stats()
			if len(st.Partitions) != 8 {
				return fmt.Errorf("%d partitions run, want 8", len(st.Partitions))
			}
			for _, p := range st.Partitions {
				if p.Seen < last {
					return fmt.Errorf("partition %d seen up to %d of %d", p.Partition, p.Seen, last)
				}
			}
			return nil
		})
	}
	last, ids := publishBatches(t, env.JS, envs[:2000], 100)
	seenAll(last)
	auditor.CallForGroups(a)
	waitWritten(t, last, 8, a)

	last, more := publishBatches(t, env.JS, envs[2000:], 100)
	seenAll(last)
	fs.failing.Store(true)
	auditor.CallForGroups(a)
	select {
	case <-fs.failed:
	case <-time.After(2 * time.Minute):
		t.Fatal("no insert was tried")
	}
	fs.mu.Lock()
	members := map[int]int{}
	for _, e := range fs.first {
		u := e.Data.(*events.UsageDecided)
		members[events.UsagePartition(u.Tenant, u.Holder, 8)]++
	}
	fs.mu.Unlock()
	if len(members) < 2 {
		t.Fatalf("the failed insert held the groups of %d partition(s), want a combined insert", len(members))
	}
	lost := -1
	for p := range members {
		lost = max(lost, p)
	}
	owner.Released(lost) // Valid(lost) is false from now on
	fs.failing.Store(false)

	// Every other partition writes its group again from its intent.
	natstest.WaitFor(t, 60*time.Second, func() error {
		st := a.Stats()
		var replayed uint64
		for _, p := range st.Partitions {
			if p.Partition == lost {
				return fmt.Errorf("partition %d still runs after it was lost", lost)
			}
			if p.Written < last {
				return fmt.Errorf("partition %d written up to %d of %d", p.Partition, p.Written, last)
			}
			replayed += p.Replayed
		}
		if len(st.Partitions) != 7 {
			return fmt.Errorf("%d partitions run, want 7", len(st.Partitions))
		}
		if replayed == 0 {
			return errors.New("no group was written from its intent")
		}
		return nil
	})
	lostRows := 0
	for _, e := range envs[2000:] {
		u := e.Data.(*events.UsageDecided)
		if events.UsagePartition(u.Tenant, u.Holder, 8) == lost {
			lostRows++
		}
	}
	if _, rows := rowIDs(t, fs.Store); rows != uint64(len(ids)+len(more)-lostRows) {
		t.Fatalf("%d raw rows while partition %d is lost, want %d", rows, lost, len(ids)+len(more)-lostRows)
	}

	// Valid again: the lost partition resumes and writes its rows.
	owner.forgetReleased()
	waitWritten(t, last, 8, a)
	want := slices.Concat(ids, more)
	wantRowsOnce(t, fs.Store, want)
}
