package events_test

import (
	"slices"
	"testing"

	"github.com/cordonhq/cordon/pkg/events"
)

// TestDenyReasons: the closed set is distinct, never holds the allow
// reason, and IsDenyReason agrees with it; callers get their own copy.
func TestDenyReasons(t *testing.T) {
	all := events.DenyReasons()
	if len(all) == 0 {
		t.Fatal("no deny reasons")
	}
	seen := map[string]bool{}
	for _, r := range all {
		if seen[r] {
			t.Errorf("deny reason %q listed twice", r)
		}
		seen[r] = true
		if !events.IsDenyReason(r) {
			t.Errorf("IsDenyReason(%q) = false", r)
		}
	}
	for _, r := range []string{events.ReasonOK, "", "Revoked", "audience_mismatch", "revoked "} {
		if events.IsDenyReason(r) {
			t.Errorf("IsDenyReason(%q) = true", r)
		}
	}
	all[0] = "tampered"
	if slices.Contains(events.DenyReasons(), "tampered") {
		t.Error("DenyReasons returned its own slice")
	}
}
