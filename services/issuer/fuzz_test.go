package issuer

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
)

// FuzzIssueRequest feeds arbitrary bodies through the issue path short of
// signing: strict decoding, conversion, narrowing and the ceiling check. It
// must never panic, every rejection must be classified (400 or 422), and a
// request that passes the check must give claims the token format and the
// ledger accept.
func FuzzIssueRequest(f *testing.F) {
	pol, err := policy.Load(defaultPolicy)
	if err != nil {
		f.Fatal(err)
	}
	pol = pol.WithAdminCeiling()
	for _, s := range []string{
		`{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"]}`,
		`{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"networks":["10.20.1.0/24","2001:db8:20::1"],"ttl":"90m","environment":"prod"}`,
		`{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"windows":["mon 08:00-09:00 Europe/Paris",{"days":["tue"],"start":"08:00","end":"10:00","zone":"Europe/Paris"}]}`,
		`{"tenant":"acme","holder":"oncall","scopes":["invoices:*"],"device":"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB","break_glass":true,"ttl":"1d"}`,
		`{"tenant":"globex","holder":"partner-gateway","scopes":["orders:read"],"ttl":"7d","not_before":"2030-01-01T00:00:00Z"}`,
		`{"tenant":"cordon","holder":"admin","scopes":["cordon:read"],"audience":["cordon"]}`,
		`{"tenant":"initech","holder":"tps-cron","scopes":["reports:write"],"audience":["x"],"ttl":"0s"}`,
		`{"tenant":"acme","holder":"billing-api","scopes":["invoices:read"],"networks":["::ffff:10.20.0.0/112"]}`,
		`[]`, `{"scopes":{}}`, `{"ttl":12}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		var in IssueRequest
		if err := decodeStrict(data, &in); err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("decode error not classified: %v", err)
			}
			return
		}
		req, err := toRequest(in)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("conversion error not classified: %v", err)
			}
			return
		}
		c, err := pol.Lookup(req.Tenant, req.Holder)
		if err != nil {
			return
		}
		req = policy.Narrow(c, req)
		if err := policy.Check(c, req); err != nil {
			if status, _ := Classify(err); status != 400 && status != 422 {
				t.Fatalf("check error classified as %d: %v", status, err)
			}
			return
		}
		claims := claimsFor("0196f4b4-8d8a-7cc2-9a48-1f8e3a4b5c6d", req, now, now)
		if err := claims.Validate(); err != nil {
			t.Fatalf("a request within the ceiling gives invalid claims: %v\n%s", err, data)
		}
		issued := &events.TokenIssued{TokenID: claims.ID, Tenant: claims.Tenant, Holder: claims.Holder, KeyID: "k1",
			Claims: adminauth.LedgerClaims(claims), Actor: "fuzz"}
		env, err := events.New("issuer/fuzz", now, issued)
		if err != nil {
			t.Fatal(err)
		}
		b, err := events.Encode(env)
		if err != nil {
			t.Fatalf("the ledger rejects a checked request: %v", err)
		}
		if _, err := events.Decode(b); err != nil {
			t.Fatalf("issued event does not decode: %v", err)
		}
		if _, err := json.Marshal(in); err != nil {
			t.Fatal(err)
		}
	})
}
