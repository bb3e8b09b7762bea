package store_test

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// TestSchemaDocQueries runs every example query of docs/schema.md on a
// store holding data each one should find, so the documentation cannot rot.
func TestSchemaDocQueries(t *testing.T) {
	doc, err := os.ReadFile("../../docs/schema.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(blocks) < 4 {
		t.Fatalf("docs/schema.md has %d example queries, want at least 4", len(blocks))
	}
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		now := time.Now().UTC()
		tokens := []string{newID(), newID(), newID()}
		set := genUsage(t, 2000, tokens, []string{"billing", "search"}, now.Add(-47*time.Hour))
		grant := issued(t, now.Add(-48*time.Hour), tokens[0], "billing", []string{"orders:read", "never:used"})
		grant.Data.(*events.TokenIssued).Requested = &events.IssuanceContext{SourceIP: "10.20.1.7", Client: "Boto3/1"}
		evs := append(set.events,
			// the revoked token read invoices before its revocation; the
			// other swept invoices in the last hour
			ctxUsage(t, now.Add(-31*time.Hour), tokens[1], "GET", "/invoices/{id}", "42", "curl/8", "", "allow"),
			ctxUsage(t, now.Add(-31*time.Hour+time.Second), tokens[1], "GET", "/invoices/{id}", "43", "curl/8", "", "allow"),
			ctxUsage(t, now.Add(-time.Hour), tokens[0], "GET", "/invoices/{id}", "7", "python-requests/2", "", "allow"),
			ctxUsage(t, now.Add(-time.Hour+time.Second), tokens[0], "GET", "/invoices/{id}", "8", "python-requests/2", "", "deny"),
			usage(t, now.Add(-time.Hour), tokens[0], "billing", "orders:read", "198.51.100.7", "allow", "ok"),
			tokenless(t, now.Add(-time.Hour), "203.0.113.9", 300),
			grant,
			mustEnvelope(t, now.Add(-30*time.Hour), &events.TokenRevoked{TokenID: tokens[1], Tenant: "acme", Holder: "search",
				Kind: events.RevokeToken, Actor: "revoker", Reason: "test", Expiry: now.Add(time.Hour)}),
			// tokens[0] was quarantined two hours ago, released an hour
			// later; a shadow rule would have revoked it.
			mustEnvelope(t, now.Add(-2*time.Hour), &events.TokenRestricted{TokenID: tokens[0], Tenant: "acme", Holder: "billing",
				Step: events.StepNarrow, Until: now.Add(22 * time.Hour), Scopes: []string{"orders:read"}, Networks: []string{"10.0.0.0/16"},
				Actor: "revoker/auditor", Reason: "new_ip anomaly", Rule: "quarantine-new-ip", Risk: 0.8, Expiry: now.Add(29 * 24 * time.Hour)}),
			mustEnvelope(t, now.Add(-2*time.Hour), &events.TokenRestricted{TokenID: tokens[0], Tenant: "acme", Holder: "billing",
				Step: events.StepShadow, Would: events.StepRevoke, Actor: "revoker/auditor", Reason: "new_ip anomaly", Rule: "revoke-new-ip",
				Risk: 0.8, Expiry: now.Add(29 * 24 * time.Hour)}),
			mustEnvelope(t, now.Add(-time.Hour), &events.TokenReleased{TokenID: tokens[0], Tenant: "acme", Holder: "billing",
				Step: events.StepNarrow, Actor: "ops@example.com", Reason: "holder moved office"}),
			mustEnvelope(t, now.Add(-time.Hour), &events.AnomalyDetected{AnomalyID: newID(), Detector: "new_ip",
				Severity: events.SeverityHigh, TokenID: tokens[0], Tenant: "acme", Holder: "billing", EventID: newID(),
				EventTime: now.Add(-time.Hour), SourceIP: "198.51.100.7", Evidence: events.Evidence{Seen: "198.51.100.7", Baseline: "10.0.0.0/16"}}),
		)
		if err := s.Insert(ctx, evs); err != nil {
			t.Fatal(err)
		}
		for i, b := range blocks {
			q := string(b[1])
			res, err := s.Query(ctx, q)
			if err != nil {
				t.Errorf("example %d fails: %v\n%s", i+1, err, q)
				continue
			}
			if len(res.Rows) == 0 {
				t.Errorf("example %d finds nothing in data made for it:\n%s", i+1, q)
			}
		}
	})
}
