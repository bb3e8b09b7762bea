package up_test

import (
	"context"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
)

// TestCanaryToken: a canary minted for acme/billing-api is denied at the
// proxy from its first use, and on-call gets a critical alert naming the
// source, the client, the route and the holder it was planted for, from
// the enforcer's report (no auditor in the way); a secret scanner's
// verification of another canary is labelled and alerted low; the
// holder's real tokens keep working; the ledger and the issuer's list know
// it for a canary, the token string does not say so.
func TestCanaryToken(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end system skipped with -short")
	}
	pager := newPager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sys, err := up.Start(ctx, up.Options{DataDir: filepath.Join(t.TempDir(), "data"), NATSPort: -1, IssuerListen: "127.0.0.1:0",
		ProxyListen: "127.0.0.1:0", AlertWebhook: pager.URL, ChDBPath: chdbPath, Database: "canary",
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	mint := func(canary bool) *issuer.IssueResponse {
		t.Helper()
		res, err := sys.Issuer.Issue(ctx, "test", issuer.IssueRequest{Tenant: "acme", Holder: "billing-api",
			Scopes: []string{"invoices:list", "invoices:read"}, Audience: []string{"invoices"}, Environment: "demo", TTL: "24h", Canary: canary})
		if err != nil {
			t.Fatal(err)
		}
		if res.Warning != "" {
			t.Fatalf("mint: warning %q", res.Warning)
		}
		return res
	}
	real, canary, probed := mint(false), mint(true), mint(true)
	if !canary.Canary || real.Canary {
		t.Fatalf("registry: canary %v, real %v", canary.Canary, real.Canary)
	}
	// Offline, a canary is a token like the others: same format, same
	// claims but its id and times.
	claims := func(s string) token.Claims {
		u, err := token.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		c := u.Claims
		c.ID, c.IssuedAt, c.NotBefore, c.Expiry = "", 0, 0, 0
		return c
	}
	if !reflect.DeepEqual(claims(canary.Token), claims(real.Token)) {
		t.Fatalf("the canary's claims differ from a real token's: %+v vs %+v", claims(canary.Token), claims(real.Token))
	}
	do := func(tok, ua string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, sys.ProxyURL+"/invoices", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("User-Agent", ua)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Handed out once the revoker has it on the denylist; planted tokens
	// are not used the same millisecond: the enforcer has both entries
	// once the broadcast arrives.
	waitUntil(t, func() bool { return sys.Enforcer.Stats().DenyEntries >= 2 })
	if st := do(canary.Token, "curl/8.5.0"); st != http.StatusForbidden {
		t.Fatalf("canary's first use answered %d, want 403", st)
	}
	if st := do(probed.Token, "trufflehog/3.88 verification"); st != http.StatusForbidden {
		t.Fatalf("probed canary answered %d, want 403", st)
	}
	if st := do(real.Token, "billing/1.0"); st != http.StatusOK {
		t.Fatalf("the holder's real token answered %d", st)
	}
	a := pager.await(t, "for the canary", func(a string) bool { return strings.Contains(a, canary.ID) && strings.Contains(a, "canary_used") })
	for _, want := range []string{`"critical"`, "curl/8.5.0", "/invoices", "acme/billing-api", "127.0.0.1"} {
		if !strings.Contains(a, want) {
			t.Errorf("the canary alert does not name %q: %s", want, a)
		}
	}
	p := pager.await(t, "for the scanner's probe", func(a string) bool { return strings.Contains(a, probed.ID) })
	if !strings.Contains(p, "secret scanner") || strings.Contains(p, `"critical"`) {
		t.Errorf("a scanner's verification alerted as %s", p)
	}
	if st := sys.Revoker.CanaryStats(); st.Trips != 1 || st.Probes != 1 || st.Refused != 0 {
		t.Errorf("revoker canary stats %+v", st)
	}
	for _, a := range pager.all() {
		if strings.Contains(a, canary.Token) || strings.Contains(a, real.Token) {
			t.Fatal("an alert carries a token string")
		}
	}
}
