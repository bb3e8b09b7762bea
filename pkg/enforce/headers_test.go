package enforce

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// clientHeaders are what an attacker adds to an allowed request, hoping the
// upstream believes them.
var clientHeaders = map[string]string{
	"X-HTTP-Method-Override":   "DELETE",
	"X-HTTP-Method":            "DELETE",
	"X-Method-Override":        "DELETE",
	"X_HTTP_Method_Override":   "DELETE",
	"X-Original-URL":           "/admin/x",
	"X-Rewrite-URL":            "/admin/x",
	"X-Real-IP":                "10.66.6.6",
	"X_Real_IP":                "10.66.6.6",
	"Forwarded":                "for=10.66.6.6;host=evil.example;proto=https",
	"X-Forwarded-Host":         "evil.example",
	"X-Forwarded-Proto":        "evil-proto",
	"X-Forwarded-Port":         "6666",
	"X-Forwarded-Prefix":       "/evil",
	"X-Client-IP":              "10.66.6.6",
	"True-Client-IP":           "10.66.6.6",
	"CF-Connecting-IP":         "10.66.6.6",
	"Fastly-Client-IP":         "10.66.6.6",
	"X-Cluster-Client-IP":      "10.66.6.6",
	"X-Original-Forwarded-For": "10.66.6.6",
	"X-Cordon-Token-Id":        "forged",
	"X-Cordon-Scopes":          "admin:*",
	"X_Cordon_Holder":          "forged",
	"X-Forwarded-For":          "10.66.6.6",
}

// TestProxyStripsClientHeaders: an upstream that echoes what it received
// sees none of the client's overrides or identity claims.
func TestProxyStripsClientHeaders(t *testing.T) {
	f := newFixture(t)
	plain := f.enforcer(t, "edge-plain", nil)
	trusting := f.enforcer(t, "edge-trust", func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	tok, c := mint(t, f.signer, nil)

	t.Run("untrusted peer", func(t *testing.T) {
		srv := f.proxy(t, plain)
		r := do(t, nil, "GET", srv.URL+"/invoices/42", tok, clientHeaders)
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		h := f.lastHeaders()
		for name, v := range h {
			for _, val := range v {
				if strings.Contains(val, "10.66.6.6") || strings.Contains(val, "evil") || val == "DELETE" ||
					val == "/admin/x" || val == "forged" || val == "admin:*" || val == "6666" {
					t.Errorf("upstream received %s: %q", name, val)
				}
			}
			for sent := range clientHeaders {
				if headerNameEqual(name, sent) && !proxySets(name) {
					t.Errorf("upstream received client header %s (sent as %s)", name, sent)
				}
			}
		}
		if got := h.Get(HeaderTokenID); got != c.ID {
			t.Errorf("token id header %q, want %q", got, c.ID)
		}
		if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want the socket peer", got)
		}
	})
	t.Run("trusted proxy keeps identity, loses overrides", func(t *testing.T) {
		srv := f.proxy(t, trusting)
		r := do(t, nil, "GET", srv.URL+"/invoices/42", tok, clientHeaders)
		if r.status != 200 {
			t.Fatalf("got %d %s", r.status, r.body)
		}
		h := f.lastHeaders()
		if h.Get("X-Real-IP") != "10.66.6.6" || h.Get("True-Client-IP") != "10.66.6.6" {
			t.Errorf("a trusted proxy's identity headers were removed: %v", h)
		}
		for _, name := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X_http_method_override",
			"X-Original-URL", "X-Rewrite-URL", "X-Cordon-Scopes", "X_cordon_holder"} {
			if _, ok := h[name]; ok {
				t.Errorf("upstream received %s from a trusted proxy", name)
			}
		}
		if h.Get(HeaderTokenID) != c.ID {
			t.Errorf("token id header %q", h.Get(HeaderTokenID))
		}
	})
}

// proxySets names the headers the proxy itself writes (with its own
// values, checked separately).
func proxySets(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", HeaderTokenID, HeaderTenant, HeaderHolder:
		return true
	}
	return false
}

// TestMiddlewareStripsClientHeaders: the library's handler chain gets the
// same protection as the proxy.
func TestMiddlewareStripsClientHeaders(t *testing.T) {
	s := newSigner(t)
	rs, err := LoadRoutes(demoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	e := local(t, s, func(o *Options) { o.Routes = rs })
	var got http.Header
	h := e.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	tok, _ := mint(t, s, nil)
	r := httptest.NewRequest("GET", "/invoices/42", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range clientHeaders {
		r.Header[k] = []string{v} // as sent, not canonicalised
	}
	h.ServeHTTP(httptest.NewRecorder(), r)
	if got == nil {
		t.Fatal("denied")
	}
	for name := range got {
		for sent := range clientHeaders {
			if headerNameEqual(name, sent) && !strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Cordon-") {
				t.Errorf("next handler received %s", name)
			}
		}
	}
	if got.Get(HeaderHolder) != "billing-worker" || len(got.Values(HeaderHolder)) != 1 {
		t.Errorf("holder header %v", got.Values(HeaderHolder))
	}
}
