package issuer

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
)

// parse registers flags with register and parses args.
func parse(t *testing.T, register func(*flag.FlagSet), args ...string) error {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	register(fs)
	return fs.Parse(args)
}

// TestClientFlags: each flag defaults to its environment variable, else to
// the issuer's defaults; the URL is checked before anything is read.
func TestClientFlags(t *testing.T) {
	t.Setenv("CORDON_API", "")
	t.Setenv("CORDON_TOKEN_FILE", "")
	t.Setenv("CORDON_API_CA", "")
	var f ClientFlags
	if err := parse(t, f.RegisterFlags); err != nil {
		t.Fatal(err)
	}
	if f != (ClientFlags{URL: DefaultAPIURL, TokenFile: ".cordon/admin.token"}) || f.Validate() != nil {
		t.Errorf("defaults: %+v, %v", f, f.Validate())
	}
	t.Setenv("CORDON_API", "https://issuer.example:7400")
	t.Setenv("CORDON_TOKEN_FILE", "/run/secrets/admin.token")
	t.Setenv("CORDON_API_CA", "/run/secrets/ca.pem")
	f = ClientFlags{}
	if err := parse(t, f.RegisterFlags); err != nil {
		t.Fatal(err)
	}
	if f != (ClientFlags{URL: "https://issuer.example:7400", TokenFile: "/run/secrets/admin.token", CAFile: "/run/secrets/ca.pem"}) {
		t.Errorf("from the environment: %+v", f)
	}
	f = ClientFlags{}
	if err := parse(t, f.RegisterFlags, "--api", "ftp://127.0.0.1:7400", "--token-file", "t", "--api-ca", "c"); err != nil {
		t.Fatal(err)
	}
	if f.TokenFile != "t" || f.CAFile != "c" {
		t.Errorf("flags over the environment: %+v", f)
	}
	if err := f.Validate(); err == nil || err.Error() != `--api "ftp://127.0.0.1:7400" is not an http(s) URL` {
		t.Errorf("Validate() = %v", err)
	}
}

// TestIssueFlags: a full command line makes the request it says; what the
// API would refuse as malformed is refused first, naming the flag.
func TestIssueFlags(t *testing.T) {
	var f IssueFlags
	err := parse(t, f.RegisterFlags, "--tenant", "acme", "--holder", "billing-api", "--scope", "invoices:read, customers:read", "--scope", "x:y",
		"--audience", "payments", "--network", "10.20.1.0/24,10.0.0.7", "--env", "prod", "--window", "mon,wed 08:00-18:00 Europe/Paris",
		"--window", "sat 10:00-12:00", "--device", "ab12", "--ttl", "7d", "--not-before", "2026-01-02T15:04:05Z", "--break-glass",
		"--idempotency-key", "k1")
	if err != nil {
		t.Fatal(err)
	}
	req, err := f.IssueRequest()
	if err != nil {
		t.Fatal(err)
	}
	w1, _ := policy.ParseWindow("mon,wed 08:00-18:00 Europe/Paris")
	w2, _ := policy.ParseWindow("sat 10:00-12:00")
	nb := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	want := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read", "customers:read", "x:y"}, Audience: []string{"payments"},
		Networks: []string{"10.20.1.0/24", "10.0.0.7"}, Environment: "prod", Windows: []Window{Window(w1), Window(w2)}, Device: "ab12", TTL: "7d",
		NotBefore: &nb, BreakGlass: true}
	if !reflect.DeepEqual(req, want) || f.IdempotencyKey != "k1" {
		t.Errorf("request %+v, key %q\nwant %+v", req, f.IdempotencyKey, want)
	}

	base := []string{"--tenant", "acme", "--holder", "h", "--scope", "a:b"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no tenant", []string{"--holder", "h", "--scope", "a:b"}, "--tenant is required"},
		{"no holder", []string{"--tenant", "acme", "--scope", "a:b"}, "--holder is required"},
		{"no scope", []string{"--tenant", "acme", "--holder", "h", "--scope", " , "}, "at least one --scope is required (least privilege: name what the holder needs)"},
		{"bad ttl", append(base, "--ttl", "soon"), "--ttl: "},
		{"bad not-before", append(base, "--not-before", "tomorrow"), `--not-before "tomorrow" is not an RFC 3339 time such as 2026-01-02T15:04:05Z`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f IssueFlags
			if err := parse(t, f.RegisterFlags, c.args...); err != nil {
				t.Fatal(err)
			}
			if _, err := f.IssueRequest(); err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("IssueRequest() = %v, want %q", err, c.want)
			}
		})
	}
	if err := parse(t, new(IssueFlags).RegisterFlags, "--window", "mon 8-9"); err == nil || !strings.Contains(err.Error(), "-window") {
		t.Errorf("a bad window is not refused as it is parsed: %v", err)
	}
}

// TestRotateFlags: --grace and --ttl are checked, in that order.
func TestRotateFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--grace", "0s", "--ttl", "1h", "--idempotency-key", "k"}, ""},
		{[]string{"--grace", "soon", "--ttl", "later"}, "--grace: "},
		{[]string{"--ttl", "later"}, "--ttl: "},
	} {
		var f RotateFlags
		if err := parse(t, f.RegisterFlags, c.args...); err != nil {
			t.Fatal(err)
		}
		err := f.Validate()
		if c.want == "" && (err != nil || f.Request != (RotateRequest{Grace: "0s", TTL: "1h"}) || f.IdempotencyKey != "k") ||
			c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)) {
			t.Errorf("%v: %+v, %v; want %q", c.args, f, err, c.want)
		}
	}
}

// TestListAndRetireFlags: the filter and the retirement's reason.
func TestListAndRetireFlags(t *testing.T) {
	var l ListFilter
	if err := parse(t, l.RegisterFlags, "--tenant", "acme", "--holder", "h", "--status", "revoked"); err != nil ||
		l != (ListFilter{Tenant: "acme", Holder: "h", Status: "revoked"}) {
		t.Errorf("list filter %+v, %v", l, err)
	}
	var r RetireRequest
	if err := parse(t, r.RegisterFlags, "--reason", "leaked"); err != nil || r.Reason != "leaked" {
		t.Errorf("retire %+v, %v", r, err)
	}
}

// TestClientFlagsExplain: an API out of reach says what to check, and
// stays ErrUnreachable; other errors are left as they are.
func TestClientFlagsExplain(t *testing.T) {
	var f ClientFlags
	down := fmt.Errorf("GET http://127.0.0.1:1/v1/tokens: %w: connection refused", ErrUnreachable)
	if got := f.Explain(down); !errors.Is(got, ErrUnreachable) || !strings.HasPrefix(got.Error(), down.Error()) ||
		!strings.HasSuffix(got.Error(), "(is `cordon issuer` or `cordon up` running? set --api or $CORDON_API)") {
		t.Errorf("Explain(unreachable) = %v", got)
	}
	refused := &APIError{Status: 401}
	for _, err := range []error{nil, refused} {
		if got := f.Explain(err); got != err {
			t.Errorf("Explain(%v) = %v, want it unchanged", err, got)
		}
	}
}
