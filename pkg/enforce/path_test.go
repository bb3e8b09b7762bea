package enforce

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCanonicalizePath(t *testing.T) {
	cases := []struct {
		target string // request-target as sent
		ok     bool
		path   string // canonical path when ok
	}{
		{"/invoices/42", true, "/invoices/42"},
		{"/invoices/42?x=1", true, "/invoices/42"},
		{"/invoices/", true, "/invoices/"},
		{"/", true, "/"},
		{"/invoices/%41%42", true, "/invoices/AB"},
		{"/invoices/a%20b", true, "/invoices/a b"},
		{"/invoices/v1.2", true, "/invoices/v1.2"},
		{"/invoices/v1%2Ejson", true, "/invoices/v1.json"},
		{"/invoices/caf%C3%A9", true, "/invoices/café"},
		{"/invoices/x;a=b", true, "/invoices/x;a=b"},
		{"/invoices/..%2Fadmin%2Fx", false, ""},
		{"/invoices/..%2fadmin", false, ""},
		{"/invoices/%2e%2e/admin/x", false, ""},
		{"/invoices/%2E%2E%2Fadmin%2Fx", false, ""},
		{"/invoices/./../admin", false, ""},
		{"/invoices/.", false, ""},
		{"/invoices/..", false, ""},
		{"//admin", false, ""},
		{"/invoices//42", false, ""},
		{"/invoices/..%5Cadmin", false, ""},
		{"/invoices/%5c", false, ""},
		{"/invoices/..%252Fadmin", false, ""},
		{"/invoices/%25", false, ""},
		{"/invoices/..;/admin", false, ""},
		{"/invoices/.;x/admin", false, ""},
		{"/invoices/42.", false, ""},
		{"/invoices/42%20", false, ""},
		{"/%20/0", false, ""},
		{"/0/;", false, ""},
		{"/00/%20;", false, ""},
		{"/invoices/;x/42", false, ""},
		{"/invoices/42.;x", false, ""},
		{"/invoices/..%EF%BC%8Fadmin", false, ""},
		{"/invoices/%EF%BC%8E%EF%BC%8E/admin", false, ""},
		{"/invoices/%E2%88%95admin", false, ""},
		{"/invoices/%C0%AE%C0%AE/admin", false, ""},
		{"/invoices/42%00", false, ""},
		{"/invoices/42%0A", false, ""},
		{"/invoices/42%7F", false, ""},
		{"/invoices/42%C2%85", false, ""},
		{"*", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			u, err := url.ParseRequestURI(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			r := &http.Request{Method: "GET", URL: u, RequestURI: tc.target}
			if got := canonicalizePath(r); got != tc.ok {
				t.Fatalf("canonicalizePath = %v, want %v", got, tc.ok)
			}
			if !tc.ok {
				return
			}
			if r.URL.Path != tc.path || r.URL.RawPath != "" {
				t.Fatalf("path %q raw %q, want %q and no raw path", r.URL.Path, r.URL.RawPath, tc.path)
			}
			if r.RequestURI != r.URL.RequestURI() {
				t.Fatalf("request URI %q, want %q", r.RequestURI, r.URL.RequestURI())
			}
		})
	}
}

// lenientResolve is how a careless upstream finds the resource a path
// names: it decodes until nothing changes, folds backslashes and look-alike
// slashes and dots, drops ";" parameters and trailing dots of segments, and
// cleans the result. The enforcer must never let it resolve a path to a
// route other than the one the enforcer matched.
func lenientResolve(raw string) string {
	p := raw
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	for range 4 {
		d, err := url.PathUnescape(p)
		if err != nil || d == p {
			break
		}
		p = d
	}
	p = strings.NewReplacer("\\", "/", "／", "/", "∕", "/", "＼", "/", "．", ".", "\xc0\xae", ".").Replace(p)
	segs := strings.Split(p, "/")
	for i, s := range segs {
		s, _, _ = strings.Cut(s, ";")
		if s != "." && s != ".." {
			s = strings.TrimRight(s, ". ")
		}
		segs[i] = s
	}
	return path.Clean("/" + strings.Join(segs, "/"))
}

// rawGet sends a request-target byte for byte (no client-side cleaning).
func rawGet(t *testing.T, addr, target, tok string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: invoices.test\r\nAuthorization: Bearer %s\r\nUser-Agent: attacker/1\r\nConnection: close\r\n\r\n", target, tok)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: read response: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProxyPathTricks is the attack of issue 8: a token that may read
// invoices asks for /admin/x through the /invoices/{id} route, in every
// spelling that a decoding, cleaning upstream would resolve to /admin/x.
// The upstream must never serve it, and a plain invoice still works.
func TestProxyPathTricks(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var resolved []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := lenientResolve(r.RequestURI)
		mu.Lock()
		resolved = append(resolved, r.RequestURI+" -> "+p)
		mu.Unlock()
		if p == "/admin" || strings.HasPrefix(p, "/admin/") {
			_, _ = io.WriteString(w, "ADMIN SECRET "+p)
			return
		}
		_, _ = io.WriteString(w, "resource "+p)
	}))
	t.Cleanup(upstream.Close)
	e := f.enforcer(t, "edge-paths", func(o *Options) { o.ThrottleBurst = -1 })
	h, err := NewProxy(e, mustURL(t, upstream.URL))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	tok, _ := mint(t, f.signer, nil) // invoices:read and invoices:list, not admin:all

	if code, body := rawGet(t, addr, "/invoices/42", tok); code != 200 || body != "resource /invoices/42" {
		t.Fatalf("legit request: %d %q", code, body)
	}
	variants := []string{
		"/invoices/..%2Fadmin%2Fx",
		"/invoices/..%2fadmin%2fx",
		"/invoices/%2e%2e/admin/x",
		"/invoices/%2E%2E%2Fadmin%2Fx",
		"/invoices/%2e%2e%2fadmin%2fx",
		"/invoices/./../admin/x",
		"/invoices/../admin/x",
		"/invoices/..",
		"/invoices/42/../../admin/x",
		"//admin/x",
		"/invoices//../admin/x",
		"/invoices/..\\admin\\x",
		"/invoices/..%5Cadmin%5Cx",
		"/invoices/..%5cadmin",
		"/invoices/..%252Fadmin%252Fx",
		"/invoices/%252e%252e%252fadmin%252fx",
		"/invoices/%25252e%25252e%25252fadmin",
		"/invoices/..;/admin/x",
		"/invoices/x;/../../admin/x",
		"/invoices/..;jsessionid=1/admin/x",
		"/invoices/..%2Fadmin%2Fx.",
		"/invoices/..%2Fadmin.",
		"/invoices/.../admin",
		"/invoices/..%EF%BC%8Fadmin%EF%BC%8Fx",
		"/invoices/..／admin／x",
		"/invoices/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin",
		"/invoices/..%E2%88%95admin",
		"/invoices/..%EF%BC%BCadmin",
		"/invoices/%C0%AE%C0%AE%2Fadmin",
		"/invoices/..%00/admin/x",
		"/invoices/%00..%2Fadmin",
		"/admin/x",
		"/admin/%2e%2e/admin/x",
	}
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			before := e.Stats().Denied
			code, body := rawGet(t, addr, v, tok)
			if strings.Contains(body, "ADMIN SECRET") {
				t.Fatalf("%s: the upstream served the admin resource: %d %q", v, code, body)
			}
			if code == 200 {
				// Allowed: then the upstream resolved it to an invoice.
				if !strings.HasPrefix(body, "resource /invoices/") || strings.Count(body, "/") != 2 {
					t.Fatalf("%s: allowed and resolved to %q", v, body)
				}
				return
			}
			if code == http.StatusBadRequest && strings.Contains(body, `"reason":"bad_path"`) && e.Stats().Denied == before {
				t.Fatalf("%s: refused as bad_path but not recorded as a denial", v)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range resolved {
		if strings.Contains(r, "-> /admin") {
			t.Fatalf("the upstream resolved %s", r)
		}
	}
	t.Logf("upstream saw %d requests: %v", len(resolved), resolved)
}

// TestMiddlewareForwardsTheMatchedPath: what the next handler sees is the
// canonical path the route was matched on, never the raw spelling.
func TestMiddlewareForwardsTheMatchedPath(t *testing.T) {
	s := newSigner(t)
	rs, err := LoadRoutes(demoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	e := local(t, s, func(o *Options) { o.Routes = rs })
	var got *http.Request
	h := e.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r }))
	tok, _ := mint(t, s, nil)
	for target, want := range map[string]string{
		"/invoices/%34%32":      "/invoices/42",
		"/invoices/a%20b?x=%2F": "/invoices/a%20b",
		"/invoices/42":          "/invoices/42",
	} {
		got = nil
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got == nil {
			t.Fatalf("%s: denied %d %s", target, w.Code, w.Body)
		}
		if got.URL.EscapedPath() != want || got.URL.RawPath != "" || !strings.HasPrefix(got.RequestURI, want) {
			t.Fatalf("%s: next saw path %q (raw %q, request URI %q), want %q", target, got.URL.EscapedPath(), got.URL.RawPath, got.RequestURI, want)
		}
	}
}

// FuzzCanonicalPath: whatever request-target the path check accepts is
// forwarded in a form that no decoding, cleaning upstream reads as another
// path: no raw spelling is kept, nothing is left to decode, cleaning
// changes nothing, and a lenient resolver finds as many segments as the
// route matched. Seeds: the attack spellings in testdata/fuzz.
func FuzzCanonicalPath(f *testing.F) {
	f.Add("/invoices/42")
	f.Add("/invoices/..%2Fadmin%2Fx")
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", URL: u, RequestURI: target}
		if !canonicalizePath(r) {
			return
		}
		p := r.URL.Path
		if r.URL.RawPath != "" || strings.ContainsAny(p, "%\\") {
			t.Fatalf("%q: kept raw path %q or decodable %q", target, r.URL.RawPath, p)
		}
		if d, err := url.PathUnescape(r.URL.EscapedPath()); err != nil || d != p {
			t.Fatalf("%q: forwarded %q decodes to %q, not the matched %q", target, r.URL.EscapedPath(), d, p)
		}
		if c := path.Clean(p); c != p && c+"/" != p {
			t.Fatalf("%q: cleaning %q gives %q", target, p, c)
		}
		want := strings.Count(strings.TrimSuffix(p, "/"), "/")
		if got := strings.Count(lenientResolve(r.URL.EscapedPath()), "/"); p != "/" && got != want {
			t.Fatalf("%q: a lenient upstream resolves %q to %d segments, the route matched %d", target, r.URL.EscapedPath(), got, want)
		}
	})
}
