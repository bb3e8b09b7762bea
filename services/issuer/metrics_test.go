package issuer

import (
	"net/http"
	"strings"
	"testing"
)

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "2h"})
	// A request beyond the ceiling is refused and counted by its code.
	status, _ := h.do("POST", "/v1/tokens", h.admin, IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:delete"}, TTL: "2h"})
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("over-ceiling issue: status %d", status)
	}
	status, body := h.do("GET", "/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("metrics: status %d", status)
	}
	text := string(body)
	for _, want := range []string{
		"cordon_issuer_tokens_issued_total 1",
		`cordon_issuer_requests_refused_total{code="exceeds_ceiling"} 1`,
		`cordon_issuer_registry_tokens{status="active"} 2`,
		"cordon_issuer_signing_keys 1",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, secret := range h.secret {
		if strings.Contains(text, secret) {
			t.Error("a token string leaked into the metrics")
		}
	}
}
