package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

func TestIssueRecordsLedgerAndRegistry(t *testing.T) {
	h := newHarness(t)
	res := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "2h"})
	now := h.clk.Now()

	// The token verifies with the public keys enforcers read from the keys
	// bucket, and carries the ceiling's context where the request left it out.
	tok, err := h.enforcerKeyring().Verify(res.Token)
	if err != nil {
		t.Fatalf("verify issued token with the keys bucket: %v", err)
	}
	if tok.ID != res.ID || tok.KeyID != res.KeyID || tok.Tenant != "acme" || tok.Holder != "billing-api" {
		t.Fatalf("token claims %+v do not match response %+v", tok.Claims, res.TokenInfo)
	}
	if !slices.Equal(tok.Scopes, []string{"invoices:read"}) || !slices.Equal(tok.Audience, []string{"payments", "ledger"}) ||
		len(tok.Networks) != 2 || tok.Networks[0].String() != "10.20.0.0/16" || tok.Environment != "prod" || len(tok.Windows) != 1 {
		t.Errorf("narrowed claims = %+v", tok.Claims)
	}
	if tok.NotBefore != now.Unix() || tok.Expiry != now.Add(2*time.Hour).Unix() {
		t.Errorf("nbf/exp = %d/%d, want %d/%d", tok.NotBefore, tok.Expiry, now.Unix(), now.Add(2*time.Hour).Unix())
	}
	if id := tok.ID; len(id) != 36 || id[14] != '7' {
		t.Errorf("token id %q is not a UUIDv7", id)
	}

	// The registry shows it.
	list := call[TokenList](h, "GET", "/v1/tokens?tenant=acme&holder=billing-api", h.admin, nil, http.StatusOK)
	if len(list.Tokens) != 1 || list.Tokens[0].ID != res.ID || list.Tokens[0].Status != StatusActive {
		t.Fatalf("list = %s", ids(list.Tokens))
	}
	d := call[TokenDetail](h, "GET", "/v1/tokens/"+res.ID, h.admin, nil, http.StatusOK)
	if len(d.History) != 1 || d.History[0].Type != events.TypeTokenIssued || d.IssuedBy == "" || !strings.HasPrefix(d.IssuedBy, "cordon/admin:") {
		t.Fatalf("inspect = %+v", d)
	}

	// The ledger has the issued event with the right fields, published with
	// its event id as the message id, and never the token string.
	var found *ledgerMsg
	for _, m := range h.ledger() {
		if m.subject == events.SubjectTokenPrefix+"issued.acme."+res.ID {
			found = &m
		}
	}
	if found == nil {
		t.Fatal("no issued event on the ledger")
	}
	if found.msgID != found.env.ID.String() {
		t.Errorf("message id %q, event id %s", found.msgID, found.env.ID)
	}
	p := found.env.Data.(*events.TokenIssued)
	if p.TokenID != res.ID || p.KeyID != tok.KeyID || p.Actor != d.IssuedBy || !p.Claims.Expiry.Equal(tok.ExpiryTime()) ||
		!slices.Equal(p.Claims.Networks, []string{"10.20.0.0/16", "2001:db8:20::/48"}) || p.Claims.Environment != "prod" ||
		len(p.Claims.Windows) != 1 || p.Claims.Windows[0].Zone != "Europe/Paris" {
		t.Errorf("issued event = %+v", p)
	}
	if strings.Contains(string(found.raw), "cordon_") {
		t.Errorf("issued event contains a token string: %s", found.raw)
	}
	if got := ledgerOf[*events.PolicyChanged](h, ""); len(got) != 1 || got[0].Digest != h.pol.Digest {
		t.Errorf("policy changed events = %v", got)
	}
	h.assertNoSecrets()
}

func TestCeilingViolations(t *testing.T) {
	h := newHarness(t)
	base := func(mut func(*IssueRequest)) IssueRequest {
		r := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}}
		mut(&r)
		return r
	}
	far := h.clk.Now().Add(48 * time.Hour)
	tests := []struct {
		name   string
		body   any
		status int
		code   string
		want   string
	}{
		{"scope", base(func(r *IssueRequest) { r.Scopes = []string{"invoices:read", "invoices:delete"} }), 422, "exceeds_ceiling",
			`scope "invoices:delete" is not in the ceiling of acme/billing-api`},
		{"audience", base(func(r *IssueRequest) { r.Audience = []string{"admin"} }), 422, "exceeds_ceiling",
			`audience "admin" is not in the ceiling of acme/billing-api`},
		{"network wider", base(func(r *IssueRequest) { r.Networks = []string{"10.0.0.0/8"} }), 422, "exceeds_ceiling",
			"network 10.0.0.0/8 is wider than any allowed network of acme/billing-api"},
		{"network outside", base(func(r *IssueRequest) { r.Networks = []string{"10.20.1.0/24", "192.168.0.7"} }), 422, "exceeds_ceiling",
			"network 192.168.0.7/32 is outside the allowed networks of acme/billing-api"},
		{"environment", base(func(r *IssueRequest) { r.Environment = "staging" }), 422, "exceeds_ceiling",
			`environment "staging" is not in the ceiling of acme/billing-api`},
		{"window", base(func(r *IssueRequest) { r.Windows = []Window{Window(mustWindow(t, "sat 08:00-18:00 Europe/Paris"))} }), 422, "exceeds_ceiling",
			`window "sat 08:00-18:00 Europe/Paris" is not within an allowed window of acme/billing-api`},
		{"ttl", base(func(r *IssueRequest) { r.TTL = "48h" }), 422, "exceeds_ceiling", "ttl 48h exceeds max_ttl 24h of acme/billing-api"},
		{"device", IssueRequest{Tenant: "acme", Holder: "oncall", Scopes: []string{"invoices:read"}}, 422, "exceeds_ceiling",
			"device binding is required for acme/oncall"},
		{"break glass", base(func(r *IssueRequest) { r.BreakGlass = true }), 422, "exceeds_ceiling", "break-glass tokens are not allowed for acme/billing-api"},
		{"not before", base(func(r *IssueRequest) { r.NotBefore = &far }), 422, "exceeds_ceiling", "is more than max_ttl 24h ahead"},
		{"unknown holder", IssueRequest{Tenant: "acme", Holder: "ghost", Scopes: []string{"x:y"}}, 422, "unknown_holder",
			"acme/ghost is not declared in the policy"},
		{"malformed json", `{"tenant": "acme",`, 400, "bad_request", "malformed JSON"},
		{"unknown field", `{"tenant":"acme","holder":"billing-api","scope":["invoices:read"]}`, 400, "bad_request", `unknown field "scope"`},
		{"wrong type", `{"tenant":"acme","holder":"billing-api","scopes":"invoices:read"}`, 400, "bad_request", "scopes: want a list"},
		{"bad cidr", base(func(r *IssueRequest) { r.Networks = []string{"10.20.0.0/33"} }), 400, "bad_request", `networks[0]: "10.20.0.0/33" is not a CIDR`},
		{"bad ttl", base(func(r *IssueRequest) { r.TTL = "forever" }), 400, "bad_request", `ttl: "forever" is not a duration`},
		{"zero ttl", base(func(r *IssueRequest) { r.TTL = "0s" }), 400, "bad_request", "ttl: a token must expire"},
		{"bad window", `{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"windows":["mon 25:00-26:00"]}`, 400, "bad_request",
			`windows: window "mon 25:00-26:00": start: "25:00" is not HH:MM`},
		{"bad window object", `{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"windows":[{"days":["mon"],"start":"8","end":"9","tz":"UTC"}]}`,
			400, "bad_request", `windows: unknown field "tz"`},
		{"no scopes", base(func(r *IssueRequest) { r.Scopes = nil }), 400, "bad_request", "scopes: at least one scope is required"},
		{"bad device", IssueRequest{Tenant: "acme", Holder: "oncall", Scopes: []string{"invoices:read"}, Device: "not-hex"}, 400, "bad_request",
			`device: "not-hex" is not a lowercase hex SHA-256 thumbprint`},
		{"no tenant", IssueRequest{Holder: "billing-api", Scopes: []string{"invoices:read"}}, 400, "bad_request", "tenant is required"},
		{"empty body", "", 400, "bad_request", "empty body"},
		{"trailing", `{"tenant":"acme"} {}`, 400, "bad_request", "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := h.do("POST", "/v1/tokens", h.admin, tt.body)
			e := errorBody(t, out)
			if status != tt.status || e.Code != tt.code {
				t.Fatalf("status %d code %q, want %d %q: %s", status, e.Code, tt.status, tt.code, e.Error)
			}
			if !strings.Contains(e.Error, tt.want) {
				t.Errorf("error %q does not contain %q", e.Error, tt.want)
			}
		})
	}
	if got := ledgerOf[*events.TokenIssued](h, ""); len(got) != 1 { // the admin token only
		t.Errorf("%d tokens minted by rejected requests", len(got)-1)
	}

	// a request within every dimension of a rich ceiling is minted
	thumb := strings.Repeat("ab", 32)
	res := h.issue(IssueRequest{Tenant: "acme", Holder: "oncall", Scopes: []string{"invoices:refund"}, Device: strings.ToUpper(thumb), BreakGlass: true, TTL: "30m"})
	if res.Claims.Device != thumb || !res.BreakGlass {
		t.Errorf("oncall token = %+v", res.TokenInfo)
	}
}

func mustWindow(t *testing.T, s string) token.Window {
	t.Helper()
	var w Window
	b, _ := json.Marshal(s)
	if err := w.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	return token.Window(w)
}

func TestAdminAuth(t *testing.T) {
	h := newHarness(t)
	service := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}})
	reader := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeRead}, TTL: "1h"})
	issuerOnly := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeIssue}, TTL: "1h"})
	doomed := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeRead}, TTL: "1h"})
	short := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeRead}, TTL: "1m"})

	// a token signed by a key this issuer does not have
	other, err := token.GenerateSigner(h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Mint(token.Claims{ID: reader.ID, Tenant: AdminTenant, Holder: AdminHolder, Scopes: events.AdminScopes(),
		Audience: []string{AdminAudience}, NotBefore: h.clk.Now().Unix(), Expiry: h.clk.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	h.remember(forged)
	tampered := reader.Token[:len(reader.Token)-10] + "AAAA" + reader.Token[len(reader.Token)-6:]

	// revoke "doomed" the way the revoker does: a TokenRevoked on the ledger
	env, err := events.New("revoker/test", h.clk.Now(), &events.TokenRevoked{TokenID: doomed.ID, Tenant: AdminTenant, Holder: AdminHolder,
		Kind: events.RevokeToken, Actor: "oncall", Reason: "leaked", Expiry: doomed.Claims.Expiry})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := events.Encode(env)
	if _, err := h.env.JS.Publish(context.Background(), events.Subject(env), b, jetstream.WithMsgID(env.MsgID())); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if d, err := h.iss.Inspect(doomed.ID); err != nil || d.Status != StatusRevoked {
			return fmt.Errorf("doomed token not yet revoked in the registry: %v", err)
		}
		return nil
	})

	okIssue := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}}
	tests := []struct {
		name, method, path, tok string
		body                    any
		status                  int
		want                    string
	}{
		{"no token", "GET", "/v1/tokens", "", nil, 401, "no Authorization header"},
		{"garbage", "GET", "/v1/tokens", "hunter2", nil, 401, "admin token rejected"},
		{"tampered", "GET", "/v1/tokens", tampered, nil, 401, "admin token rejected"},
		{"foreign key", "GET", "/v1/tokens", forged, nil, 401, "unknown signing key"},
		{"service token", "GET", "/v1/tokens", service.Token, nil, 403, "is not for the Cordon API"},
		{"wrong scope", "POST", "/v1/tokens", reader.Token, okIssue, 403, "lacks scope cordon:issue"},
		{"wrong scope keys", "POST", "/v1/keys/rotate", reader.Token, nil, 403, "lacks scope cordon:keys"},
		{"reader reads", "GET", "/v1/tokens", reader.Token, nil, 200, ""},
		{"revoked", "GET", "/v1/tokens", doomed.Token, nil, 401, "is revoked"},
		{"no escalation", "POST", "/v1/tokens", issuerOnly.Token,
			IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeKeys}}, 403, "cannot grant scope cordon:keys"},
		{"issuer issues", "POST", "/v1/tokens", issuerOnly.Token, okIssue, 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := h.do(tt.method, tt.path, tt.tok, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, out)
			}
			if tt.want != "" {
				if e := errorBody(t, out); !strings.Contains(e.Error, tt.want) {
					t.Errorf("error %q does not contain %q", e.Error, tt.want)
				}
			}
		})
	}
	if strings.Contains(h.logs.String(), "hunter2") {
		t.Error("a presented credential was logged")
	}

	t.Run("expired", func(t *testing.T) {
		h.clk.Advance(2 * time.Minute)
		status, out := h.do("GET", "/v1/tokens", short.Token, nil)
		if status != 401 || !strings.Contains(errorBody(t, out).Error, "expired") {
			t.Fatalf("status %d: %s", status, out)
		}
	})
	h.assertNoSecrets()
}

func TestRotateRevokesAfterGrace(t *testing.T) {
	h := newHarness(t)
	pred := h.issue(IssueRequest{Tenant: "acme", Holder: "checkout-web", Scopes: []string{"cart:add"}, Environment: "staging", TTL: "30m"})
	h.clk.Advance(time.Minute)

	rot := call[RotateResponse](h, "POST", "/v1/tokens/"+pred.ID+"/rotate", h.admin, RotateRequest{Grace: "5m"}, http.StatusCreated)
	h.remember(rot.Token)
	succ := rot.Successor
	if succ.ID == pred.ID || succ.RotatedFrom != pred.ID || succ.Status != StatusActive {
		t.Fatalf("successor = %+v", succ)
	}
	// same context, fresh id and expiry
	if !slices.Equal(succ.Claims.Scopes, pred.Claims.Scopes) || !slices.Equal(succ.Claims.Networks, pred.Claims.Networks) ||
		succ.Claims.Environment != "staging" || !succ.Claims.Expiry.Equal(h.clk.Now().Add(30*time.Minute)) {
		t.Errorf("successor claims %+v, predecessor %+v", succ.Claims, pred.Claims)
	}
	if rot.Predecessor.Status != StatusRotated || rot.Predecessor.SuccessorID != succ.ID ||
		!rot.Predecessor.GraceUntil.Equal(h.clk.Now().Add(5*time.Minute)) {
		t.Fatalf("predecessor = %+v", rot.Predecessor)
	}
	if _, err := h.enforcerKeyring().Verify(rot.Token); err != nil {
		t.Fatal(err)
	}
	if r := ledgerOf[*events.TokenRotated](h, pred.ID); len(r) != 1 || r[0].SuccessorID != succ.ID {
		t.Fatalf("rotated events = %+v", r)
	}
	if got := ledgerOf[*events.TokenIssued](h, succ.ID); len(got) != 1 || got[0].RotatedFrom != pred.ID {
		t.Fatalf("successor issued events = %+v", got)
	}

	// rotating it again is a conflict; the successor can be rotated
	status, out := h.do("POST", "/v1/tokens/"+pred.ID+"/rotate", h.admin, nil)
	if e := errorBody(t, out); status != 409 || !strings.Contains(e.Error, "already rotated to "+succ.ID) {
		t.Fatalf("second rotation: %d %s", status, out)
	}
	if status, _ := h.do("POST", "/v1/tokens/00000000-0000-7000-8000-000000000000/rotate", h.admin, nil); status != 404 {
		t.Fatalf("rotate unknown token: %d", status)
	}

	// within the grace period the predecessor is not revoked
	h.clk.Advance(4 * time.Minute)
	h.waitTicks(2) // nothing may happen
	if got := ledgerOf[*events.TokenRevoked](h, pred.ID); len(got) != 0 {
		t.Fatalf("revoked during the grace period: %+v", got)
	}
	h.clk.Advance(time.Minute)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if got := ledgerOf[*events.TokenRevoked](h, pred.ID); len(got) != 1 {
			return fmt.Errorf("%d revocations of the predecessor", len(got))
		}
		return nil
	})
	rv := ledgerOf[*events.TokenRevoked](h, pred.ID)[0]
	if rv.Kind != events.RevokeToken || rv.Reason != "rotated" || !strings.HasPrefix(rv.Actor, "cordon/admin:") ||
		!rv.Expiry.Equal(pred.Claims.Expiry) || rv.KeyID != pred.KeyID {
		t.Errorf("revocation = %+v", rv)
	}
	if d, _ := h.iss.Inspect(pred.ID); d.Status != StatusRevoked || len(d.History) != 3 {
		t.Errorf("predecessor after grace: %s with %d history entries", d.Status, len(d.History))
	}

	t.Run("zero grace revokes at once", func(t *testing.T) {
		p := h.issue(IssueRequest{Tenant: "acme", Holder: "checkout-web", Scopes: []string{"cart:add"}, Environment: "prod"})
		r := call[RotateResponse](h, "POST", "/v1/tokens/"+p.ID+"/rotate", h.admin, RotateRequest{Grace: "0s", TTL: "10m"}, http.StatusCreated)
		h.remember(r.Token)
		if r.Predecessor.Status != StatusRevoked || !r.Successor.Claims.Expiry.Equal(h.clk.Now().Add(10*time.Minute)) {
			t.Fatalf("zero grace: predecessor %s, successor exp %s", r.Predecessor.Status, r.Successor.Claims.Expiry)
		}
	})
	t.Run("successor must fit the ceiling", func(t *testing.T) {
		status, out := h.do("POST", "/v1/tokens/"+succ.ID+"/rotate", h.admin, RotateRequest{TTL: "2h"})
		if e := errorBody(t, out); status != 422 || !strings.Contains(e.Error, "ttl 2h exceeds max_ttl 1h") {
			t.Fatalf("%d %s", status, out)
		}
	})
	h.assertNoSecrets()
}

func TestPendingRevocationSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	pred := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:write"}})
	rot := call[RotateResponse](h, "POST", "/v1/tokens/"+pred.ID+"/rotate", h.admin, RotateRequest{Grace: "10m"}, http.StatusCreated)
	h.remember(rot.Token)

	h.iss.Close()
	h.clk.Advance(11 * time.Minute) // the grace period ends while the issuer is down
	if got := ledgerOf[*events.TokenRevoked](h, pred.ID); len(got) != 0 {
		t.Fatalf("revoked before the grace period ended: %+v", got)
	}
	h.start()
	natstest.WaitFor(t, 5*time.Second, func() error {
		if got := ledgerOf[*events.TokenRevoked](h, pred.ID); len(got) != 1 {
			return fmt.Errorf("%d revocations after restart", len(got))
		}
		return nil
	})
	h.restart()
	h.waitTicks(2)
	if got := ledgerOf[*events.TokenRevoked](h, pred.ID); len(got) != 1 {
		t.Fatalf("%d revocations after a second restart, want 1", len(got))
	}
}

func TestExpiryRecordedOnce(t *testing.T) {
	h := newHarness(t)
	res := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "2s"})
	keep := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})
	h.clk.Advance(3 * time.Second)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if got := ledgerOf[*events.TokenExpired](h, res.ID); len(got) != 1 {
			return fmt.Errorf("%d expiries", len(got))
		}
		return nil
	})
	exp := ledgerOf[*events.TokenExpired](h, res.ID)[0]
	if !exp.Expiry.Equal(res.Claims.Expiry) || exp.Tenant != "acme" {
		t.Errorf("expired event = %+v", exp)
	}
	if got := ledgerOf[*events.TokenExpired](h, keep.ID); len(got) != 0 {
		t.Fatalf("live token recorded as expired")
	}
	h.restart()
	h.waitTicks(2)
	if got := ledgerOf[*events.TokenExpired](h, res.ID); len(got) != 1 {
		t.Fatalf("%d expiries after restart, want 1", len(got))
	}
	expired := call[TokenList](h, "GET", "/v1/tokens?status=expired", h.admin, nil, http.StatusOK)
	if len(expired.Tokens) != 1 || expired.Tokens[0].ID != res.ID || expired.Tokens[0].ExpiredAt == nil {
		t.Fatalf("expired list = %s", ids(expired.Tokens))
	}
	if status, out := h.do("GET", "/v1/tokens?status=zombie", h.admin, nil); status != 400 || !strings.Contains(string(out), "zombie") {
		t.Fatalf("bad status filter: %d %s", status, out)
	}
}

func TestRestartRebuildsRegistry(t *testing.T) {
	h := newHarness(t)
	for _, holder := range []string{"billing-api", "reporting-batch"} {
		h.issue(IssueRequest{Tenant: "acme", Holder: holder, Scopes: []string{"invoices:read"}, TTL: "1h"})
	}
	g := h.issue(IssueRequest{Tenant: "globex", Holder: "inventory-svc", Scopes: []string{"stock:read"}, Environment: "staging"})
	rot := call[RotateResponse](h, "POST", "/v1/tokens/"+g.ID+"/rotate", h.admin, RotateRequest{Grace: "1h"}, http.StatusCreated)
	h.remember(rot.Token)
	h.clk.Advance(time.Second)

	before := call[TokenList](h, "GET", "/v1/tokens", h.admin, nil, http.StatusOK)
	detail := call[TokenDetail](h, "GET", "/v1/tokens/"+g.ID, h.admin, nil, http.StatusOK)
	keys := call[KeyList](h, "GET", "/v1/keys", h.admin, nil, http.StatusOK)
	ledgerLen := len(h.ledger())
	admin := h.admin

	h.restart()
	if h.admin != admin {
		t.Fatal("a valid bootstrap admin token was replaced on restart")
	}
	after := call[TokenList](h, "GET", "/v1/tokens", h.admin, nil, http.StatusOK)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("registry differs after restart:\nbefore %s\nafter  %s", ids(before.Tokens), ids(after.Tokens))
	}
	if len(after.Tokens) != 5 { // admin, 3 issued, 1 successor
		t.Errorf("%d tokens: %s", len(after.Tokens), ids(after.Tokens))
	}
	if d := call[TokenDetail](h, "GET", "/v1/tokens/"+g.ID, h.admin, nil, http.StatusOK); !reflect.DeepEqual(detail, d) {
		t.Errorf("inspect differs after restart:\n%+v\n%+v", detail, d)
	}
	if k := call[KeyList](h, "GET", "/v1/keys", h.admin, nil, http.StatusOK); !reflect.DeepEqual(keys, k) {
		t.Errorf("keys differ after restart: %+v vs %+v", keys, k)
	}
	if n := len(h.ledger()); n != ledgerLen {
		t.Errorf("restart appended %d ledger events (keys, policy or admin token announced twice)", n-ledgerLen)
	}
	h.assertNoSecrets()
}

func TestRegistryFollowsOtherServices(t *testing.T) {
	h := newHarness(t)
	a := h.issue(IssueRequest{Tenant: "globex", Holder: "inventory-svc", Scopes: []string{"stock:read"}, Environment: "prod"})
	b := h.issue(IssueRequest{Tenant: "globex", Holder: "inventory-svc", Scopes: []string{"orders:read"}, Environment: "prod"})
	c := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}})

	// garbage on the ledger is skipped, not fatal
	if _, err := h.env.JS.Publish(context.Background(), "cordon.token.issued.x.y", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	// a holder-wide revocation from the revoker covers every token of the holder
	env, _ := events.New("revoker/test", h.clk.Now(), &events.TokenRevoked{TokenID: a.ID, Tenant: "globex", Holder: "inventory-svc",
		Kind: events.RevokeHolder, Actor: "auditor", Reason: "anomaly", Expiry: a.Claims.Expiry, AnomalyID: "an-1"})
	raw, _ := events.Encode(env)
	if _, err := h.env.JS.Publish(context.Background(), events.Subject(env), raw, jetstream.WithMsgID(env.MsgID())); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		revoked := call[TokenList](h, "GET", "/v1/tokens?status=revoked", h.admin, nil, http.StatusOK)
		if got := ids(revoked.Tokens); len(revoked.Tokens) != 2 || !strings.Contains(got, a.ID) || !strings.Contains(got, b.ID) {
			return fmt.Errorf("revoked = %s", got)
		}
		return nil
	})
	if d, _ := h.iss.Inspect(c.ID); d.Status != StatusActive {
		t.Errorf("another holder's token is %s", d.Status)
	}
	if d, _ := h.iss.Inspect(b.ID); d.RevokeReason != "anomaly" || d.RevokedBy != "auditor" {
		t.Errorf("revocation details = %+v", d.TokenInfo)
	}
	// and the issuer still works
	h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}})
	if !strings.Contains(h.logs.String(), "skipping undecodable ledger event") {
		t.Error("the undecodable ledger event was not logged")
	}
}

func TestKeyRotationAndRetirement(t *testing.T) {
	h := newHarness(t)
	oldKID := h.iss.keys.activeID()
	oldTok := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}})
	oldAdmin := h.admin

	h.clk.Advance(time.Second)
	k := call[KeyInfo](h, "POST", "/v1/keys/rotate", h.admin, nil, http.StatusCreated)
	if k.KeyID == oldKID || !k.Active || len(k.PublicKey) != 32 {
		t.Fatalf("rotated key = %+v", k)
	}
	newTok := h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}})
	if newTok.KeyID != k.KeyID || oldTok.KeyID != oldKID {
		t.Fatalf("kids: old token %s, new token %s, new key %s", oldTok.KeyID, newTok.KeyID, k.KeyID)
	}
	ring := h.enforcerKeyring()
	if ring.Len() != 2 {
		t.Fatalf("keys bucket holds %d keys, want 2", ring.Len())
	}
	for _, tok := range []string{oldTok.Token, newTok.Token} {
		if _, err := ring.Verify(tok); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	}
	list := call[KeyList](h, "GET", "/v1/keys", h.admin, nil, http.StatusOK)
	if len(list.Keys) != 2 || list.Keys[0].KeyID != oldKID || list.Keys[0].Active || !list.Keys[1].Active || list.Keys[0].LiveTokens != 2 {
		t.Fatalf("keys = %+v", list.Keys)
	}
	if p := ledgerOf[*events.KeyPublished](h, k.KeyID); len(p) != 1 || !strings.HasPrefix(p[0].Actor, "cordon/admin:") {
		t.Fatalf("key published events = %+v", p)
	}

	// the active key cannot be retired
	if status, out := h.do("POST", "/v1/keys/"+k.KeyID+"/retire", h.admin, nil); status != 409 {
		t.Fatalf("retire active key: %d %s", status, out)
	}
	if status, _ := h.do("POST", "/v1/keys/k-nope/retire", h.admin, nil); status != 404 {
		t.Fatalf("retire unknown key: %d", status)
	}

	res := call[RetireResponse](h, "POST", "/v1/keys/"+oldKID+"/retire", h.admin, RetireRequest{Reason: "scheduled"}, http.StatusOK)
	if !res.Retired || !res.AdminTokenRenewed {
		t.Fatalf("retire = %+v (the bootstrap admin token was signed by the old key)", res)
	}
	kv, err := h.env.JS.KeyValue(context.Background(), events.BucketKeys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), oldKID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("retired key still in the keys bucket: %v", err)
	}
	if r := ledgerOf[*events.KeyRetired](h, oldKID); len(r) != 1 || r[0].Reason != "scheduled" {
		t.Fatalf("key retired events = %+v", r)
	}
	ring = h.enforcerKeyring()
	if _, err := ring.Verify(oldTok.Token); !errors.Is(err, token.ErrUnknownKey) {
		t.Fatalf("token of a retired key: %v, want ErrUnknownKey", err)
	}
	if _, err := ring.Verify(newTok.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "keys", oldKID+".pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("retired private key still on disk: %v", err)
	}

	// the old admin token died with its key; a new one was written
	if status, _ := h.do("GET", "/v1/keys", oldAdmin, nil); status != 401 {
		t.Fatalf("admin token of a retired key: %d", status)
	}
	b, err := os.ReadFile(h.iss.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	h.admin = strings.TrimSpace(string(b))
	h.remember(h.admin)
	if list := call[KeyList](h, "GET", "/v1/keys", h.admin, nil, http.StatusOK); len(list.Keys) != 1 {
		t.Fatalf("keys after retirement = %+v", list.Keys)
	}

	// a restart keeps the new key active and does not resurrect the old one
	h.restart()
	if got := h.iss.keys.activeID(); got != k.KeyID {
		t.Fatalf("active key after restart = %s, want %s", got, k.KeyID)
	}
	if h.enforcerKeyring().Len() != 1 {
		t.Fatal("retired key republished on restart")
	}
	h.assertNoSecrets()
}

func TestSecretFilesArePrivate(t *testing.T) {
	h := newHarness(t)
	files, _ := filepath.Glob(filepath.Join(h.dir, "keys", "*"))
	files = append(files, h.iss.AdminTokenPath())
	if len(files) < 3 {
		t.Fatalf("files = %v", files)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(filepath.Join(h.dir, "keys")); st.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", st.Mode().Perm())
	}
	if !strings.Contains(h.logs.String(), h.iss.AdminTokenPath()) {
		t.Error("the admin token's path is not logged")
	}
	// a key file made readable by others is tightened on the next start
	pems, _ := filepath.Glob(filepath.Join(h.dir, "keys", "*.pem"))
	if len(pems) != 1 {
		t.Fatalf("key files = %v", pems)
	}
	if err := os.Chmod(pems[0], 0o644); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if st, _ := os.Stat(pems[0]); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode after restart %v", st.Mode().Perm())
	}
	h.assertNoSecrets()
}

func TestHTTPRoutes(t *testing.T) {
	h := newHarness(t)
	if status, out := h.do("GET", "/healthz", "", nil); status != 200 {
		t.Fatalf("healthz %d %s", status, out)
	}
	status, out := h.do("DELETE", "/v1/tokens", h.admin, nil)
	if e := errorBody(t, out); status != 404 || e.Code != "not_found" {
		t.Fatalf("unknown route: %d %s", status, out)
	}
	if status, _ := h.do("GET", "/v1/tokens?tenantt=acme", h.admin, nil); status != 400 {
		t.Fatalf("unknown query parameter: %d", status)
	}
	if status, _ := h.do("GET", "/v1/tokens/nope", h.admin, nil); status != 404 {
		t.Fatalf("inspect unknown: %d", status)
	}
	if status, out := h.do("POST", "/v1/tokens", h.admin, strings.Repeat(" ", maxBody+10)); status != 400 || !strings.Contains(string(out), "larger than") {
		t.Fatalf("huge body: %d %s", status, out)
	}
}
