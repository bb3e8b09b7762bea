package enforce

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// notToday is a window that excludes today and tomorrow (UTC), so it
// cannot contain the moment of the request.
func notToday() token.Window {
	now := time.Now().UTC()
	names := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	var days []string
	for wd := time.Sunday; wd <= time.Saturday; wd++ {
		if wd != now.Weekday() && wd != now.Add(24*time.Hour).Weekday() {
			days = append(days, names[wd])
		}
	}
	return token.Window{Days: days, Start: "00:00", End: "24:00", Zone: "UTC"}
}

func TestProxyDenyReasons(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	srv := f.proxy(t, e)

	stranger := newSigner(t) // never published
	forger := newSigner(t)
	forger.KeyID = f.signer.KeyID // claims a published key id, signs with another key
	retiredBySigner := newSigner(t)
	f.publishKey(t, retiredBySigner)
	// The keys and the denylist are separate watches: wait for the key, or
	// the "revoked signing key" case may see unknown_key on a loaded machine.
	natstest.WaitFor(t, 5*time.Second, func() error {
		if _, ok := e.keys.Key(retiredBySigner.KeyID); !ok {
			return errorf("key %s not in the keyring yet", retiredBySigner.KeyID)
		}
		return nil
	})
	otherCert := clientCert(t, "other-device")

	cases := []struct {
		name   string
		path   string
		signer *token.Signer
		claims func(*token.Claims)
		token  func(good string) string // rewrites the minted token
		setup  func(t *testing.T, c token.Claims) uint64
		want   Reason
	}{
		{name: "missing", token: func(string) string { return "" }, want: ReasonMissing},
		{name: "malformed prefix", token: func(string) string { return "Zm9vYmFy.bar.baz" }, want: ReasonMalformed},
		{name: "malformed checksum", token: func(s string) string {
			b := []byte(s)
			i := len(b) / 2
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return string(b)
		}, want: ReasonMalformed},
		{name: "unknown key", signer: &stranger, want: ReasonUnknownKey},
		{name: "bad signature", signer: &forger, want: ReasonBadSignature},
		{name: "not yet valid", claims: func(c *token.Claims) {
			c.NotBefore = time.Now().Add(time.Hour).Unix()
			c.Expiry = time.Now().Add(2 * time.Hour).Unix()
		}, want: ReasonNotYetValid},
		{name: "expired", claims: func(c *token.Claims) {
			c.IssuedAt = time.Now().Add(-3 * time.Hour).Unix()
			c.NotBefore = time.Now().Add(-2 * time.Hour).Unix()
			c.Expiry = time.Now().Add(-time.Hour).Unix()
		}, want: ReasonExpired},
		{name: "revoked token", setup: func(t *testing.T, c token.Claims) uint64 {
			return f.revoke(t, events.DenyKeyToken(c.ID), events.DenyRecord{Kind: events.RevokeToken, TokenID: c.ID, Tenant: c.Tenant})
		}, want: ReasonRevoked},
		{name: "revoked holder", claims: func(c *token.Claims) { c.Holder = "leaky-holder" }, setup: func(t *testing.T, c token.Claims) uint64 {
			return f.revoke(t, events.DenyKeyHolder(c.Tenant, c.Holder), events.DenyRecord{Kind: events.RevokeHolder, Tenant: c.Tenant, Holder: c.Holder})
		}, want: ReasonRevoked},
		{name: "revoked signing key", signer: &retiredBySigner, setup: func(t *testing.T, c token.Claims) uint64 {
			return f.revoke(t, events.DenyKeyKey(retiredBySigner.KeyID), events.DenyRecord{Kind: events.RevokeKey, KeyID: retiredBySigner.KeyID})
		}, want: ReasonRevoked},
		{name: "revoked tenant", claims: func(c *token.Claims) { c.Tenant = "evil-corp" }, setup: func(t *testing.T, c token.Claims) uint64 {
			return f.revoke(t, events.DenyKeyTenant(c.Tenant), events.DenyRecord{Kind: events.RevokeTenant, Tenant: c.Tenant})
		}, want: ReasonRevoked},
		{name: "revoked issued before", claims: func(c *token.Claims) {
			c.Tenant = "rotated"
			c.IssuedAt = time.Now().Add(-2 * time.Hour).Unix()
		}, setup: func(t *testing.T, c token.Claims) uint64 {
			return f.revoke(t, events.DenyKeyBefore(c.Tenant), events.DenyRecord{Kind: events.RevokeBefore, Tenant: c.Tenant, Before: time.Now().Add(-time.Hour)})
		}, want: ReasonRevoked},
		{name: "wrong audience", claims: func(c *token.Claims) { c.Audience = []string{"payments"} }, want: ReasonWrongAudience},
		{name: "scope missing", claims: func(c *token.Claims) { c.Scopes = []string{"invoices:list"} }, want: ReasonScopeMissing},
		{name: "scope of another resource", claims: func(c *token.Claims) { c.Scopes = []string{"customers:*"} }, want: ReasonScopeMissing},
		{name: "source network", claims: func(c *token.Claims) { c.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, want: ReasonSourceNetwork},
		{name: "environment", claims: func(c *token.Claims) { c.Environment = "staging" }, want: ReasonEnvironment},
		{name: "time window", claims: func(c *token.Claims) { c.Windows = []token.Window{notToday()} }, want: ReasonTimeWindow},
		{name: "device binding", claims: func(c *token.Claims) { c.Device = token.Thumbprint(otherCert.Certificate[0]) }, want: ReasonDeviceBinding},
		{name: "quarantined", setup: func(t *testing.T, c token.Claims) uint64 {
			// A read, from loopback: not one of the networks it keeps.
			return f.revoke(t, events.DenyKeyNarrow(c.ID), events.DenyRecord{Kind: events.StepNarrow, TokenID: c.ID, Step: events.StepNarrow,
				Until: time.Now().Add(time.Hour).UTC(), Networks: []string{"10.0.0.0/8"}})
		}, want: ReasonQuarantined},
		{name: "step up required", setup: func(t *testing.T, c token.Claims) uint64 {
			// The token has no device binding to step up with.
			return f.revoke(t, events.DenyKeyStepUp(c.ID), events.DenyRecord{Kind: events.StepStepUp, TokenID: c.ID, Step: events.StepStepUp,
				Until: time.Now().Add(time.Hour).UTC()})
		}, want: ReasonStepUpRequired},
		{name: "no route", path: "/payments/42", want: ReasonNoRoute},
		{name: "no route for method", path: "PATCH /invoices/42", want: ReasonNoRoute},
		{name: "unclean path", path: "/invoices/../admin/x", want: ReasonBadPath},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := f.signer
			if tc.signer != nil {
				s = *tc.signer
			}
			tok, c := mint(t, s, tc.claims)
			if tc.token != nil {
				tok = tc.token(tok)
			}
			if tc.setup != nil {
				waitRevision(t, e, tc.setup(t, c))
			}
			method, path := "GET", "/invoices/42"
			if tc.path != "" {
				path = tc.path
				if m, p, ok := strings.Cut(tc.path, " "); ok {
					method, path = m, p
				}
			}
			before := f.hits.Load()
			r := do(t, nil, method, srv.URL+path, tok, nil)
			if r.status != tc.want.HTTPStatus() || r.reason != string(tc.want) {
				t.Fatalf("got %d %q (%s), want %d %q", r.status, r.reason, r.body, tc.want.HTTPStatus(), tc.want)
			}
			if f.hits.Load() != before {
				t.Fatal("a denied request reached the upstream")
			}
			if tok != "" && strings.Contains(r.body, tok) {
				t.Fatal("deny body echoes the token")
			}
			if r.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	if t.Failed() {
		return
	}
	// Every deny reason but denylist_stale (TestDenylistStaleness) and
	// throttled (TestThrottle, TestProxyThrottle: it would throttle this
	// test's own source) is covered.
	covered := map[Reason]bool{ReasonDenylistStale: true, ReasonThrottled: true}
	for _, tc := range cases {
		covered[tc.want] = true
	}
	for _, r := range Reasons() {
		if !covered[r] {
			t.Errorf("deny reason %q has no case", r)
		}
	}
}

func TestProxyAllows(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	srv := f.proxy(t, e)
	f.revoke(t, events.DenyKeyBefore("rotated"), events.DenyRecord{Kind: events.RevokeBefore, Tenant: "rotated", Before: time.Now().Add(-time.Hour)})
	waitRevision(t, e, 1)

	cases := []struct {
		name   string
		method string
		path   string
		claims func(*token.Claims)
	}{
		{name: "read an invoice", method: "GET", path: "/invoices/42"},
		{name: "list invoices", method: "GET", path: "/invoices"},
		{name: "head uses the get route", method: "HEAD", path: "/invoices/42"},
		{name: "wildcard scope", method: "DELETE", path: "/invoices/42", claims: func(c *token.Claims) { c.Scopes = []string{"invoices:*"} }},
		{name: "any audience", method: "GET", path: "/invoices/42", claims: func(c *token.Claims) { c.Audience = []string{"*"} }},
		{name: "own environment", method: "GET", path: "/invoices/42", claims: func(c *token.Claims) { c.Environment = "prod" }},
		{name: "loopback network", method: "GET", path: "/invoices/42", claims: func(c *token.Claims) {
			c.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")}
		}},
		{name: "window around now", method: "GET", path: "/invoices/42", claims: func(c *token.Claims) {
			c.Windows = []token.Window{{Start: "00:00", End: "24:00", Zone: "Europe/Paris"}}
		}},
		{name: "issued after the tenant's cut-off", method: "GET", path: "/invoices/42", claims: func(c *token.Claims) { c.Tenant = "rotated" }},
		{name: "any-method route", method: "POST", path: "/admin/users/7", claims: func(c *token.Claims) { c.Scopes = []string{"admin:all"} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, c := mint(t, f.signer, tc.claims)
			before := f.hits.Load()
			r := do(t, nil, tc.method, srv.URL+tc.path, tok, nil)
			if r.status != http.StatusOK {
				t.Fatalf("got %d %s, want 200", r.status, r.body)
			}
			if f.hits.Load() != before+1 {
				t.Fatal("allowed request did not reach the upstream")
			}
			h := f.lastHeaders()
			if h.Get("Authorization") != "" {
				t.Fatal("authorization header was forwarded upstream")
			}
			if h.Get(HeaderTokenID) != c.ID || h.Get(HeaderTenant) != c.Tenant || h.Get(HeaderHolder) != c.Holder {
				t.Fatalf("identity headers %v", h)
			}
		})
	}
	t.Run("identity headers cannot be forged", func(t *testing.T) {
		tok, c := mint(t, f.signer, nil)
		do(t, nil, "GET", srv.URL+"/invoices/1", tok, map[string]string{HeaderTenant: "other", HeaderTokenID: "forged"})
		if h := f.lastHeaders(); h.Get(HeaderTenant) != c.Tenant || h.Get(HeaderTokenID) != c.ID {
			t.Fatalf("forged identity reached the upstream: %v", h)
		}
	})
}

func TestProxyKeepAuthorization(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", func(o *Options) { o.KeepAuthorization = true })
	srv := f.proxy(t, e)
	tok, _ := mint(t, f.signer, nil)
	if r := do(t, nil, "GET", srv.URL+"/invoices/1", tok, nil); r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if got := f.lastHeaders().Get("Authorization"); got != "Bearer "+tok {
		t.Fatal("authorization header was not kept")
	}
}

func TestRetiredKeyDeniesCachedTokens(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	srv := f.proxy(t, e)
	tok, _ := mint(t, f.signer, nil)
	if r := do(t, nil, "GET", srv.URL+"/invoices/1", tok, nil); r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	if e.CacheLen() == 0 {
		t.Fatal("token was not cached")
	}
	kv := f.kv(t, events.BucketKeys)
	if err := kv.Delete(context.Background(), f.signer.KeyID); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if r := do(t, nil, "GET", srv.URL+"/invoices/1", tok, nil); r.reason != string(ReasonUnknownKey) {
			return errorf("cached token still gets %d %q", r.status, r.reason)
		}
		return nil
	})
	// Publishing the key again brings the token back.
	f.publishKey(t, f.signer)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if r := do(t, nil, "GET", srv.URL+"/invoices/1", tok, nil); r.status != 200 {
			return errorf("after re-publishing the key: %d %q", r.status, r.reason)
		}
		return nil
	})
}

func TestRevocationRemovedByDelete(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	srv := f.proxy(t, e)
	tok, c := mint(t, f.signer, nil)
	rev := f.revoke(t, events.DenyKeyToken(c.ID), events.DenyRecord{Kind: events.RevokeToken, TokenID: c.ID})
	waitRevision(t, e, rev)
	if r := do(t, nil, "GET", srv.URL+"/invoices/1", tok, nil); r.reason != string(ReasonRevoked) {
		t.Fatalf("got %d %q, want revoked", r.status, r.reason)
	}
	if err := f.kv(t, events.BucketDenylist).Delete(context.Background(), events.DenyKeyToken(c.ID)); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if r := do(t, nil, "GET", srv.URL+"/invoices/1", tok, nil); r.status != 200 {
			return errorf("after un-revoking: %d %q", r.status, r.reason)
		}
		return nil
	})
}

func TestRevocationsReplayedAtStart(t *testing.T) {
	f := newFixture(t)
	tok, c := mint(t, f.signer, nil)
	rev := f.revoke(t, events.DenyKeyHolder(c.Tenant, c.Holder), events.DenyRecord{Kind: events.RevokeHolder, Tenant: c.Tenant, Holder: c.Holder})
	e := f.enforcer(t, "edge-1", nil) // Start returns after the replay
	if got := e.DenylistRevision(); got < rev {
		t.Fatalf("revision %d after start, want ≥ %d", got, rev)
	}
	if d := e.Check(&Request{Token: tok, Method: "GET", Route: "/x", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("127.0.0.1")}); d.Reason != ReasonRevoked {
		t.Fatalf("got %v", d)
	}
}

func TestForwardedFor(t *testing.T) {
	f := newFixture(t)
	trusting := f.enforcer(t, "edge-trust", func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	untrusting := f.enforcer(t, "edge-plain", nil)
	trustSrv, plainSrv := f.proxy(t, trusting), f.proxy(t, untrusting)
	office := func(c *token.Claims) { c.Networks = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")} }
	tok, _ := mint(t, f.signer, office)

	cases := []struct {
		name   string
		srv    string
		header map[string]string
		want   int
	}{
		{"trusted peer, client in network", trustSrv.URL, map[string]string{"X-Forwarded-For": "203.0.113.7"}, 200},
		{"trusted peer, chain through trusted hops", trustSrv.URL, map[string]string{"X-Forwarded-For": "203.0.113.7, 127.0.0.2"}, 200},
		{"trusted peer, spoofed left entry", trustSrv.URL, map[string]string{"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, 403},
		{"trusted peer, x-real-ip", trustSrv.URL, map[string]string{"X-Real-IP": "203.0.113.9"}, 200},
		{"trusted peer, no header", trustSrv.URL, nil, 403},
		{"untrusted peer, x-forwarded-for ignored", plainSrv.URL, map[string]string{"X-Forwarded-For": "203.0.113.7"}, 403},
		{"untrusted peer, x-real-ip ignored", plainSrv.URL, map[string]string{"X-Real-IP": "203.0.113.7"}, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, nil, "GET", tc.srv+"/invoices/1", tok, tc.header)
			if r.status != tc.want {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.want)
			}
			if tc.want == 403 && r.reason != string(ReasonSourceNetwork) {
				t.Fatalf("reason %q, want source_network", r.reason)
			}
		})
	}
	t.Run("upstream sees only the socket peer from an untrusted client", func(t *testing.T) {
		plain, _ := mint(t, f.signer, nil)
		if r := do(t, nil, "GET", plainSrv.URL+"/invoices/1", plain, map[string]string{"X-Forwarded-For": "203.0.113.7"}); r.status != 200 {
			t.Fatalf("got %d", r.status)
		}
		if got := f.lastHeaders().Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Fatalf("upstream X-Forwarded-For %q, want 127.0.0.1", got)
		}
		if r := do(t, nil, "GET", trustSrv.URL+"/invoices/1", plain, map[string]string{"X-Forwarded-For": "203.0.113.7"}); r.status != 200 {
			t.Fatalf("got %d", r.status)
		}
		if got := f.lastHeaders().Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
			t.Fatalf("upstream X-Forwarded-For %q, want the trusted chain", got)
		}
	})
}

func TestDeviceBindingTLS(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-tls", nil)
	u := mustURL(t, f.upstream.URL)
	h, err := NewProxy(e, u)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	device := clientCert(t, "laptop-1")
	other := clientCert(t, "laptop-2")
	tok, _ := mint(t, f.signer, func(c *token.Claims) { c.Device = token.Thumbprint(device.Certificate[0]) })
	client := func(certs ...tls.Certificate) *http.Client {
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		return &http.Client{Transport: tr}
	}
	cases := []struct {
		name   string
		client *http.Client
		want   int
	}{
		{"bound certificate", client(device), 200},
		{"another certificate", client(other), 403},
		{"no certificate", client(), 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.client, "GET", srv.URL+"/invoices/1", tok, nil)
			if r.status != tc.want {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.want)
			}
			if tc.want == 403 && r.reason != string(ReasonDeviceBinding) {
				t.Fatalf("reason %q", r.reason)
			}
		})
	}
}

func TestDeviceBindingHeader(t *testing.T) {
	f := newFixture(t)
	trusting := f.enforcer(t, "edge-trust", func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	untrusting := f.enforcer(t, "edge-plain", nil)
	trustSrv, plainSrv := f.proxy(t, trusting), f.proxy(t, untrusting)
	device := clientCert(t, "laptop-1")
	thumb := token.Thumbprint(device.Certificate[0])
	tok, _ := mint(t, f.signer, func(c *token.Claims) { c.Device = thumb })
	pemEscaped := escapedPEM(device.Certificate[0])

	cases := []struct {
		name  string
		srv   string
		value string
		want  int
	}{
		{"trusted proxy, thumbprint", trustSrv.URL, thumb, 200},
		{"trusted proxy, upper-case colon thumbprint", trustSrv.URL, colonHex(thumb), 200},
		{"trusted proxy, escaped PEM", trustSrv.URL, pemEscaped, 200},
		{"trusted proxy, other thumbprint", trustSrv.URL, token.Thumbprint([]byte("other")), 403},
		{"trusted proxy, garbage", trustSrv.URL, "not-a-cert", 403},
		{"untrusted peer, header ignored", plainSrv.URL, thumb, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, nil, "GET", tc.srv+"/invoices/1", tok, map[string]string{DefaultDeviceHeader: tc.value})
			if r.status != tc.want {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.want)
			}
			if tc.want == 200 && f.lastHeaders().Get(DefaultDeviceHeader) != "" {
				t.Fatal("device header forwarded upstream")
			}
		})
	}
}

// TestRevocationExpiresWithTTL: denylist entries live until the revoked
// token would have expired (a per-key TTL); the expiry marker removes them.
func TestRevocationExpiresWithTTL(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-1", nil)
	tok, c := mint(t, f.signer, nil)
	b, _ := json.Marshal(events.DenyRecord{Kind: events.RevokeToken, TokenID: c.ID, Reason: "test", Actor: "test", RevokedAt: time.Now()})
	rev, err := f.kv(t, events.BucketDenylist).Create(context.Background(), events.DenyKeyToken(c.ID), b, jetstream.KeyTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, e, rev)
	if d := e.Check(readReq(tok)); d.Reason != ReasonRevoked {
		t.Fatalf("got %+v", d)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if d := e.Check(readReq(tok)); !d.Allow {
			return errorf("after the entry's TTL: %+v", d)
		}
		return nil
	})
	if n := e.Stats().DenyEntries; n != 0 {
		t.Fatalf("%d deny entries left", n)
	}
}

// TestHolderRuleSparesTokensIssuedAfter: revoking a holder kills the tokens
// it held at that moment; a token issued to it afterwards works. A key-id
// rule kills everything the key signed, whatever its issue time.
func TestHolderRuleSparesTokensIssuedAfter(t *testing.T) {
	f := newFixture(t)
	revokedAt := time.Now().Add(-time.Hour).UTC()
	old, c := mint(t, f.signer, func(c *token.Claims) { c.IssuedAt = revokedAt.Add(-time.Minute).Unix() })
	fresh, _ := mint(t, f.signer, nil)
	rec := events.DenyRecord{Kind: events.RevokeHolder, Tenant: c.Tenant, Holder: c.Holder, Reason: "incident", Actor: "test",
		RevokedAt: revokedAt, Expiry: time.Now().Add(time.Hour).UTC()}
	b, _ := json.Marshal(rec)
	if _, err := f.kv(t, events.BucketDenylist).Put(context.Background(), events.DenyKeyHolder(c.Tenant, c.Holder), b); err != nil {
		t.Fatal(err)
	}
	e := f.enforcer(t, "edge-1", nil)
	req := func(tok string) Reason {
		return e.Check(&Request{Token: tok, Method: "GET", Route: "/x", Scope: "invoices:read", RemoteAddr: netip.MustParseAddr("127.0.0.1")}).Reason
	}
	if got := req(old); got != ReasonRevoked {
		t.Fatalf("token issued before the holder revocation: %v, want revoked", got)
	}
	if got := req(fresh); got != ReasonOK {
		t.Fatalf("token issued after the holder revocation: %v, want ok", got)
	}
	f.revoke(t, events.DenyKeyKey(f.signer.KeyID), events.DenyRecord{Kind: events.RevokeKey, KeyID: f.signer.KeyID})
	natstest.WaitFor(t, 5*time.Second, func() error {
		if got := req(fresh); got != ReasonRevoked {
			return errorf("after key revocation: %v", got)
		}
		return nil
	})
}
