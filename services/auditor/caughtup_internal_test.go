package auditor

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
)

// TestCaughtUp: a runner is caught up with the stream's last sequence when
// no message on its subjects lies after the last one it handled (or found
// caught up with): whatever other partitions' messages follow, and also
// when it never had a message; not while one of its own is unhandled,
// legacy per-event messages (every partition's) included.
func TestCaughtUp(t *testing.T) {
	env := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := &Auditor{o: Options{JS: env.JS}, streams: map[string]jetstream.Stream{}}
	busy := events.UsagePartition("acme", "billing-api", events.DefaultUsagePartitions)
	other := (busy + 1) % events.DefaultUsagePartitions
	quiet := (busy + 2) % events.DefaultUsagePartitions
	filters := func(p int) []string { return (&runner{p: p}).filters() }
	publish := func(subject string) {
		t.Helper()
		if _, err := env.JS.Publish(ctx, subject, []byte("batch")); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		publish(events.UsageBatchSubject("acme", "edge-1", "billing-api")) // 1, 2, 3: busy's
	}
	// other's: a holder of that partition.
	holder := ""
	for i := 0; holder == ""; i++ {
		if h := "h" + string(rune('a'+i%26)) + string(rune('a'+i/26)); events.UsagePartition("acme", h, events.DefaultUsagePartitions) == other {
			holder = h
		}
	}
	publish(events.UsageBatchSubject("acme", "edge-1", holder)) // 4: other's

	cases := []struct {
		what string
		p    int
		from uint64
		ok   bool
		last uint64
	}{
		{"busy, its last message unhandled", busy, 2, false, 0},
		{"busy, every message of its own handled, another partition's after", busy, 3, true, 4},
		{"other, before its message", other, 3, false, 0},
		{"other, its message handled", other, 4, true, 4},
		{"a partition without messages", quiet, 0, true, 4},
	}
	check := func(extra string) {
		t.Helper()
		for _, c := range cases {
			last, ok := a.caughtUp(ctx, events.StreamUsage, filters(c.p), c.from)
			if ok != c.ok || last != c.last {
				t.Errorf("%s%s: caught up %v at %d, want %v at %d", c.what, extra, ok, last, c.ok, c.last)
			}
		}
	}
	check("")

	// A legacy per-event message (5) is every partition's.
	publish(events.UsageSubject("acme", "edge-1"))
	for i := range cases {
		if cases[i].ok {
			cases[i].ok, cases[i].last = false, 0
		}
	}
	check(", a legacy message after")
	for _, p := range []int{busy, other, quiet} {
		if last, ok := a.caughtUp(ctx, events.StreamUsage, filters(p), 5); !ok || last != 5 {
			t.Errorf("partition %d, the legacy message handled: caught up %v at %d, want at 5", p, ok, last)
		}
	}
	// The ledger's subjects.
	if last, ok := a.caughtUp(ctx, events.StreamTokens, ledgerFilters, 0); !ok {
		t.Errorf("empty ledger: not caught up (%d)", last)
	}
}
