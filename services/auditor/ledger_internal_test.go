package auditor

import (
	"errors"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
)

// TestDecodeLedger: every token ledger type decodes, the graduated
// response's restricted and released among them; an event of another type
// on the ledger is a type mismatch (dead-lettered), an undecodable one an
// error.
func TestDecodeLedger(t *testing.T) {
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	exp := at.Add(24 * time.Hour)
	tests := []struct {
		name string
		p    events.Payload
		ok   bool
	}{
		{"issued", &events.TokenIssued{TokenID: "t", Tenant: "acme", Holder: "h", KeyID: "k1", Actor: "ops",
			Claims: events.TokenClaims{Scopes: []string{"a:read"}, Audience: []string{"a"}, NotBefore: at, Expiry: exp}}, true},
		{"rotated", &events.TokenRotated{TokenID: "t", Tenant: "acme", Holder: "h", SuccessorID: "t2", GraceUntil: at, Actor: "ops"}, true},
		{"revoked", &events.TokenRevoked{TokenID: "t", Tenant: "acme", Holder: "h", Kind: events.RevokeToken, Actor: "ops", Reason: "r", Expiry: exp}, true},
		{"expired", &events.TokenExpired{TokenID: "t", Tenant: "acme", Holder: "h", Expiry: exp}, true},
		{"restricted narrow", &events.TokenRestricted{TokenID: "t", Tenant: "acme", Holder: "h", Step: events.StepNarrow, Until: at.Add(time.Hour),
			Scopes: []string{"a:read"}, Networks: []string{"10.0.0.0/8"}, Actor: "revoker/auditor", Reason: "r", Rule: "q", Risk: 0.9, Expiry: exp}, true},
		{"restricted shadow", &events.TokenRestricted{TokenID: "t", Tenant: "acme", Holder: "h", Step: events.StepShadow, Would: events.StepRevoke,
			Actor: "revoker/auditor", Reason: "r", Expiry: exp}, true},
		{"released", &events.TokenReleased{TokenID: "t", Tenant: "acme", Holder: "h", Step: events.StepNarrow, Actor: "ops", Reason: "r"}, true},
		{"usage", &events.UsageDecided{TokenID: "t", Tenant: "acme", Holder: "h", Enforcer: "edge-1", Service: "s", SourceIP: "10.0.0.1",
			Method: "GET", Route: "/x", Decision: events.DecisionAllow, Reason: events.ReasonOK}, false},
		{"anomaly", &events.AnomalyDetected{AnomalyID: "a", Detector: "d", Severity: events.SeverityLow, TokenID: "t", Tenant: "acme",
			EventID: "e", EventTime: at, Evidence: events.Evidence{Seen: "x"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := events.New("test/1", at, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			data, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeLedger(data)
			if !tc.ok {
				if !errors.Is(err, events.ErrTypeMismatch) {
					t.Fatalf("err = %v, want ErrTypeMismatch", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != e.ID || got.Type != e.Type || got.Data.EventType() != e.Type {
				t.Errorf("decoded %s %s (%T), want %s %s", got.ID, got.Type, got.Data, e.ID, e.Type)
			}
		})
	}
	if _, err := decodeLedger([]byte(`{"type":"token.restricted"}`)); err == nil {
		t.Error("an undecodable restricted event decoded")
	}
}
