package store_test

import (
	"testing"

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
