package issuer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "2h"})
	// A request beyond the ceiling is refused and counted by its code.
	status, _ := h.do("POST", "/v1/tokens", h.admin, IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:delete"}, TTL: "2h"})
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("over-ceiling issue: status %d", status)
	}
	// Served the way `cordon issuer --metrics-listen` serves it.
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.iss.Collector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		"cordon_issuer_tokens_issued_total 1",
		`cordon_issuer_requests_refused_total{code="exceeds_ceiling"} 1`,
		`cordon_issuer_registry_tokens{status="active"} 2`,
		"cordon_issuer_signing_keys 1",
		"cordon_issuer_registry_rewatches_total ", // any count: a loaded machine may stall a delivery
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

// TestMetricsNotOnTheAPI: the API listener does not serve metrics to
// anyone, with or without a token (issue 8: the issuer's /metrics was
// unauthenticated). They live on their own listener (--metrics-listen).
func TestMetricsNotOnTheAPI(t *testing.T) {
	h := newHarness(t)
	h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "2h"})
	for _, tok := range []string{"", h.admin} {
		for _, path := range []string{"/metrics", "/metrics/", "/v1/metrics"} {
			status, body := h.do("GET", path, tok, nil)
			if status != http.StatusNotFound || strings.Contains(string(body), "cordon_issuer_") || strings.Contains(string(body), "go_goroutines") {
				t.Errorf("GET %s (token %v): status %d, body %.120s", path, tok != "", status, body)
			}
		}
	}
}
