package auditor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestTrickleDoesNotWriteEveryMessage: usage that trickles in, the
// partition caught up between every two messages, is not written one
// small insert per message (each insert has a fixed cost in the engine):
// a caught-up partition writes its open group at once only when it holds
// a tenth of BatchSize; a burst that fills that much is written as soon
// as the partition caught up, without waiting out BatchWait. The seven
// partitions without a message are caught up too (SeenUsageSeq is the
// least of the eight): their filtered consumers moved past the others'
// messages, which once kept them from ever being caught up.
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
	use := func(i int) events.Envelope {
		e, err := events.New("enforcer/edge-1", at.Add(time.Duration(i)*time.Millisecond), &events.UsageDecided{
			TokenID: "tok-1", Tenant: "acme", Holder: "billing-api", KeyID: "k1", Enforcer: "edge-1", Service: "payments",
			SourceIP: "10.0.0.7", Method: "GET", Route: "GET /invoices/{id}", Scope: "invoices:read",
			Decision: events.DecisionAllow, Reason: events.ReasonOK, LatencyNS: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	seen := func(seq uint64) {
		t.Helper()
		natstest.WaitFor(t, 60*time.Second, func() error {
			if st := a.Stats(); st.SeenUsageSeq < seq {
				return fmt.Errorf("seen up to %d of %d (%+v)", st.SeenUsageSeq, seq, st.Partitions)
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
	}
	if st := a.Stats(); st.Batches != 0 || st.LastUsageSeq >= last {
		t.Fatalf("after 40 trickled events: %d inserts, written up to %d of %d; want none written (the group holds fewer than %d rows)",
			st.Batches, st.LastUsageSeq, last, o.BatchSize/10)
	}
	// A burst, one message, that takes the open group past a tenth of
	// BatchSize: written once caught up, in one insert.
	burst := make([]events.Envelope, 200)
	for i := range burst {
		burst[i] = use(40 + i)
	}
	last, _ = publishBatches(t, env.JS, burst, len(burst))
	waitWritten(t, last, 8, a)
	if st := a.Stats(); st.Batches != 1 || st.Usage != 240 {
		t.Fatalf("after the burst: %d inserts of %d rows; want every row, in one insert", st.Batches, st.Usage)
	}
	if _, rows := rowIDs(t, s); rows != 240 {
		t.Fatalf("%d rows in ClickHouse, want 240", rows)
	}
}
