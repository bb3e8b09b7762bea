package revoker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/alert"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestCanaryReports: a canary on the ledger is put on the denylist marked
// as a canary at once; an enforcer's report of its use raises one critical
// alert; a report about a real token (a compromised enforcer's attempt to
// page about it), a report published under another enforcer's name and a
// malformed one are refused and alert no one.
func TestCanaryReports(t *testing.T) {
	rcv := newReceiver(t, 0)
	f := setup(t, func(o *revoker.Options) {
		sink, err := alert.NewWebhook(alert.WebhookConfig{URL: rcv.srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		o.Sinks = []alert.Sink{sink}
	})
	realTok := f.issue("acme", "billing-api", f.signer.KeyID, time.Minute, time.Hour, false)
	canaryID := newID(t)
	issued := f.now.Add(-time.Minute).Truncate(time.Second)
	f.publish(issued, &events.TokenIssued{TokenID: canaryID, Tenant: "acme", Holder: "billing-api", KeyID: f.signer.KeyID, Actor: "admin", Canary: true,
		Claims: events.TokenClaims{Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, NotBefore: issued, Expiry: issued.Add(time.Hour)}})
	natstest.WaitFor(t, 30*time.Second, func() error {
		rec, _, ok := f.deny(events.DenyKeyToken(canaryID))
		if !ok || !rec.Canary || rec.Holder != "billing-api" {
			return fmt.Errorf("denylist entry %+v (present %v)", rec, ok)
		}
		return nil
	})
	if _, _, ok := f.deny(events.DenyKeyToken(realTok.id)); ok {
		t.Fatal("a real token was put on the denylist")
	}
	send := func(subject string, rep any) {
		t.Helper()
		b, _ := json.Marshal(rep)
		if err := f.env.NC.Publish(subject, b); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	send(events.CanarySubject("edge-1"), events.CanaryTripped{TokenID: realTok.id, Tenant: "acme", Enforcer: "edge-1", Time: now})
	send(events.CanarySubject("edge-2"), events.CanaryTripped{TokenID: canaryID, Tenant: "acme", Enforcer: "edge-1", Time: now})
	send(events.CanarySubject("edge-1"), map[string]string{"token_id": canaryID})
	send(events.CanarySubject("edge-1"), events.CanaryTripped{TokenID: canaryID, Tenant: "acme", Enforcer: "edge-1", Time: now,
		SourceIP: "203.0.113.9", UserAgent: "python-requests/2.32", Method: "GET", Route: "/invoices"})
	natstest.WaitFor(t, 30*time.Second, func() error {
		if st := f.r.CanaryStats(); st.Trips != 1 || st.Refused != 3 {
			return fmt.Errorf("stats %+v, want 1 trip and 3 refused", st)
		}
		if got, _ := rcv.got(); len(got) == 0 {
			return fmt.Errorf("no alert delivered")
		}
		return nil
	})
	got, _ := rcv.got()
	var body string
	for _, b := range got {
		body += string(b)
	}
	if !json.Valid(got[0]) || !strings.Contains(body, canaryID) || !strings.Contains(body, "203.0.113.9") ||
		!strings.Contains(body, events.DetectorCanaryUsed) || strings.Contains(body, realTok.id) {
		t.Fatalf("alerts %s", body)
	}
}
