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
)

// TestCombinedAnomalyWrites: by default an auditor's partitions write
// their anomalies together; with SeparateInserts each writes its own.
// Both store every anomaly raised, and the default needs fewer inserts:
// at least one per partition with anomalies when they are separate.
func TestCombinedAnomalyWrites(t *testing.T) {
	env := natstest.Run(t)
	last, _ := publishBatches(t, env.JS, simulated(t, 8000), 150)
	inserts := map[bool]uint64{}
	for _, separate := range []bool{false, true} {
		t.Run(fmt.Sprintf("separate=%v", separate), func(t *testing.T) {
			s := openStore(t, fmt.Sprintf("anomaly_writes_%v", separate))
			var an idSet
			o := partitioned(t, env.JS, s, t.TempDir(), nil, fmt.Sprintf("anomaly-writes-%v", separate), &an)
			// A writer's linger of a second: the partitions' anomalies
			// meet in it however slow the machine is.
			o.AnomalyWait, o.SeparateInserts = 2*time.Second, separate
			a, _, _ := run(t, o)
			waitWritten(t, last, 8, a)
			raised := an.sorted()
			if got := storedAnomalies(t, s); !slices.Equal(got, raised) {
				t.Fatalf("%d anomalies stored, %d raised", len(got), len(raised))
			}
			st := a.Stats()
			with := 0
			for _, p := range st.Partitions {
				if p.Anomalies > 0 {
					with++
				}
			}
			if with < 2 {
				t.Fatalf("anomalies in %d partition(s): the input must raise them in several", with)
			}
			if separate && st.AnomalyInserts < uint64(with) {
				t.Fatalf("%d anomaly inserts for %d partitions with anomalies, written separately", st.AnomalyInserts, with)
			}
			inserts[separate] = st.AnomalyInserts
		})
	}
	if c, s := inserts[false], inserts[true]; c >= s {
		t.Fatalf("combined: %d anomaly inserts, separate: %d: combining saved none", c, s)
	}
}

// failingAnomalies fails every anomaly insert while failing is set, and
// records the partitions of each failed insert's anomalies.
type failingAnomalies struct {
	*store.Store
	failing atomic.Bool
	mu      sync.Mutex
	failed  []map[int]int // partition → anomalies, per failed insert
}

func (f *failingAnomalies) InsertAnomalies(ctx context.Context, evs []events.Envelope) error {
	if f.failing.Load() {
		members := map[int]int{}
		for _, e := range evs {
			an := e.Data.(*events.AnomalyDetected)
			members[events.UsagePartition(an.Tenant, an.Holder, 8)]++
		}
		f.mu.Lock()
		f.failed = append(f.failed, members)
		f.mu.Unlock()
		return errors.New("injected anomaly insert failure")
	}
	return f.Store.InsertAnomalies(ctx, evs)
}

// combinedFailure returns the partitions of a failed insert that held the
// anomalies of several, if one did.
func (f *failingAnomalies) combinedFailure() map[int]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.failed {
		if len(m) >= 2 {
			return m
		}
	}
	return nil
}

// TestCombinedAnomalyWriteMemberStops: the store refuses anomalies while
// the writer retries an insert holding several partitions' anomalies, and
// one of them is moved away. Its runner stops within its shutdown grace
// (the writer answers it and goes on without it), the others' anomalies
// are stored once the store takes them, and once the partition is back
// it raises its anomalies again from its checkpoint: every anomaly raised
// is stored.
func TestCombinedAnomalyWriteMemberStops(t *testing.T) {
	env := natstest.Run(t)
	fs := &failingAnomalies{Store: openStore(t, "anomaly_member_stops")}
	fs.failing.Store(true)
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	owner := newSwitchOwner(all)
	var an idSet
	o := partitioned(t, env.JS, nil, t.TempDir(), nil, "anomaly-member-stops", &an)
	o.Store, o.Owner, o.ShutdownGrace = fs, owner, time.Second
	a, _, _ := run(t, o)
	last, _ := publishBatches(t, env.JS, simulated(t, 8000), 150)

	var members map[int]int
	natstest.WaitFor(t, 2*time.Minute, func() error {
		if members = fs.combinedFailure(); members == nil {
			return errors.New("no failed anomaly insert held several partitions' anomalies yet")
		}
		return nil
	})
	lost := -1
	for p := range members {
		lost = max(lost, p)
	}
	rest := slices.DeleteFunc(slices.Clone(all), func(p int) bool { return p == lost })
	owner.move(rest)
	natstest.WaitFor(t, time.Minute, func() error {
		st := a.Stats()
		for _, p := range st.Partitions {
			if p.Partition == lost {
				return fmt.Errorf("partition %d still runs: its anomaly write was not given up", lost)
			}
		}
		return nil
	})
	fs.failing.Store(false)
	waitWritten(t, last, 7, a)

	owner.forgetReleased()
	owner.move(all)
	waitWritten(t, last, 8, a)
	raised := an.sorted()
	if got := storedAnomalies(t, fs.Store); !slices.Equal(got, raised) {
		t.Fatalf("%d anomalies stored, %d raised", len(got), len(raised))
	}
}
