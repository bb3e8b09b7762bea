package enforce_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/token"
)

// Check decides locally; here the key is added by hand instead of being
// watched from the keys bucket (Start).
func ExampleEnforcer_Check() {
	signer, _ := token.GenerateSigner(time.Now())
	e, _ := enforce.New(enforce.Options{ID: "edge-1", Service: "invoices", Environment: "prod", DisableUsage: true})
	defer e.Close()
	_ = e.AddKey(signer.KeyID, signer.Public())

	now := time.Now()
	tok, _ := signer.Mint(token.Claims{
		ID: "0190b7b2-6f1e-7c3a-9a4e-5f2d8c1b0a99", Tenant: "acme", Holder: "billing-worker",
		Scopes: []string{"invoices:read"}, Audience: []string{"invoices"},
		Networks:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix(),
	})
	for _, from := range []string{"10.1.2.3", "203.0.113.9"} {
		d := e.Check(&enforce.Request{Token: tok, Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read",
			RemoteAddr: netip.MustParseAddr(from)})
		fmt.Println(from, d.Allow, d.Reason, d.Holder)
	}
	// Output:
	// 10.1.2.3 true ok billing-worker
	// 203.0.113.9 false source_network billing-worker
}
