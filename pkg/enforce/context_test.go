package enforce

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// contextRoutes are the demo routes and one with two parameters.
func contextRoutes(t testing.TB) *Routes {
	t.Helper()
	rs, err := LoadRoutes(demoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	rs.Routes = append(rs.Routes,
		Route{Method: "GET", Path: "/orgs/{org}/repos/{repo}", Scope: "invoices:read"},
		Route{Method: "GET", Path: "/files/{id}/", Scope: "invoices:read"},
		Route{Method: "GET", Path: "/x/{a}/{b}/{rest...}", Scope: "invoices:read"},
		Route{Method: "GET", Path: "/{$}", Scope: "invoices:list"},
		Route{Method: "GET", Path: "/m/{a}/{b}/{c}/{d}/{e}", Scope: "invoices:read"},
	)
	return rs
}

func TestRouteResource(t *testing.T) {
	c, err := compileRoutes(contextRoutes(t))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 100)
	part := strings.Repeat("b", events.MaxResourcePart)
	// 'é' is two bytes: 40 of them are 80 bytes, cut at a rune boundary.
	accents := strings.Repeat("é", 40)
	tok := token.Prefix + "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJqdGkiOiIx.c2ln"
	cases := []struct {
		name, method, path, route, want string
	}{
		{"one parameter", "GET", "/invoices/42", "/invoices/{id}", "42"},
		{"parameter then literal", "GET", "/customers/7/invoices", "/customers/{id}/invoices", "7"},
		{"parameter before a literal", "GET", "/invoices/42/pdf", "/invoices/{id}/pdf", "42"},
		{"two parameters", "GET", "/orgs/acme/repos/widgets", "/orgs/{org}/repos/{repo}", "acme/widgets"},
		{"rest of the path", "PATCH", "/admin/users/7/roles", "/admin/{path...}", "users/7/roles"},
		{"empty rest", "GET", "/admin/", "/admin/{path...}", ""},
		{"trailing slash pattern", "GET", "/files/9/x/y", "/files/{id}/", "9"},
		{"parameters and rest", "GET", "/x/1/2/3/4", "/x/{a}/{b}/{rest...}", "1/2/3/4"},
		{"no parameter", "GET", "/invoices", "/invoices", ""},
		{"end anchor", "GET", "/", "/{$}", ""},
		{"long value is cut", "GET", "/invoices/" + long, "/invoices/{id}", long[:events.MaxResourcePart]},
		{"cut at a rune boundary", "GET", "/invoices/" + accents, "/invoices/{id}", accents[:events.MaxResourcePart]},
		{"long values, each cut", "GET", "/orgs/" + long + "/repos/" + long, "/orgs/{org}/repos/{repo}", long[:events.MaxResourcePart] + "/" + long[:events.MaxResourcePart]},
		{"rest is one value", "GET", "/x/" + part + "/" + part + "/" + strings.Repeat(part+"/", 5), "/x/{a}/{b}/{rest...}",
			part + "/" + part + "/" + part},
		{"whole is cut", "GET", "/m/" + strings.Repeat(long+"/", 4) + long, "/m/{a}/{b}/{c}/{d}/{e}",
			strings.Repeat(long[:events.MaxResourcePart]+"/", 5)[:events.MaxResourceLen]},
		{"a token in the path is not recorded", "GET", "/invoices/" + tok, "/invoices/{id}", redactedValue},
		{"a token in one of two values", "GET", "/orgs/acme/repos/" + tok, "/orgs/{org}/repos/{repo}", "acme/" + redactedValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://svc"+tc.path, nil)
			if !canonicalizePath(r) {
				t.Fatalf("path %q is not canonical", tc.path)
			}
			h := c.match(r)
			if h == nil || h.Path != tc.route {
				t.Fatalf("matched %v, want route %s", h, tc.route)
			}
			got := h.resource(r.URL.Path)
			if got != tc.want {
				t.Fatalf("resource %q, want %q", got, tc.want)
			}
			if len(got) > events.MaxResourceLen || strings.Contains(got, token.Prefix) {
				t.Fatalf("resource %q is out of bounds or carries a token", got)
			}
		})
	}
}

// TestContextAllocs: the request context costs no allocation on the
// request path: a one-parameter resource is a slice of the path, and Check
// copies the strings it is given.
func TestContextAllocs(t *testing.T) {
	c, err := compileRoutes(contextRoutes(t))
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/invoices/42", nil)
	h := c.match(r)
	if n := testing.AllocsPerRun(100, func() { h.resource(r.URL.Path) }); n != 0 {
		t.Errorf("one-parameter resource: %v allocations", n)
	}

	s := newSigner(t)
	e, err := New(Options{ID: "allocs", Service: "invoices", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.AddKey(s.KeyID, s.Public()); err != nil {
		t.Fatal(err)
	}
	tok, _ := mint(t, s, nil)
	req := readReq(tok)
	req.Resource, req.UserAgent, req.Device = "42", "curl/8.5.0", strings.Repeat("ab", 32)
	if d := e.Check(req); !d.Allow {
		t.Fatal(d)
	}
	if n := testing.AllocsPerRun(100, func() { e.Check(req) }); n != 0 {
		t.Errorf("Check of a seen token with request context: %v allocations", n)
	}
}

// TestUsageContext: what the real enforcer publishes for requests through
// its proxy over TLS with a client certificate: the route pattern, the
// resource it named, the normalised client and the certificate thumbprint.
func TestUsageContext(t *testing.T) {
	f := newFixture(t)
	f.routes = contextRoutes(t)
	e := f.enforcer(t, "edge-ctx", nil)
	h, err := NewProxy(e, mustURL(t, f.upstream.URL))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	cert := clientCert(t, "laptop-1")
	thumb := token.Thumbprint(cert.Certificate[0])
	plain := srv.Client()
	tr := plain.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
	withCert := &http.Client{Transport: tr}

	good, _ := mint(t, f.signer, nil)
	const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"
	long := strings.Repeat("9", 300)
	type want struct{ route, resource, client, device, reason string }
	steps := []struct {
		name   string
		client *http.Client
		path   string
		ua     string
		want   want
	}{
		{"one parameter, certificate", withCert, "/invoices/42", "", want{"/invoices/{id}", "42", "cordon-test/1", thumb, "ok"}},
		{"two parameters, browser", plain, "/orgs/acme/repos/widgets", chrome, want{"/orgs/{org}/repos/{repo}", "acme/widgets", "Edge/124", "", "ok"}},
		{"rest of the path, denied", plain, "/admin/users/7", "curl/8.5.0", want{"/admin/{path...}", "users/7", "curl/8", "", "scope_missing"}},
		{"long value", plain, "/invoices/" + long, "", want{"/invoices/{id}", long[:events.MaxResourcePart], "cordon-test/1", "", "ok"}},
		{"no route", plain, "/nowhere/42", "", want{"/nowhere/42", "", "cordon-test/1", "", "no_route"}},
		{"a token in the path", plain, "/invoices/" + good, "", want{"/invoices/{id}", redactedValue, "cordon-test/1", "", "ok"}},
	}
	for _, st := range steps {
		hdr := map[string]string{}
		if st.ua != "" {
			hdr["User-Agent"] = st.ua
		}
		do(t, st.client, "GET", srv.URL+st.path, good, hdr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	evs := readUsage(t, f.env.JS, "edge-ctx", len(steps)) // one batch: in order
	for i, ev := range evs {
		st, u := steps[i], &ev.u
		got := want{u.Route, u.Resource, u.Client, u.Device, u.Reason}
		if got != st.want {
			t.Errorf("%s:\n got %+v\nwant %+v", st.name, got, st.want)
		}
		if bytes.Contains(ev.data, []byte(good[:40])) {
			t.Errorf("%s: the event carries a piece of the token", st.name)
		}
	}
}

// TestUsageContextFromCheck: a library caller of Check may set the
// context itself; whatever it sets, the event the enforcer publishes is
// one the auditor accepts (bounded, valid UTF-8, a well-formed device or
// none), and a client it leaves empty comes from the user agent.
func TestUsageContextFromCheck(t *testing.T) {
	f := newFixture(t)
	e := f.enforcer(t, "edge-lib", nil)
	tok, _ := mint(t, f.signer, nil)
	reqs := []Request{
		{Resource: "inv-42", Client: "billing-sdk/3", Device: strings.Repeat("0f", 32), UserAgent: "ignored/1"},
		{Resource: strings.Repeat("\xff", 300), Client: strings.Repeat("c", 100), Device: "not a thumbprint", UserAgent: "curl/8.5.0"},
		{Resource: "a/" + tok, Device: strings.Repeat("AB", 32), UserAgent: tok},
	}
	for i := range reqs {
		r := readReq(tok)
		r.Resource, r.Client, r.Device, r.UserAgent = reqs[i].Resource, reqs[i].Client, reqs[i].Device, reqs[i].UserAgent
		e.Check(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.UsageFailed != 0 {
		t.Fatalf("%d usage events failed to encode", st.UsageFailed)
	}
	evs := readUsage(t, f.env.JS, "edge-lib", len(reqs)) // decoded and validated, one batch: in order
	wants := []struct{ resource, client, device string }{
		{"inv-42", "billing-sdk/3", strings.Repeat("0f", 32)},
		{"\ufffd", strings.Repeat("c", events.MaxClientLen), ""},
		{"a/" + redactedValue, "token", ""}, // the user agent "[token]"
	}
	for i, ev := range evs {
		u := &ev.u
		if w := wants[i]; u.Resource != w.resource || u.Client != w.client || u.Device != w.device {
			t.Errorf("event %d: resource %q client %q device %q, want %+v", i, u.Resource, u.Client, u.Device, w)
		}
		if bytes.Contains(ev.data, []byte(tok[:40])) {
			t.Errorf("event %d carries a piece of the token", i)
		}
	}
}

// TestTokenPrefixKnownToEvents: pkg/events, which imports nothing of ours,
// keeps its own copy of the token prefix to keep tokens out of clients.
func TestTokenPrefixKnownToEvents(t *testing.T) {
	if got := events.NormalizeClient(token.Prefix + "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiIxIn0.c2ln"); got != events.ClientOther {
		t.Fatalf("a token as the user agent normalises to %q: pkg/events' copy of token.Prefix is stale", got)
	}
}
