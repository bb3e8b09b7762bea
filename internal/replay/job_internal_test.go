package replay

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/replay-1":   "/tmp/replay-1",
		"a b":             "'a b'",
		"it's":            `'it'\''s'`,
		"":                "''",
		"$(rm -rf ~)":     "'$(rm -rf ~)'",
		"dir/x=1:y@z.lan": "dir/x=1:y@z.lan",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestResultJSON: the JSON form has every count, empty lists rather than
// null, and each anomaly's evidence flattened.
func TestResultJSON(t *testing.T) {
	b, err := json.Marshal((&Result{Lines: 3}).JSON())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"lines":3`, `"bad_lines":[]`, `"anomalies":[]`, `"sorted":false`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	r := &Result{Usage: 2, Bad: 1, BadLines: []BadLine{{Line: 4, Err: "malformed event"}}, Anomalies: []Anomaly{{AnomalyDetected: events.AnomalyDetected{
		AnomalyID: "a1", Detector: "new_network", Severity: "medium", TokenID: "t1", Tenant: "acme", Holder: "billing", EventID: "e1",
		EventTime: at, Evidence: events.Evidence{Seen: "203.0.113.0/24", Baseline: "10.0.0.0/24"}}, Received: at}}}
	got := r.JSON()
	want := AnomalyJSON{Detector: "new_network", Severity: "medium", TokenID: "t1", Tenant: "acme", Holder: "billing", EventTime: at, EventID: "e1",
		Seen: "203.0.113.0/24", Baseline: "10.0.0.0/24", AnomalyID: "a1"}
	if got.Usage != 2 || got.Bad != 1 || len(got.BadLines) != 1 || len(got.Anomalies) != 1 || got.Anomalies[0] != want {
		t.Errorf("JSON() = %+v", got)
	}
}
