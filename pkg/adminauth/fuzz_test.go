package adminauth_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// FuzzDiff checks Record.Diff, claim by claim, against a second description
// of "the token the ledger recorded": the ledger form of the presented
// claims (LedgerClaims, compared as JSON) plus the identity fields. A
// forged token that differs in any claim must show a difference; the
// recorded token (or one claiming an earlier issue) must show none.
func FuzzDiff(f *testing.F) {
	f.Add("cordon:read,cordon:revoke", "cordon", "", "", "", false, int64(0), int64(0), int64(0), false, "admin")
	f.Add("cordon:*", "cordon", "", "", "", false, int64(0), int64(0), int64(0), false, "admin")
	f.Add("cordon:read,cordon:revoke", "cordon", "", "", "", false, int64(0), int64(365*24*3600), int64(0), false, "admin")
	f.Add("cordon:read,cordon:revoke", "cordon", "", "", "", false, int64(0), int64(0), int64(3600), false, "admin")
	f.Add("cordon:read,cordon:revoke", "cordon", "", "", "", false, int64(0), int64(0), int64(-3600), false, "admin")
	f.Add("cordon:revoke,cordon:read", "cordon,billing", "10.0.0.0/8", "prod", "mon", true, int64(-60), int64(0), int64(0), true, "root")
	f.Add("cordon:read,cordon:revoke", "cordon", "10.0.0.1/8", "", "", false, int64(0), int64(0), int64(0), false, "admin")

	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	ring := token.NewKeyring()
	if err := ring.Add(signer.KeyID, signer.Public()); err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	base := token.Claims{ID: "01940000-0000-7000-8000-000000000001", Tenant: "cordon", Holder: "admin",
		Scopes: []string{"cordon:read", "cordon:revoke"}, Audience: []string{"cordon"},
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Hour).Unix()}
	rec := adminauth.RecordOf(&events.TokenIssued{TokenID: base.ID, Tenant: base.Tenant, Holder: base.Holder, KeyID: signer.KeyID,
		Claims: adminauth.LedgerClaims(base), Actor: "issuer"}, now)
	thumb := token.Thumbprint([]byte("device"))

	f.Fuzz(func(t *testing.T, scopes, audience, network, env, day string, device bool, nbf, exp, iat int64, bg bool, holder string) {
		const bound = 10 * 365 * 24 * 3600
		if nbf < -bound || nbf > bound || exp < -bound || exp > bound || iat < -bound || iat > bound {
			return
		}
		c := base
		c.Holder = holder
		c.Scopes = strings.Split(scopes, ",")
		c.Audience = strings.Split(audience, ",")
		if p, err := netip.ParsePrefix(network); err == nil {
			c.Networks = []netip.Prefix{p}
		}
		c.Environment = env
		if day != "" {
			c.Windows = []token.Window{{Days: []string{day}, Start: "08:00", End: "18:00", Zone: "UTC"}}
		}
		if device {
			c.Device = thumb
		}
		c.NotBefore += nbf
		c.Expiry += exp
		c.IssuedAt += iat
		c.BreakGlass = bg
		tok, err := signer.Mint(c)
		if err != nil {
			return // not a token anyone can present
		}
		v, err := ring.Verify(tok)
		if err != nil {
			return
		}
		got, _ := json.Marshal(adminauth.LedgerClaims(v.Claims))
		want, _ := json.Marshal(adminauth.LedgerClaims(base))
		same := string(got) == string(want) && v.ID == base.ID && v.Tenant == base.Tenant && v.Holder == base.Holder &&
			v.KeyID == signer.KeyID && v.BreakGlass == base.BreakGlass && v.IssuedAt <= base.IssuedAt+1
		diff := rec.Diff(v)
		if same != (len(diff) == 0) {
			t.Fatalf("Diff says %v for claims %+v; the ledger form says same=%v\n got  %s\n want %s", diff, v.Claims, same, got, want)
		}
	})
}
