package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/token"
)

const fixtures = "../../testdata/policy"

func mustLoad(t testing.TB, path string) *Policy {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return p
}

func mustCeiling(t testing.TB, p *Policy, tenant, holder string) *Ceiling {
	t.Helper()
	c, err := p.Lookup(tenant, holder)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadDefault(t *testing.T) {
	p := mustLoad(t, filepath.Join(fixtures, "default.yaml"))
	if len(p.Holders) != 7 {
		t.Fatalf("holders = %d, want 7", len(p.Holders))
	}
	if len(p.Digest) != 64 {
		t.Errorf("digest %q is not a hex SHA-256", p.Digest)
	}

	b := mustCeiling(t, p, "acme", "billing-api")
	if want := []string{"invoices:read", "invoices:write", "customers:read"}; !slices.Equal(b.Scopes, want) {
		t.Errorf("scopes = %v, want %v", b.Scopes, want)
	}
	wantNets := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("2001:db8:20::/48")}
	if !slices.Equal(b.Networks, wantNets) {
		t.Errorf("networks = %v, want %v", b.Networks, wantNets)
	}
	// windows come from the merged x-office-hours anchor
	wantWin := token.Window{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "07:00", End: "21:00", Zone: "Europe/Paris"}
	if len(b.Windows) != 1 || FormatWindow(b.Windows[0]) != FormatWindow(wantWin) {
		t.Errorf("windows = %v, want [%v]", b.Windows, wantWin)
	}
	if b.MaxTTL != 24*time.Hour || b.RequireDevice || b.BreakGlass {
		t.Errorf("max_ttl/require_device/break_glass = %v/%v/%v", b.MaxTTL, b.RequireDevice, b.BreakGlass)
	}
	if b.Line == 0 {
		t.Error("ceiling line not recorded")
	}

	pg := mustCeiling(t, p, "globex", "partner-gateway")
	if !slices.Equal(pg.Networks, []netip.Prefix{netip.MustParsePrefix("203.0.113.10/32")}) {
		t.Errorf("bare IP network = %v, want 203.0.113.10/32", pg.Networks)
	}
	if pg.MaxTTL != 7*24*time.Hour {
		t.Errorf("7d max_ttl = %v", pg.MaxTTL)
	}
	if got := FormatWindow(pg.Windows[0]); got != "mon-fri 06:00-22:00 America/New_York" {
		t.Errorf("days: mon-fri window = %q", got)
	}
	rb := mustCeiling(t, p, "acme", "reporting-batch")
	if got := FormatWindow(rb.Windows[0]); got != "mon-sun 01:00-05:00 Europe/Paris" {
		t.Errorf("daily window = %q", got)
	}
	oc := mustCeiling(t, p, "acme", "oncall")
	if !oc.RequireDevice || !oc.BreakGlass || len(oc.Networks) != 0 {
		t.Errorf("oncall = %+v", oc)
	}
	if _, err := p.Lookup("acme", "nobody"); !errors.Is(err, ErrUnknownHolder) {
		t.Errorf("lookup unknown holder: %v, want ErrUnknownHolder", err)
	}
}

func TestGoodFixtures(t *testing.T) {
	t.Run("anchors", func(t *testing.T) {
		p := mustLoad(t, filepath.Join(fixtures, "good/anchors.yaml"))
		a, b := mustCeiling(t, p, "acme", "a"), mustCeiling(t, p, "acme", "b")
		if !slices.Equal(a.Scopes, []string{"invoices:read", "customers:read"}) {
			t.Errorf("aliased scopes = %v", a.Scopes)
		}
		if a.MaxTTL != time.Hour || b.MaxTTL != 2*time.Hour {
			t.Errorf("max_ttl a=%v b=%v: explicit keys must win over merged ones", a.MaxTTL, b.MaxTTL)
		}
		if len(b.Networks) != 1 || !slices.Equal(b.Audiences, []string{"payments"}) {
			t.Errorf("merged b = %+v", b)
		}
	})
	t.Run("sections", func(t *testing.T) {
		p := mustLoad(t, filepath.Join(fixtures, "good/sections.yaml"))
		if p.Detectors == nil || p.Response == nil {
			t.Fatal("detectors/response sections not kept")
		}
		var det map[string]map[string]any
		if err := p.Detectors.Decode(&det); err != nil {
			t.Fatal(err)
		}
		if det["scope_probing"]["denied_scopes"] != 5 {
			t.Errorf("detectors decoded as %v", det)
		}
		if p.Detectors.Line != 11 || p.Response.Line != 17 {
			t.Errorf("section lines = %d, %d; want 11, 17", p.Detectors.Line, p.Response.Line)
		}
	})
	t.Run("empty-holders", func(t *testing.T) {
		p := mustLoad(t, filepath.Join(fixtures, "good/empty-holders.yaml"))
		if len(p.Holders) != 0 || p.Detectors != nil {
			t.Errorf("got %+v", p)
		}
	})
}

func TestBadFixtures(t *testing.T) {
	tests := []struct{ file, want string }{
		{"bad-bool.yaml", `bad-bool.yaml:8: holders[0].require_device: want true or false, got "yes"`},
		{"bad-cidr.yaml", `bad-cidr.yaml:9: holders[0].networks[1]: "10.0.0.0/33" is not a CIDR`},
		{"bad-day.yaml", `bad-day.yaml:8: holders[0].windows[0].days[1]: "funday" is not one of mon, tue, wed, thu, fri, sat, sun`},
		{"bad-scope.yaml", `bad-scope.yaml:7: holders[0].scopes[1]: "invoices" is not a scope: want "resource:action"`},
		{"bad-tenant.yaml", `bad-tenant.yaml:3: holders[0].tenant: "acme corp" is not a valid name: use 1 to 64 characters of a-z, A-Z, 0-9, '-' and '_'`},
		{"bad-ttl.yaml", `bad-ttl.yaml:7: holders[0].max_ttl: "24 hours" is not a duration such as 90m, 24h or 7d`},
		{"bad-version.yaml", `bad-version.yaml:1: version: 2 is not supported; this build reads version 1`},
		{"bad-zone.yaml", `bad-zone.yaml:8: holders[0].windows[0].zone: "Mars/Olympus_Mons" is not an IANA time zone such as Europe/Paris or UTC`},
		{"duplicate-holder.yaml", `duplicate-holder.yaml:13: holders[2]: duplicate holder acme/billing-api (first declared at line 3)`},
		{"duplicate-key.yaml", `duplicate-key.yaml:7: holders[0]: field "scopes" is set twice (first at line 5)`},
		{"duplicate-network.yaml", `duplicate-network.yaml:7: holders[0].networks[2]: duplicate "10.20.0.0/16"`},
		{"empty-audiences.yaml", `empty-audiences.yaml:6: holders[0].audiences: at least one audience is required`},
		{"empty.yaml", `empty.yaml: empty policy: want at least version and holders`},
		{"holders-mapping.yaml", `holders-mapping.yaml:3: holders: want a list of holders, got a mapping`},
		{"host-bits.yaml", `host-bits.yaml:7: holders[0].networks[0]: "10.20.1.0/16" has host bits set (did you mean 10.20.0.0/16?)`},
		{"missing-max-ttl.yaml", `missing-max-ttl.yaml:3: holders[0]: missing required field "max_ttl"`},
		{"missing-scopes.yaml", `missing-scopes.yaml:3: holders[0]: missing required field "scopes"`},
		{"missing-version.yaml", `missing-version.yaml:1: missing required field "version" (write version: 1)`},
		{"scalar-list.yaml", `scalar-list.yaml:5: holders[0].scopes: want a list, got "invoices:read" (write [invoices:read])`},
		{"syntax.yaml", `syntax.yaml:2: yaml: did not find expected '-' indicator`},
		{"ttl-number.yaml", `ttl-number.yaml:7: holders[0].max_ttl: want a duration such as 24h or 7d, got the number 3600`},
		{"two-documents.yaml", `two-documents.yaml:3: a second YAML document; a policy is a single document`},
		{"unknown-field.yaml", `unknown-field.yaml:7: holders[0]: unknown field "network" (did you mean "networks"?)`},
		{"unknown-top-level.yaml", `unknown-top-level.yaml:2: unknown field "holder" (did you mean "holders"?)`},
		{"wildcard-resource.yaml", `wildcard-resource.yaml:5: holders[0].scopes[0]: "*:read": the resource cannot be a wildcard; list each resource`},
		{"window-end-before-start.yaml", `window-end-before-start.yaml:8: holders[0].windows[0]: window "mon-fri 18:00-08:00 Europe/Paris": end 08:00 is not after start 18:00`},
	}
	entries, err := os.ReadDir(filepath.Join(fixtures, "bad"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(tests) {
		t.Errorf("%d bad fixtures on disk, %d in the table: every fixture needs its expected error", len(entries), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(fixtures, "bad", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(tt.file, b)
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestLoadErrorNamesPath(t *testing.T) {
	path := filepath.Join(fixtures, "bad", "bad-cidr.yaml")
	_, err := Load(path)
	var pe *Error
	if !errors.As(err, &pe) || pe.File != path || pe.Line != 9 || pe.Field != "holders[0].networks[1]" {
		t.Fatalf("Load error = %#v", err)
	}
	if _, err := Load(filepath.Join(fixtures, "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseRejectsHugeInput(t *testing.T) {
	_, err := Parse("huge.yaml", make([]byte, MaxFileSize+1))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

// req is a request within the ceiling of acme/billing-api in default.yaml.
func req() Request {
	return Request{
		Tenant: "acme", Holder: "billing-api",
		Scopes:      []string{"invoices:read"},
		Audience:    []string{"payments"},
		Networks:    []netip.Prefix{netip.MustParsePrefix("10.20.5.0/24")},
		Environment: "prod",
		Windows:     []token.Window{{Days: []string{"mon", "tue"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}},
		TTL:         time.Hour,
	}
}

func TestCheck(t *testing.T) {
	p := mustLoad(t, filepath.Join(fixtures, "default.yaml"))
	billing := mustCeiling(t, p, "acme", "billing-api")
	oncall := mustCeiling(t, p, "acme", "oncall")
	checkout := mustCeiling(t, p, "acme", "checkout-web")
	tps := mustCeiling(t, p, "initech", "tps-cron")
	const thumb = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

	tests := []struct {
		name   string
		c      *Ceiling
		mutate func(*Request)
		want   string // "" means allowed; otherwise a substring of the error
		is     error
	}{
		{"within", billing, func(*Request) {}, "", nil},
		{"scope", billing, func(r *Request) { r.Scopes = []string{"invoices:read", "invoices:delete"} },
			`scope "invoices:delete" is not in the ceiling of acme/billing-api`, ErrExceedsCeiling},
		{"scope wildcard beyond ceiling", billing, func(r *Request) { r.Scopes = []string{"invoices:*"} },
			`scope "invoices:*" is not in the ceiling of acme/billing-api`, ErrExceedsCeiling},
		{"scope covered by ceiling wildcard", checkout, func(r *Request) {
			*r = Narrow(checkout, Request{Tenant: "acme", Holder: "checkout-web", Scopes: []string{"cart:add", "cart:*"}, Environment: "staging"})
		}, "", nil},
		{"audience", billing, func(r *Request) { r.Audience = []string{"payments", "admin"} },
			`audience "admin" is not in the ceiling of acme/billing-api`, ErrExceedsCeiling},
		{"audience any under star", tps, func(r *Request) {
			*r = Request{Tenant: "initech", Holder: "tps-cron", Scopes: []string{"reports:read"}, Audience: []string{"anything"}, TTL: time.Hour}
		}, "", nil},
		{"network wider", billing, func(r *Request) { r.Networks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} },
			"network 10.0.0.0/8 is wider than any allowed network of acme/billing-api", ErrExceedsCeiling},
		{"network outside", billing, func(r *Request) { r.Networks = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")} },
			"network 192.168.1.0/24 is outside the allowed networks of acme/billing-api", ErrExceedsCeiling},
		{"network v6 inside", billing, func(r *Request) { r.Networks = []netip.Prefix{netip.MustParsePrefix("2001:db8:20:1::/64")} }, "", nil},
		{"network v6 wider", billing, func(r *Request) { r.Networks = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")} },
			"network 2001:db8::/32 is wider than any allowed network", ErrExceedsCeiling},
		{"network unrestricted", billing, func(r *Request) { r.Networks = nil },
			"a token usable from any network exceeds the ceiling of acme/billing-api", ErrExceedsCeiling},
		{"environment", billing, func(r *Request) { r.Environment = "staging" },
			`environment "staging" is not in the ceiling of acme/billing-api (allowed: prod)`, ErrExceedsCeiling},
		{"environment unrestricted", billing, func(r *Request) { r.Environment = "" },
			"a token valid in any environment exceeds the ceiling of acme/billing-api", ErrExceedsCeiling},
		{"window days", billing, func(r *Request) {
			r.Windows = []token.Window{{Days: []string{"sat"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}}
		}, `window "sat 08:00-18:00 Europe/Paris" is not within an allowed window of acme/billing-api`, ErrExceedsCeiling},
		{"window hours", billing, func(r *Request) {
			r.Windows = []token.Window{{Days: []string{"mon"}, Start: "06:00", End: "18:00", Zone: "Europe/Paris"}}
		}, `window "mon 06:00-18:00 Europe/Paris" is not within an allowed window`, ErrExceedsCeiling},
		{"window zone", billing, func(r *Request) {
			r.Windows = []token.Window{{Days: []string{"mon"}, Start: "08:00", End: "18:00", Zone: "UTC"}}
		}, `window "mon 08:00-18:00 UTC" is not within an allowed window`, ErrExceedsCeiling},
		{"window unrestricted", billing, func(r *Request) { r.Windows = nil },
			"a token usable at any time exceeds the ceiling of acme/billing-api", ErrExceedsCeiling},
		{"ttl", billing, func(r *Request) { r.TTL = 48 * time.Hour }, "ttl 48h exceeds max_ttl 24h of acme/billing-api", ErrExceedsCeiling},
		{"ttl equal max", billing, func(r *Request) { r.TTL = 24 * time.Hour }, "", nil},
		{"device required", oncall, func(r *Request) {
			*r = Narrow(oncall, Request{Tenant: "acme", Holder: "oncall", Scopes: []string{"invoices:refund"}})
		}, "device binding is required for acme/oncall", ErrExceedsCeiling},
		{"device given", oncall, func(r *Request) {
			*r = Narrow(oncall, Request{Tenant: "acme", Holder: "oncall", Scopes: []string{"invoices:refund"}, Device: thumb, BreakGlass: true})
		}, "", nil},
		{"break glass", billing, func(r *Request) { r.BreakGlass = true }, "break-glass tokens are not allowed for acme/billing-api", ErrExceedsCeiling},
		{"other holder", billing, func(r *Request) { r.Holder = "checkout-web" }, "cannot use the ceiling of acme/billing-api", ErrExceedsCeiling},
		{"no scopes", billing, func(r *Request) { r.Scopes = nil }, "scopes: at least one scope is required", ErrInvalidRequest},
		{"bad scope", billing, func(r *Request) { r.Scopes = []string{"invoices"} }, `scopes[0]: "invoices" is not a scope`, ErrInvalidRequest},
		{"no ttl", billing, func(r *Request) { r.TTL = 0 }, "ttl: a token must expire", ErrInvalidRequest},
		{"bad device", oncall, func(r *Request) {
			*r = Narrow(oncall, Request{Tenant: "acme", Holder: "oncall", Scopes: []string{"invoices:read"}, Device: "ABC"})
		}, `device: "ABC" is not a lowercase hex SHA-256 thumbprint`, ErrInvalidRequest},
		{"host bits", billing, func(r *Request) { r.Networks = []netip.Prefix{netip.MustParsePrefix("10.20.1.1/16")} }, "networks[0]", ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req()
			tt.mutate(&r)
			err := Check(tt.c, r)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want allowed", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check allowed, want %q", tt.want)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n got %s\nwant …%s…", err, tt.want)
			}
		})
	}
}

func TestNarrow(t *testing.T) {
	p := mustLoad(t, filepath.Join(fixtures, "default.yaml"))
	billing := mustCeiling(t, p, "acme", "billing-api")
	r := Narrow(billing, Request{Tenant: "acme", Holder: "billing-api", Scopes: []string{"customers:read"}})
	if !slices.Equal(r.Networks, billing.Networks) || !slices.Equal(r.Audience, billing.Audiences) ||
		r.Environment != "prod" || len(r.Windows) != 1 || r.TTL != 24*time.Hour {
		t.Fatalf("narrowed = %+v", r)
	}
	if err := Check(billing, r); err != nil {
		t.Fatalf("narrowed request exceeds its own ceiling: %v", err)
	}
	r.Networks[0] = netip.MustParsePrefix("10.20.1.0/24")
	if billing.Networks[0] != netip.MustParsePrefix("10.20.0.0/16") {
		t.Fatal("Narrow shares slices with the ceiling")
	}

	// explicit narrower values stay
	r = Narrow(billing, Request{Tenant: "acme", Holder: "billing-api", Scopes: []string{"customers:read"},
		Networks: []netip.Prefix{netip.MustParsePrefix("10.20.3.4/32")}, TTL: time.Minute})
	if len(r.Networks) != 1 || r.Networks[0].Bits() != 32 || r.TTL != time.Minute {
		t.Fatalf("explicit values overwritten: %+v", r)
	}

	// several environments: the caller must choose
	checkout := mustCeiling(t, p, "acme", "checkout-web")
	r = Narrow(checkout, Request{Tenant: "acme", Holder: "checkout-web", Scopes: []string{"cart:add"}})
	if r.Environment != "" {
		t.Fatalf("environment chosen among several: %q", r.Environment)
	}
	if err := Check(checkout, r); !errors.Is(err, ErrExceedsCeiling) || !strings.Contains(err.Error(), "allowed: prod, staging") {
		t.Fatalf("Check = %v", err)
	}
}

func TestParseWindow(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "mon-fri 08:00-18:00 Europe/Paris", want: "mon-fri 08:00-18:00 Europe/Paris"},
		{in: "fri-mon 22:00-24:00", want: "mon,fri-sun 22:00-24:00 UTC"},
		{in: "sat,sun,wed 10:00-12:00 UTC", want: "wed,sat-sun 10:00-12:00 UTC"},
		{in: "09:00-17:00 Asia/Tokyo", want: "mon-sun 09:00-17:00 Asia/Tokyo"},
		{in: "daily 00:00-24:00", want: "mon-sun 00:00-24:00 UTC"},
		{in: "", err: "empty window"},
		{in: "mon-fri", err: "missing hours"},
		{in: "mon-fry 08:00-18:00", err: `day "fry"`},
		{in: "mon 0800-1800", err: `start: "0800" is not HH:MM`},
		{in: "mon 08:00", err: `"08:00" is not HH:MM-HH:MM`},
		{in: "mon 08:00-18:00 Europe/Nowhere", err: `"Europe/Nowhere" is not an IANA time zone`},
		{in: "mon 08:00-18:00 UTC extra", err: `unexpected "extra"`},
		{in: "mon 18:00-08:00", err: "is not after start"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := ParseWindow(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want …%s…", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := FormatWindow(w); got != tt.want {
				t.Errorf("FormatWindow = %q, want %q", got, tt.want)
			}
			back, err := ParseWindow(FormatWindow(w))
			if err != nil || !w.Within(back) || !back.Within(w) {
				t.Errorf("round trip %q: %v, %v", FormatWindow(w), back, err)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"24h", 24 * time.Hour, "24h"},
		{"90m", 90 * time.Minute, "1h30m"},
		{"7d", 7 * 24 * time.Hour, "7d"},
		{"1d12h", 36 * time.Hour, "36h"},
		{"45s", 45 * time.Second, "45s"},
		{"48h", 48 * time.Hour, "48h"}, {"72h", 72 * time.Hour, "3d"},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if s := FormatDuration(got); s != tt.out {
			t.Errorf("FormatDuration(%v) = %q, want %q", got, s, tt.out)
		}
	}
	for _, bad := range []string{"", "d", "-1h", "1d-1h", "24 hours", "99999999d", "+3h", "1x"} {
		if d, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", bad, d)
		}
	}
}

func TestWithCeiling(t *testing.T) {
	p := mustLoad(t, filepath.Join(fixtures, "default.yaml"))
	admin := Ceiling{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"}, Audiences: []string{"cordon"}, MaxTTL: time.Hour}
	q := p.WithCeiling(admin)
	if _, err := q.Lookup("cordon", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Lookup("cordon", "admin"); err == nil {
		t.Fatal("WithCeiling modified the original policy")
	}
	if q.WithCeiling(Ceiling{Tenant: "cordon", Holder: "admin", MaxTTL: 2 * time.Hour}) != q {
		t.Fatal("WithCeiling replaced a declared ceiling")
	}
}
