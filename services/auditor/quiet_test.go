package auditor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestQuietPartitionsCatchUp: a partition without a single message is
// caught up with the stream like the others (its filtered consumer
// moves past the other partitions' messages, which its runner never
// handles). Before, one holder's usage on an auditor of eight partitions
// left the seven others at sequence 0 for ever, and with them the
// auditor's seen and written sequences, its status and the lag an
// operator watches.
func TestQuietPartitionsCatchUp(t *testing.T) {
	env := natstest.Run(t)
	var an idSet
	s := openStore(t, "quiet")
	o := partitioned(t, env.JS, s, t.TempDir(), nil, "quiet", &an)
	a, _, _ := run(t, o)

	at := time.Now().Add(-time.Hour).UTC()
	envs := make([]events.Envelope, 50)
	for i := range envs {
		envs[i] = billingUse(t, at, i)
	}
	last, _ := publishBatches(t, env.JS, envs, 10)
	busy := events.UsagePartition("acme", "billing-api", events.DefaultUsagePartitions)
	natstest.WaitFor(t, 60*time.Second, func() error {
		st := a.Stats()
		if len(st.Partitions) != events.DefaultUsagePartitions {
			return fmt.Errorf("%d partitions running, want %d", len(st.Partitions), events.DefaultUsagePartitions)
		}
		for _, ps := range st.Partitions {
			if ps.Seen < last || ps.Written < last || ps.Lag != 0 {
				return fmt.Errorf("partition %d (the holder's: %d): seen %d, written %d, lag %d; want %d, %d, 0",
					ps.Partition, busy, ps.Seen, ps.Written, ps.Lag, last, last)
			}
		}
		if st.SeenUsageSeq < last || st.LastUsageSeq < last {
			return fmt.Errorf("auditor: seen %d, written %d; want %d", st.SeenUsageSeq, st.LastUsageSeq, last)
		}
		return nil
	})
	if _, rows := rowIDs(t, s); rows != uint64(len(envs)) {
		t.Fatalf("%d rows in ClickHouse, want %d", rows, len(envs))
	}
}

// billingUse is usage event i of one token of the holder billing-api,
// i milliseconds after at.
func billingUse(t *testing.T, at time.Time, i int) events.Envelope {
	t.Helper()
	e, err := events.New("enforcer/edge-1", at.Add(time.Duration(i)*time.Millisecond), &events.UsageDecided{
		TokenID: "tok-1", Tenant: "acme", Holder: "billing-api", KeyID: "k1", Enforcer: "edge-1", Service: "payments",
		SourceIP: "10.0.0.7", Method: "GET", Route: "GET /invoices/{id}", Scope: "invoices:read",
		Decision: events.DecisionAllow, Reason: events.ReasonOK, LatencyNS: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
