package store_test

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// TestMissingUsage: the events whose rows the table does not hold, in
// order, across more than one query's worth of ids.
func TestMissingUsage(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		evs := genUsage(t, 4500, []string{newID(), newID()}, []string{"billing"}, day0).events
		if got, err := s.MissingUsage(ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("nothing asked: %d missing, %v", len(got), err)
		}
		if err := s.InsertUsageOnce(ctx, "usage:p0:1-1000", evs[:1000]); err != nil {
			t.Fatal(err)
		}
		if err := s.InsertUsageOnce(ctx, "usage:p0:1501-3000", evs[1500:3000]); err != nil {
			t.Fatal(err)
		}
		got, err := s.MissingUsage(ctx, evs)
		if err != nil {
			t.Fatal(err)
		}
		want := append(append([]events.Envelope{}, evs[1000:1500]...), evs[3000:]...)
		if len(got) != len(want) {
			t.Fatalf("%d missing, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i].ID != want[i].ID {
				t.Fatalf("missing[%d] = %s, want %s", i, got[i].ID, want[i].ID)
			}
		}
		if got, err := s.MissingUsage(ctx, evs[:1000]); err != nil || len(got) != 0 {
			t.Fatalf("written rows: %d missing, %v", len(got), err)
		}
	})
}

// TestMissingAnomaliesQuotesIDs: an anomaly id is a string the query
// carries as a literal: quotes, backslashes and SQL in it are matched as
// text, never run.
func TestMissingAnomaliesQuotesIDs(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		var evs []events.Envelope
		for i, id := range []string{`a' OR 1=1 --`, `b\' OR '1'='1`, "c') UNION SELECT name FROM system.tables --", "plain"} {
			env, err := events.New("auditor", day0.Add(time.Duration(i)*time.Minute), &events.AnomalyDetected{
				AnomalyID: id, Detector: "new_network", Severity: events.SeverityHigh, TokenID: "tok-1",
				Tenant: "acme", Holder: "billing-api", EventID: "e1", EventTime: day0, SourceIP: "203.0.113.9"})
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, env)
		}
		got, err := s.MissingAnomalies(ctx, evs)
		if err != nil || len(got) != len(evs) {
			t.Fatalf("nothing stored: %d missing, %v; want %d", len(got), err, len(evs))
		}
		if err := s.InsertAnomalies(ctx, evs[:2]); err != nil {
			t.Fatal(err)
		}
		got, err = s.MissingAnomalies(ctx, evs)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != evs[2].ID || got[1].ID != evs[3].ID {
			t.Fatalf("%d missing after storing the first two, want the last two", len(got))
		}
	})
}
