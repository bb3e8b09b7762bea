package issuer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/leak"
	"github.com/cordonhq/cordon/pkg/token"
)

// leakAnomalies reads the leaked_public anomalies on the ANOMALIES stream.
func (h *harness) leakAnomalies() []events.AnomalyDetected {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.env.JS.Stream(ctx, events.StreamAnomalies)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.AnomalyDetected
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		env, err := events.Decode(m.Data)
		if err != nil {
			h.t.Fatalf("anomaly %d: %v", seq, err)
		}
		if a, ok := env.Data.(*events.AnomalyDetected); ok && a.Detector == events.DetectorLeakedPublic {
			out = append(out, *a)
		}
		if strings.Contains(string(m.Data), "cordon_") {
			h.t.Errorf("anomaly %d carries a token-shaped string", seq)
		}
	}
	return out
}

// TestLeakPlainIntake: the unsigned intake labels a live token of this
// issuer true_positive and raises one critical leaked_public anomaly for
// it naming where it was found; an expired token, a broken checksum and
// garbage are false positives and raise nothing; the same report sent
// again is the same anomaly; the NATS subject does the same; a burst
// beyond the limit is refused with 429; the GitHub route is off until
// configured.
func TestLeakPlainIntake(t *testing.T) {
	h := newHarness(t)
	live := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})
	short := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1m"})
	h.clk.Advance(2 * time.Minute)
	broken := []byte(live.Token)
	broken[len(broken)-1] ^= 0x01
	reports := []leak.Report{
		{Token: live.Token, Type: "cordon", URL: "https://gist.example/abc", Source: "gist"},
		{Token: short.Token, Type: "cordon", URL: "https://gist.example/def"},
		{Token: string(broken), Type: "cordon", URL: "https://gist.example/ghi"},
		{Token: "not a token at all", Type: "other"},
	}
	body, err := json.Marshal(reports)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		fb := call[[]leak.Feedback](h, "POST", "/v1/leaks", "", string(body), http.StatusOK)
		want := []leak.Label{leak.TruePositive, leak.FalsePositive, leak.FalsePositive, leak.FalsePositive}
		for n := range want {
			if fb[n].Label != want[n] || fb[n].TokenHash == "" {
				t.Fatalf("round %d, report %d: %+v, want %s", round, n, fb[n], want[n])
			}
		}
	}
	an := h.leakAnomalies()
	if len(an) != 1 {
		t.Fatalf("%d leaked_public anomalies for two identical reports of one live token, want 1", len(an))
	}
	a := an[0]
	if a.TokenID != live.ID || a.Severity != events.SeverityCritical || a.Holder != "billing-api" ||
		a.Evidence.Details[events.LeakDetailURL] != "https://gist.example/abc" || !strings.Contains(a.Evidence.Seen, "https://gist.example/abc") {
		t.Fatalf("anomaly %+v", a)
	}

	// Over NATS (the admin's credential in a deployment).
	msg, err := h.env.NC.Request(events.SubjectCmdReportLeak, body, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var res LeakResult
	if err := json.Unmarshal(msg.Data, &res); err != nil || res.Compromised != 1 || len(res.Feedback) != 4 {
		t.Fatalf("NATS reply %s: %v", msg.Data, err)
	}

	// Malformed bodies are refused with a reason.
	for _, bad := range []string{`{"token":"x"}`, `[{"type":"t"}]`, `[`} {
		if st, out := h.do("POST", "/v1/leaks", "", bad); st != http.StatusBadRequest || !strings.Contains(string(out), "leak report") {
			t.Errorf("body %s: %d %s, want 400", bad, st, out)
		}
	}
	// The GitHub route is off until --leak-github-keys is given.
	if st, out := h.do("POST", "/v1/leaks/github", "", string(body)); st != http.StatusNotFound || !strings.Contains(string(out), "--leak-github-keys") {
		t.Errorf("unconfigured GitHub route: %d %s", st, out)
	}
	// The clock stands still: the burst runs out, then 429.
	limited := 0
	for range DefaultLeakBurst + 5 {
		st, _ := h.do("POST", "/v1/leaks", "", `[]`)
		if st == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Error("no request refused beyond the burst")
	}
	h.clk.Advance(time.Minute)
	if st, _ := h.do("POST", "/v1/leaks", "", `[]`); st != http.StatusOK {
		t.Errorf("after a minute: %d, want the budget back", st)
	}
	h.assertNoSecrets()
}

// TestLeakLimiter: a token bucket per client; a table full of clients
// forgets the idle ones instead of growing.
func TestLeakLimiter(t *testing.T) {
	l := newLimiter(2, 3)
	t0 := time.Unix(1_700_000_000, 0)
	got := ""
	for n := range 5 {
		got += fmt.Sprint(l.allow("a", t0.Add(time.Duration(n)*time.Millisecond)))[:1]
	}
	if got != "tttff" {
		t.Fatalf("burst of 3: %s, want tttff", got)
	}
	if !l.allow("b", t0) {
		t.Fatal("another client shares a's budget")
	}
	if !l.allow("a", t0.Add(600*time.Millisecond)) || l.allow("a", t0.Add(600*time.Millisecond)) {
		t.Fatal("after 0.6 s at 2/s: want one more, not two")
	}
	for n := range maxLeakClients + 100 {
		l.allow(fmt.Sprint("c", n), t0)
	}
	if len(l.b) > maxLeakClients {
		t.Fatalf("%d clients kept, the bound is %d", len(l.b), maxLeakClients)
	}
	if !l.allow("late", t0.Add(time.Hour)) {
		t.Fatal("a new client an hour later is refused: the idle ones were not forgotten")
	}
}

// TestLeakDocsPattern: docs/leaks.md gives scanners the pattern the code
// uses.
func TestLeakDocsPattern(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "leaks.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), token.ScanPattern) {
		t.Errorf("docs/leaks.md does not give token.ScanPattern:\n%s", token.ScanPattern)
	}
}
