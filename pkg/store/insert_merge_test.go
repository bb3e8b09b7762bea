package store_test

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// TestUsageInsertSkipsBlockMerge: usage inserts reach the engine with
// optimize_on_insert = 0 (InsertOptions.NoInsertMerge), on every backend and
// through both entry points: an event repeated within one insert stays two
// rows in usage_events_raw until a merge, and usage_events (FINAL) shows
// it once. Other tables keep the merge on insert: an anomaly repeated
// within one insert is one row at once.
func TestUsageInsertSkipsBlockMerge(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, b := openStore(t, e, db, store.Options{})
		evs := genUsage(t, 4, []string{newID()}, []string{"billing"}, day0).events
		for i, insert := range []func([]events.Envelope) error{
			func(batch []events.Envelope) error { return s.InsertUsageOnce(ctx, "merge-test", batch) },
			func(batch []events.Envelope) error { return s.InsertUsage(ctx, batch) },
		} {
			batch := []events.Envelope{evs[2*i], evs[2*i], evs[2*i+1]}
			if err := insert(batch); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(t, s, "SELECT count() FROM usage_events_raw"); n != 6 {
			t.Errorf("usage_events_raw holds %d rows, want the 6 written (each insert's copy kept until a merge)", n)
		}
		if n := count(t, s, "SELECT count() FROM usage_events"); n != 4 {
			t.Errorf("usage_events shows %d rows, want 4 events", n)
		}
		if err := b.Exec(ctx, "OPTIMIZE TABLE `"+db+"`.usage_events_raw FINAL"); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT count() FROM usage_events_raw"); n != 4 {
			t.Errorf("after OPTIMIZE FINAL usage_events_raw holds %d rows, want 4", n)
		}

		an := mustEnvelope(t, day0.Add(time.Minute), &events.AnomalyDetected{
			AnomalyID: newID(), Detector: "new_ip", Severity: events.SeverityHigh, TokenID: newID(), Tenant: "acme",
			Holder: "billing", EventID: newID(), EventTime: day0, SourceIP: "192.0.2.1",
			Evidence: events.Evidence{Seen: "192.0.2.1", Baseline: "10.0.0.0/8"},
		})
		if err := s.InsertAnomalies(ctx, []events.Envelope{an, an}); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT count() FROM anomalies_raw"); n != 1 {
			t.Errorf("anomalies_raw holds %d rows, want 1 (merged on insert)", n)
		}
	})
}
