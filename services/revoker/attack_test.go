package revoker_test

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

// parsed reads a token's claims, as anyone holding it can.
func parsed(t *testing.T, tok string) token.Claims {
	t.Helper()
	u, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	c := u.Claims
	c.Scopes, c.Audience = slices.Clone(c.Scopes), slices.Clone(c.Audience)
	return c
}

// assertNotRevoked fails if target was revoked: a ledger event or a
// denylist entry.
func (f *fixture) assertNotRevoked(target tok) {
	f.t.Helper()
	if led := f.revocations(); len(led[target.id]) != 0 {
		f.t.Fatalf("token %s was revoked on the ledger", target.id)
	}
	if _, _, ok := f.deny(events.DenyKeyToken(target.id)); ok {
		f.t.Fatalf("token %s has a denylist entry", target.id)
	}
}

// TestForgedAdminTokens is issue 8's finding 1 at the revoker: admin
// tokens minted outside the issuer with the real signing key — a fresh id,
// the bootstrap admin token's id with wider scopes or a longer life, a
// cordon:read token's id with cordon:* — cannot revoke; the genuine admin
// token still can.
func TestForgedAdminTokens(t *testing.T) {
	f := setup(t, nil)
	target := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(target)
	reader := f.mint(token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"}, Audience: []string{"cordon"}})
	admin := parsed(t, f.admin)

	forged := map[string]token.Claims{
		"fresh id with admin scopes": {ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin",
			Scopes: []string{"cordon:*"}, Audience: []string{"cordon"}},
		"admin id with cordon:*":             func() token.Claims { c := admin; c.Scopes = []string{"cordon:*"}; return c }(),
		"admin id living a year longer":      func() token.Claims { c := admin; c.Expiry += 365 * 24 * 3600; return c }(),
		"admin id issued later":              func() token.Claims { c := admin; c.IssuedAt += 3600; return c }(),
		"cordon:read token's id as cordon:*": func() token.Claims { c := parsed(t, reader); c.Scopes = []string{"cordon:*"}; return c }(),
	}
	for name, c := range forged {
		t.Run(name, func(t *testing.T) {
			tok := f.forge(c)
			for _, req := range []revoker.CommandRequest{
				{Auth: tok, Kind: events.RevokeToken, TokenID: target.id},
				{Auth: tok, Kind: events.RevokeHolder, Tenant: "acme", Holder: "billing", IdempotencyKey: "forged"},
			} {
				rep, raw := f.call(req)
				if rep.OK || rep.Code != revoker.CodeUnauthorized {
					t.Fatalf("forged token: %s, want %s", raw, revoker.CodeUnauthorized)
				}
				if strings.Contains(string(raw), tok) {
					t.Fatal("the reply echoes the token")
				}
			}
			f.assertNotRevoked(target)
			if _, _, ok := f.deny(events.DenyKeyHolder("acme", "billing")); ok {
				t.Fatal("a forged token wrote a holder rule")
			}
		})
	}
	if rep, raw := f.call(revoker.CommandRequest{Kind: events.RevokeToken, TokenID: target.id}); !rep.OK || !slices.Equal(rep.Revoked, []string{target.id}) {
		t.Fatalf("the genuine admin token: %s", raw)
	}
}

// TestAdminContextOverNATS: a NATS request cannot prove where it comes
// from or which certificate its sender holds, so admin tokens bound to
// networks or a device are refused; windows are enforced (issue 8,
// finding 4).
func TestAdminContextOverNATS(t *testing.T) {
	f := setup(t, nil)
	target := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(target)
	now := time.Now().UTC()
	day := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	admin := func(mod func(*token.Claims)) string {
		c := token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}}
		mod(&c)
		return f.mint(c)
	}
	tests := []struct {
		name, auth, code, say string
	}{
		{"networks", admin(func(c *token.Claims) { c.Networks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }), revoker.CodeForbidden, "use the HTTPS API"},
		{"device", admin(func(c *token.Claims) { c.Device = token.Thumbprint([]byte("laptop")) }), revoker.CodeForbidden, "bound to a device"},
		{"another day", admin(func(c *token.Claims) {
			c.Windows = []token.Window{{Days: []string{day[(now.Weekday()+3)%7]}, Start: "00:00", End: "24:00"}}
		}), revoker.CodeForbidden, "outside its time windows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, raw := f.call(revoker.CommandRequest{Auth: tt.auth, Kind: events.RevokeToken, TokenID: target.id})
			if rep.OK || rep.Code != tt.code || !strings.Contains(rep.Error, tt.say) {
				t.Fatalf("%s, want %s saying %q", raw, tt.code, tt.say)
			}
			f.assertNotRevoked(target)
		})
	}
	today := admin(func(c *token.Claims) {
		c.Windows = []token.Window{{Days: []string{day[now.Weekday()]}, Start: "00:00", End: "24:00"}}
	})
	if rep, raw := f.call(revoker.CommandRequest{Auth: today, Kind: events.RevokeToken, TokenID: target.id}); !rep.OK {
		t.Fatalf("inside its window: %s", raw)
	}
}

// TestIdempotencyScopedToToken is issue 8's finding 5 at the revoker: a
// second admin token of the same holder replaying the first one's key
// gets a request of its own, not the first reply; the first token's retry
// still replays.
func TestIdempotencyScopedToToken(t *testing.T) {
	f := setup(t, nil)
	x := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(x)
	other := f.mint(token.Claims{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}})
	req := revoker.CommandRequest{Kind: events.RevokeToken, TokenID: x.id, IdempotencyKey: "inc-7", Reason: "leaked"}
	first, rawA := f.call(req)
	if !first.OK || !slices.Equal(first.Revoked, []string{x.id}) {
		t.Fatalf("first: %s", rawA)
	}
	req.Auth = other
	rep, rawB := f.call(req)
	if !rep.OK || string(rawB) == string(rawA) || len(rep.Revoked) != 0 || !slices.Equal(rep.Already, []string{x.id}) {
		t.Fatalf("another token replaying the key got %s (first reply %s); want a request of its own", rawB, rawA)
	}
	// The key is the other token's own now: another request under it is a
	// conflict for that token only.
	req.Reason = "something else"
	if rep, raw := f.call(req); rep.OK || rep.Code != revoker.CodeConflict {
		t.Fatalf("the other token reusing its own key: %s", raw)
	}
	req.Auth, req.Reason = "", "leaked"
	if _, raw := f.call(req); string(raw) != string(rawA) {
		t.Fatalf("the first token's retry answered %s, want the first reply %s", raw, rawA)
	}
	var r revoker.Reply
	if err := json.Unmarshal(rawA, &r); err != nil || len(f.revocations()[x.id]) != 1 {
		t.Fatalf("revocations of %s: %v", x.id, f.revocations()[x.id])
	}
}

// TestAdminTenantRequired: the revoker, like the issuer and the analyst
// API, takes only tokens of tenant "cordon" — even a genuine token of
// another tenant with audience cordon and scope cordon:revoke (issue 8:
// the three admin checks disagreed).
func TestAdminTenantRequired(t *testing.T) {
	f := setup(t, nil)
	target := f.issue("acme", "billing", "kid1", time.Minute, time.Hour, false)
	f.waitKnown(target)
	other := f.mint(token.Claims{Tenant: "acme", Holder: "admin", Scopes: []string{"cordon:revoke"}, Audience: []string{"cordon"}})
	rep, raw := f.call(revoker.CommandRequest{Auth: other, Kind: events.RevokeToken, TokenID: target.id})
	if rep.OK || rep.Code != revoker.CodeForbidden || !strings.Contains(rep.Error, `want tenant "cordon"`) {
		t.Fatalf("a token of tenant acme: %s", raw)
	}
	f.assertNotRevoked(target)
}
