package issuer

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/events"
)

// doWith sends an API request with extra headers and returns the status
// and body.
func (h *harness) doWith(method, path, tok, body string, hdr map[string]string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// issuedOf returns the token.issued event of token id.
func issuedOf(h *harness, id string) *events.TokenIssued {
	h.t.Helper()
	evs := ledgerOf[*events.TokenIssued](h, id)
	if len(evs) != 1 {
		h.t.Fatalf("%d token.issued events for %s", len(evs), id)
	}
	return evs[0]
}

// spoofing are the headers a caller could use to claim another address;
// the issuer believes none of them.
var spoofing = map[string]string{
	"X-Forwarded-For": "203.0.113.9",
	"X-Real-IP":       "203.0.113.9",
	"Forwarded":       "for=203.0.113.9",
	"True-Client-IP":  "203.0.113.9",
}

// TestIssuanceContextOverHTTP: a token issued or rotated through the HTTP
// API records where the request came from: the socket peer, never a
// forwarding header, and the normalised user agent.
func TestIssuanceContextOverHTTP(t *testing.T) {
	h := newHarness(t)
	hdr := map[string]string{"User-Agent": "python-requests/2.31.0"}
	for k, v := range spoofing {
		hdr[k] = v
	}
	status, out := h.doWith("POST", "/v1/tokens", h.admin, `{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"ttl":"1h"}`, hdr)
	if status != http.StatusCreated {
		t.Fatalf("issue: %d %s", status, out)
	}
	var res IssueResponse
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	h.remember(res.Token)
	want := events.IssuanceContext{SourceIP: "127.0.0.1", Client: "python-requests/2"}
	if got := issuedOf(h, res.ID).Requested; got == nil || *got != want {
		t.Fatalf("issued: requested %+v, want %+v", got, want)
	}

	status, out = h.doWith("POST", "/v1/tokens/"+res.ID+"/rotate", h.admin, `{"grace":"1m"}`,
		map[string]string{"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0", "X-Forwarded-For": "203.0.113.9"})
	if status != http.StatusCreated {
		t.Fatalf("rotate: %d %s", status, out)
	}
	var rot RotateResponse
	if err := json.Unmarshal(out, &rot); err != nil {
		t.Fatal(err)
	}
	h.remember(rot.Token)
	succ := issuedOf(h, rot.Successor.ID)
	want = events.IssuanceContext{SourceIP: "127.0.0.1", Client: "Edge/124"}
	if succ.Requested == nil || *succ.Requested != want || succ.RotatedFrom != res.ID {
		t.Fatalf("successor: requested %+v rotated from %q, want %+v from %s", succ.Requested, succ.RotatedFrom, want, res.ID)
	}

	// A token string sent as the user agent leaves no piece of itself.
	status, out = h.doWith("POST", "/v1/tokens", h.admin, `{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"ttl":"1h"}`,
		map[string]string{"User-Agent": h.admin})
	if status != http.StatusCreated {
		t.Fatalf("issue: %d %s", status, out)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	h.remember(res.Token)
	if got := issuedOf(h, res.ID).Requested; got == nil || got.Client != events.ClientOther {
		t.Fatalf("token as user agent: requested %+v, want client %q", got, events.ClientOther)
	}

	for _, m := range h.ledger() {
		if strings.Contains(string(m.raw), "203.0.113.9") {
			t.Fatalf("ledger event %d took the address of a forwarding header: %s", m.seq, m.raw)
		}
	}
	h.assertNoSecrets()
}

// TestIssuanceContextNotFromTheBody: the caller cannot write its own
// issuance context: a body that carries one is refused and mints nothing.
func TestIssuanceContextNotFromTheBody(t *testing.T) {
	h := newHarness(t)
	res := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})
	before := len(ledgerOf[*events.TokenIssued](h, ""))
	forged := `"requested":{"source_ip":"198.51.100.7","client":"trusted-deployer/1"}`
	cases := []struct{ name, path, body string }{
		{"issue", "/v1/tokens", `{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"ttl":"1h",` + forged + `}`},
		{"issue, source_ip alone", "/v1/tokens", `{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"source_ip":"198.51.100.7"}`},
		{"rotate", "/v1/tokens/" + res.ID + "/rotate", `{"grace":"1m",` + forged + `}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, out := h.doWith("POST", tc.path, h.admin, tc.body, nil)
			if status != http.StatusBadRequest || !strings.Contains(errorBody(t, out).Error, "unknown field") {
				t.Fatalf("got %d %s, want 400 naming the unknown field", status, out)
			}
		})
	}
	t.Run("nats", func(t *testing.T) {
		for _, body := range []string{
			`{"auth":"` + h.admin + `","idempotency_key":"k1","issue":{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],` + forged + `}}`,
			`{"auth":"` + h.admin + `","idempotency_key":"k2",` + forged + `,"issue":{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"]}}`,
		} {
			if r := h.request(events.SubjectCmdIssue, []byte(body)); r.OK || r.Code != "bad_request" {
				t.Fatalf("command with an issuance context: %+v", r)
			}
		}
	})
	if after := len(ledgerOf[*events.TokenIssued](h, "")); after != before {
		t.Fatalf("%d tokens minted by refused requests", after-before)
	}
	for _, m := range h.ledger() {
		if strings.Contains(string(m.raw), "198.51.100.7") || strings.Contains(string(m.raw), "trusted-deployer") {
			t.Fatalf("ledger event %d carries the forged context: %s", m.seq, m.raw)
		}
	}
}

// TestIssuanceContextOverNATS: a command's sender cannot be seen, so a
// token issued or rotated by command records no issuance context; nor
// does the bootstrap admin token, which the issuer mints for itself.
func TestIssuanceContextOverNATS(t *testing.T) {
	h := newHarness(t)
	r := h.command(events.SubjectCmdIssue, CmdRequest{Auth: h.admin, IdempotencyKey: "n1",
		Issue: &IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"}})
	if !r.OK {
		t.Fatalf("issue: %+v", r)
	}
	if got := issuedOf(h, r.Issued.ID).Requested; got != nil {
		t.Fatalf("issued by command: requested %+v, want none", got)
	}
	rot := h.command(events.SubjectCmdRotate, CmdRequest{Auth: h.admin, IdempotencyKey: "n2", Rotate: &RotateRequest{TokenID: r.Issued.ID}})
	if !rot.OK {
		t.Fatalf("rotate: %+v", rot)
	}
	if got := issuedOf(h, rot.Rotated.Successor.ID).Requested; got != nil {
		t.Fatalf("rotated by command: requested %+v, want none", got)
	}
	for _, p := range ledgerOf[*events.TokenIssued](h, "") {
		if p.Holder == AdminHolder && p.Requested != nil {
			t.Fatalf("bootstrap admin token: requested %+v, want none", p.Requested)
		}
	}
}
