package enforce

import (
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadDemoRoutes(t *testing.T) {
	rs, err := LoadRoutes(demoRoutes)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Service != "invoices" || rs.Environment != "prod" || len(rs.Routes) != 8 {
		t.Fatalf("got service %q env %q, %d routes", rs.Service, rs.Environment, len(rs.Routes))
	}
	if rs.Routes[0].Line != 6 {
		t.Fatalf("first route on line %d, want 6", rs.Routes[0].Line)
	}
	c, err := compileRoutes(rs)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		wantPath     string // "" = no route
		wantScope    string
	}{
		{"GET", "/invoices", "/invoices", "invoices:list"},
		{"GET", "/invoices/42", "/invoices/{id}", "invoices:read"},
		{"HEAD", "/invoices/42", "/invoices/{id}", "invoices:read"},
		{"POST", "/invoices", "/invoices", "invoices:create"},
		{"PUT", "/invoices/42", "/invoices/{id}", "invoices:write"},
		{"DELETE", "/invoices/42", "/invoices/{id}", "invoices:delete"},
		{"GET", "/invoices/42/pdf", "/invoices/{id}/pdf", "invoices:read"},
		{"GET", "/customers/7/invoices", "/customers/{id}/invoices", "customers:read"},
		{"PATCH", "/admin/a/b/c", "/admin/{path...}", "admin:all"},
		{"PATCH", "/invoices/42", "", ""},
		{"GET", "/invoices/42/pdf/x", "", ""},
		{"GET", "/", "", ""},
		{"GET", "/invoices//42", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := c.match(httptest.NewRequest(tc.method, tc.path, nil))
			switch {
			case tc.wantPath == "" && r != nil:
				t.Fatalf("matched %+v, want no route", *r)
			case tc.wantPath != "" && r == nil:
				t.Fatal("no route")
			case r != nil && (r.Path != tc.wantPath || r.Scope != tc.wantScope):
				t.Fatalf("got %s %s, want %s %s", r.Path, r.Scope, tc.wantPath, tc.wantScope)
			}
		})
	}
}

func TestBadRoutes(t *testing.T) {
	cases := []struct {
		file string
		want string // file:line and what is wrong
	}{
		{"bad-unknown-field.yaml", "bad-unknown-field.yaml:6: scopes: unknown field"},
		{"bad-method.yaml", `bad-method.yaml:6: method: "FETCH" is not one of`},
		{"bad-scope.yaml", `bad-scope.yaml:5: scope: "invoices": want "resource:action"`},
		{"bad-duplicate.yaml", "bad-duplicate.yaml:6: route \"GET /invoices/{number}\""},
		{"bad-missing-scope.yaml", "bad-missing-scope.yaml:3: scope: is required"},
		{"bad-no-service.yaml", "bad-no-service.yaml:1: service: is required"},
		{"bad-path.yaml", `bad-path.yaml:4: path: "invoices/{id}" must start with /`},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			_, err := LoadRoutes(filepath.Join("../../testdata/routes", tc.file))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
	t.Run("inline", func(t *testing.T) {
		for name, src := range map[string]string{
			"empty":        "",
			"not mapping":  "- a\n- b\n",
			"routes map":   "service: s\nroutes:\n  a: b\n",
			"two docs":     "service: s\n---\nservice: t\n",
			"no routes":    "service: s\nroutes: []\n",
			"bad service":  "service: a.b\nroutes:\n  - {method: GET, path: /a, scope: a:b}\n",
			"yaml syntax":  "service: [\n",
			"null method":  "service: s\nroutes:\n  - {method: , path: /a, scope: a:b}\n",
			"bad wildcard": "service: s\nroutes:\n  - {method: GET, path: '/a/{x...}/b', scope: a:b}\n",
		} {
			if _, err := ParseRoutes(name, []byte(src)); !errors.Is(err, ErrConfig) {
				t.Errorf("%s: error %v, want ErrConfig", name, err)
			}
		}
	})
}
