package auditor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/auditor"
)

// TestTrickleDoesNotWriteEveryMessage: usage that trickles in, the
// partition caught up between every two messages, is not written one
// small insert per message (each insert has a fixed cost in the engine):
// a caught-up partition writes its open group at once only when it holds
// a tenth of BatchSize; a burst that fills that much is written as soon
// as the partition caught up, without waiting out BatchWait. Only the
// holder's partition is watched: it is the one that gets the messages.
func TestTrickleDoesNotWriteEveryMessage(t *testing.T) {
	env := natstest.Run(t)
	var an idSet
	s := openStore(t, "trickle")
	o := partitioned(t, env.JS, s, t.TempDir(), nil, "trickle", &an)
	// Only the caught-up rule can write before the end: the wait and
	// the checkpoints (which write the open group) are far away.
	o.BatchSize, o.BatchWait, o.CheckpointEvery = 1000, time.Hour, time.Hour
	a, _, _ := run(t, o)

	at := time.Now().Add(-time.Hour).UTC()
	use := func(i int) events.Envelope { return billingUse(t, at, i) }
	part := events.UsagePartition("acme", "billing-api", events.DefaultUsagePartitions)
	partStats := func() auditor.PartitionStats {
		for _, ps := range a.Stats().Partitions {
			if ps.Partition == part {
				return ps
			}
		}
		return auditor.PartitionStats{Partition: part} // not started yet
	}
	seen := func(seq uint64) {
		t.Helper()
		natstest.WaitFor(t, 60*time.Second, func() error {
			if ps := partStats(); ps.Seen < seq {
				return fmt.Errorf("partition %d seen up to %d of %d", part, ps.Seen, seq)
			}
			return nil
		})
	}
	// 40 messages of one event, each handled and caught up with before
	// the next is published.
	var last uint64
	for i := range 40 {
		last, _ = publishBatches(t, env.JS, []events.Envelope{use(i)}, 1)
		seen(last)
		// Time for the partition's probes (every 20 ms after a message)
		// to find it caught up. On a loaded machine they may come later:
		// the test then proves less, but never fails for it.
		time.Sleep(100 * time.Millisecond)
	}
	if st, ps := a.Stats(), partStats(); st.Batches != 0 || ps.Written >= last {
		t.Fatalf("after 40 trickled events: %d inserts, written up to %d of %d; want none written (the group holds fewer than %d rows)",
			st.Batches, ps.Written, last, o.BatchSize/10)
	}
	// A burst, one message, that takes the open group past a tenth of
	// BatchSize: written once caught up, in one insert.
	burst := make([]events.Envelope, 200)
	for i := range burst {
		burst[i] = use(40 + i)
	}
	last, _ = publishBatches(t, env.JS, burst, len(burst))
	natstest.WaitFor(t, 120*time.Second, func() error {
		if ps := partStats(); ps.Written < last {
			return fmt.Errorf("partition %d written up to %d of %d", part, ps.Written, last)
		}
		return nil
	})
	if st := a.Stats(); st.Batches != 1 || st.Usage != 240 {
		t.Fatalf("after the burst: %d inserts of %d rows; want every row, in one insert", st.Batches, st.Usage)
	}
	if _, rows := rowIDs(t, s); rows != 240 {
		t.Fatalf("%d rows in ClickHouse, want 240", rows)
	}
}
