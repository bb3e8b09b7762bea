package events_test

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// TestDerivedID: the same key and time give the same UUIDv7, pinned to
// the value anomaly ids have had since they were first derived (a change
// would raise every re-derived anomaly twice across an upgrade); another
// key gives another id.
func TestDerivedID(t *testing.T) {
	at := time.UnixMilli(1764800000123)
	id := events.DerivedID(at, "new_network\x00tok-1\x00ev-1")
	if got := id.String(); got != "019ae646-f07b-732c-9957-e55765827cc5" {
		t.Fatalf("DerivedID = %s, want the pinned value", got)
	}
	if id.Version() != 7 || id != events.DerivedID(at, "new_network\x00tok-1\x00ev-1") || id == events.DerivedID(at, "new_network\x00tok-1\x00ev-2") {
		t.Fatal("DerivedID is not a stable, key-dependent UUIDv7")
	}
}
