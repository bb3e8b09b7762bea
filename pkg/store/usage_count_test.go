package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// tokenless is an enforcer's folded event: n token-less denials from ip.
func tokenless(t testing.TB, at time.Time, ip string, n int64) events.Envelope {
	return mustEnvelope(t, at, &events.UsageDecided{Enforcer: "edge-1", Service: "orders", SourceIP: ip, UserAgent: "curl/8",
		Method: "GET", Route: "/orders/{id}", Scope: "orders:read", Decision: events.DecisionDeny, Reason: "missing", LatencyNS: 700, Count: n})
}

// TestUsageCount: a folded event is one row whose count says how many
// requests it stands for; every other row counts 1; re-delivery does not
// count twice once the parts are merged.
func TestUsageCount(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, b := openStore(t, e, db, store.Options{})
		now := time.Now().UTC().Add(-time.Minute)
		folded := tokenless(t, now, "203.0.113.9", 300)
		evs := []events.Envelope{
			folded,
			tokenless(t, now, "203.0.113.10", 0), // absent: one request
			usage(t, now, newID(), "billing", "orders:read", "10.0.0.1", events.DecisionAllow, "ok"),
		}
		if err := s.InsertUsage(ctx, evs); err != nil {
			t.Fatal(err)
		}
		if err := s.Insert(ctx, []events.Envelope{folded}); err != nil { // re-delivered
			t.Fatal(err)
		}
		if err := b.Exec(ctx, "OPTIMIZE TABLE `"+db+"`.usage_events_raw FINAL"); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT count() FROM usage_events"); n != 3 {
			t.Fatalf("usage_events has %d rows, want 3", n)
		}
		if n := count(t, s, "SELECT toUInt64(sum(count)) FROM usage_events"); n != 302 {
			t.Fatalf("usage_events stands for %d requests, want 302", n)
		}
		res := queryRows(t, s, "SELECT source_ip, toUInt64(sum(count)) AS requests FROM usage_events WHERE token_id = '' GROUP BY source_ip ORDER BY source_ip")
		want := fmt.Sprint([][]any{{"203.0.113.10", uint64(1)}, {"203.0.113.9", uint64(300)}})
		if got := fmt.Sprint(res.Rows); got != want {
			t.Fatalf("requests per source %s, want %s", got, want)
		}
	})
}

// TestUsageCountMigration: a database written before the count column
// existed gains it with every old row counting 1.
func TestUsageCountMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := context.Background()
		b := e.open(t, db)
		migrateBefore(t, b, db, 5)
		old := []string{"event_id", "time", "token_id", "tenant", "holder", "kid", "enforcer", "service",
			"source_ip", "user_agent", "method", "route", "scope", "decision", "reason", "latency_ns"}
		row := fmt.Sprintf(`["%s","%s","","","","","edge-1","orders","203.0.113.9","curl/8","GET","/orders/{id}","","deny","missing",500]`+"\n",
			newID(), time.Now().UTC().Format("2006-01-02 15:04:05.000000"))
		if err := b.Insert(ctx, "usage_events_raw", old, []byte(row), store.InsertOptions{}); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(ctx, b, store.Options{})
		if err != nil {
			t.Fatalf("open the old database: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if n := count(t, s, "SELECT toUInt64(sum(count)) FROM usage_events"); n != 1 {
			t.Fatalf("the old row counts %d, want 1", n)
		}
		if err := s.InsertUsage(ctx, []events.Envelope{tokenless(t, time.Now().UTC(), "203.0.113.9", 41)}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT toUInt64(sum(count)) FROM usage_events WHERE source_ip = '203.0.113.9'"); n != 42 {
			t.Fatalf("requests from the source: %d, want 42", n)
		}
	})
}

// migrateBefore applies the store's migrations older than version to b,
// as a build from before that migration left the database.
func migrateBefore(t *testing.T, b store.Backend, db string, version int) {
	t.Helper()
	ms, err := store.Migrations(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version >= version {
			break
		}
		for _, stmt := range m.Statements {
			if err := b.Exec(context.Background(), stmt); err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
		}
	}
}
