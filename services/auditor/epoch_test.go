package auditor_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestStreamCreatedAgain: NATS is set up again from nothing (the USAGE
// stream created again, its sequences starting over) while ClickHouse keeps
// its tables, and the same traffic comes again as new events. The new
// stream's insert covers exactly the ranges of the old one's, whose token
// ClickHouse still remembers; it must not be dropped as a copy of it:
// every event of both streams is stored once.
func TestStreamCreatedAgain(t *testing.T) {
	first := simulated(t, 2000)
	again := slices.Clone(first)
	for i := range again {
		again[i].ID = uuid.Must(uuid.NewV7())
	}
	s := openStore(t, "created_again")
	var ids []string
	for i, envs := range [][]events.Envelope{first, again} {
		env := natstest.Run(t)
		last, more := publishBatches(t, env.JS, envs, 100)
		var an idSet
		o := partitioned(t, env.JS, s, t.TempDir(), nil, "created-again", &an)
		// No group closes by itself: the test closes them all at once,
		// so that both streams write one insert of the same ranges.
		o.BatchSize, o.BatchWait, o.CheckpointEvery = 100_000, time.Hour, time.Hour
		a, cancel, done := run(t, o)
		natstest.WaitFor(t, time.Minute, func() error {
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
		auditor.CallForGroups(a)
		waitWritten(t, last, 8, a)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("auditor %d: %v", i, err)
		}
		ids = append(ids, more...)
		wantRowsOnce(t, s, slices.Clone(ids))
	}
}
