package token_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cordonhq/cordon/pkg/token"
)

var now = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func testClaims() token.Claims {
	return token.Claims{
		ID:          "019abcde-0000-7000-8000-000000000001",
		Tenant:      "acme",
		Holder:      "billing-api",
		Scopes:      []string{"invoices:read", "customers:*"},
		Audience:    []string{"payments"},
		Networks:    []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("2001:db8::/32")},
		Environment: "prod",
		Windows:     []token.Window{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}},
		Device:      token.Thumbprint([]byte("cert")),
		IssuedAt:    now.Unix(),
		NotBefore:   now.Unix(),
		Expiry:      now.Add(time.Hour).Unix(),
	}
}

func newSigner(t testing.TB) token.Signer {
	t.Helper()
	s, err := token.GenerateSigner(now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMintVerifyRoundTrip(t *testing.T) {
	s := newSigner(t)
	tok, err := s.Mint(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, token.Prefix) {
		t.Fatalf("token %q lacks prefix", tok[:10])
	}
	kr := token.NewKeyring()
	if err := kr.Add(s.KeyID, s.Public()); err != nil {
		t.Fatal(err)
	}
	v, err := kr.Verify(tok)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if v.ID != testClaims().ID || v.KeyID != s.KeyID || v.Holder != "billing-api" {
		t.Fatalf("claims not round-tripped: %+v", v.Claims)
	}
	checks := []struct {
		name string
		got  bool
		want bool
	}{
		{"scope exact", v.HasScope("invoices:read"), true},
		{"scope wildcard", v.HasScope("customers:write"), true},
		{"scope missing", v.HasScope("invoices:write"), false},
		{"scope prefix trap", v.HasScope("customersx:read"), false},
		{"audience", v.HasAudience("payments"), true},
		{"wrong audience", v.HasAudience("ledger"), false},
		{"v4 inside", v.AllowsAddr(netip.MustParseAddr("10.20.3.4")), true},
		{"v4 mapped inside", v.AllowsAddr(netip.MustParseAddr("::ffff:10.20.3.4")), true},
		{"v4 outside", v.AllowsAddr(netip.MustParseAddr("10.21.0.1")), false},
		{"v6 inside", v.AllowsAddr(netip.MustParseAddr("2001:db8::1")), true},
		{"v6 outside", v.AllowsAddr(netip.MustParseAddr("2001:db9::1")), false},
		// 10:00 UTC on a Friday is 11:00 in Paris.
		{"window inside", v.AllowsTime(now), true},
		{"window night", v.AllowsTime(now.Add(12 * time.Hour)), false},
		{"window saturday", v.AllowsTime(now.Add(24 * time.Hour)), false},
		{"device match", v.AllowsDevice(token.Thumbprint([]byte("cert"))), true},
		{"device mismatch", v.AllowsDevice(token.Thumbprint([]byte("other"))), false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestVerifySharesRepeatedStrings: two verified tokens of one tenant,
// holder, key, environment, scopes and audience hold those strings once
// (a cache of many tokens reads them from one place); their own strings
// (the id) stay their own, and every value is the one minted.
func TestVerifySharesRepeatedStrings(t *testing.T) {
	s := newSigner(t)
	kr := token.NewKeyring()
	if err := kr.Add(s.KeyID, s.Public()); err != nil {
		t.Fatal(err)
	}
	var vs []*token.Token
	for _, id := range []string{"019abcde-0000-7000-8000-000000000001", "019abcde-0000-7000-8000-000000000002"} {
		c := testClaims()
		c.ID = id
		// Built apart, as two decoded tokens would be.
		c.Tenant, c.Holder = strings.Clone(c.Tenant), strings.Clone(c.Holder)
		tok, err := s.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		v, err := kr.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if v.ID != id || v.Tenant != "acme" || v.Holder != "billing-api" || v.KeyID != s.KeyID || v.Environment != "prod" ||
			!slices.Equal(v.Scopes, testClaims().Scopes) || !slices.Equal(v.Audience, testClaims().Audience) {
			t.Fatalf("claims changed: %+v", v.Claims)
		}
		vs = append(vs, v)
	}
	a, b := vs[0], vs[1]
	same := func(name, x, y string) {
		t.Helper()
		if unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s %q is held twice", name, x)
		}
	}
	same("tenant", a.Tenant, b.Tenant)
	same("holder", a.Holder, b.Holder)
	same("key id", a.KeyID, b.KeyID)
	same("environment", a.Environment, b.Environment)
	for i := range a.Scopes {
		same("scope", a.Scopes[i], b.Scopes[i])
	}
	same("audience", a.Audience[0], b.Audience[0])
	if unsafe.StringData(a.ID) == unsafe.StringData(b.ID) {
		t.Error("two tokens share one id string")
	}
}

func TestMintRefusesBadClaims(t *testing.T) {
	s := newSigner(t)
	cases := map[string]func(*token.Claims){
		"no expiry":         func(c *token.Claims) { c.Expiry = 0 },
		"expiry before nbf": func(c *token.Claims) { c.Expiry = c.NotBefore - 1 },
		"no scopes":         func(c *token.Claims) { c.Scopes = nil },
		"bad scope":         func(c *token.Claims) { c.Scopes = []string{"invoices"} },
		"no audience":       func(c *token.Claims) { c.Audience = nil },
		"no id":             func(c *token.Claims) { c.ID = "" },
		"bad zone":          func(c *token.Claims) { c.Windows[0].Zone = "Mars/Olympus" },
		"bad day":           func(c *token.Claims) { c.Windows[0].Days = []string{"someday"} },
		"bad hours":         func(c *token.Claims) { c.Windows[0].End = "07:00" },
		"bad device":        func(c *token.Claims) { c.Device = "abc" },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			c := testClaims()
			mut(&c)
			if _, err := s.Mint(c); !errors.Is(err, token.ErrInvalidClaim) {
				t.Fatalf("got %v, want ErrInvalidClaim", err)
			}
		})
	}
}

func TestTamperAnyByteIsRejected(t *testing.T) {
	s := newSigner(t)
	kr := token.NewKeyring()
	_ = kr.Add(s.KeyID, s.Public())
	tok, err := s.Mint(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(tok); i++ {
		for _, delta := range []byte{1, 0x20} {
			b := []byte(tok)
			b[i] ^= delta
			if _, err := kr.Verify(string(b)); err == nil {
				t.Fatalf("byte %d ^ %#x accepted", i, delta)
			}
		}
	}
}

func TestSignatureAndKeyChecks(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t)
	kr := token.NewKeyring()
	_ = kr.Add(s.KeyID, s.Public())
	good, _ := s.Mint(testClaims())

	// A token signed by a key the ring does not hold.
	unknown, _ := other.Mint(testClaims())
	if _, err := kr.Verify(unknown); !errors.Is(err, token.ErrUnknownKey) {
		t.Errorf("unknown key: got %v", err)
	}
	// Another key claiming our key id: signature fails.
	imposter := token.Signer{KeyID: s.KeyID, Key: other.Key}
	forged, _ := imposter.Mint(testClaims())
	if _, err := kr.Verify(forged); !errors.Is(err, token.ErrBadSignature) {
		t.Errorf("forged: got %v", err)
	}
	// Retired key: its tokens are unknown.
	kr.Remove(s.KeyID)
	if _, err := kr.Verify(good); !errors.Is(err, token.ErrUnknownKey) {
		t.Errorf("retired key: got %v", err)
	}
	// Two keys at once (rotation): both verify.
	_ = kr.Add(s.KeyID, s.Public())
	_ = kr.Add(other.KeyID, other.Public())
	for _, tk := range []string{good, unknown} {
		if _, err := kr.Verify(tk); err != nil {
			t.Errorf("rotation: %v", err)
		}
	}
}

func TestHeaderGamesAreRejected(t *testing.T) {
	s := newSigner(t)
	kr := token.NewKeyring()
	_ = kr.Add(s.KeyID, s.Public())
	good, _ := s.Mint(testClaims())
	body := strings.TrimPrefix(good[:len(good)-6], token.Prefix)
	parts := strings.Split(body, ".")
	enc := base64.RawURLEncoding.EncodeToString
	headers := map[string]string{
		"alg none":        `{"v":1,"kid":"` + s.KeyID + `","alg":"none"}`,
		"alg hs256":       `{"v":1,"kid":"` + s.KeyID + `","alg":"HS256"}`,
		"embedded jwk":    `{"v":1,"kid":"` + s.KeyID + `","jwk":{"kty":"OKP"}}`,
		"version 2":       `{"v":2,"kid":"` + s.KeyID + `"}`,
		"no kid":          `{"v":1}`,
		"not json":        `v=1`,
		"trailing object": `{"v":1,"kid":"` + s.KeyID + `"}{}`,
	}
	for name, h := range headers {
		t.Run(name, func(t *testing.T) {
			tok := token.Seal(enc([]byte(h)) + "." + parts[1] + "." + parts[2])
			if _, err := kr.Verify(tok); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("swapped claims keep signature", func(t *testing.T) {
		c := testClaims()
		c.Scopes = []string{"admin:*"}
		other, _ := s.Mint(c)
		op := strings.Split(strings.TrimPrefix(other[:len(other)-6], token.Prefix), ".")
		tok := token.Seal(parts[0] + "." + op[1] + "." + parts[2])
		if _, err := kr.Verify(tok); !errors.Is(err, token.ErrBadSignature) {
			t.Fatalf("got %v, want ErrBadSignature", err)
		}
	})
	t.Run("empty signature", func(t *testing.T) {
		tok := token.Seal(parts[0] + "." + parts[1] + ".")
		if _, err := kr.Verify(tok); !errors.Is(err, token.ErrMalformed) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong size public key", func(t *testing.T) {
		if err := kr.Add("short", ed25519.PublicKey{1, 2, 3}); err == nil {
			t.Fatal("accepted short key")
		}
	})
}

func TestTypoIsCaughtByChecksum(t *testing.T) {
	s := newSigner(t)
	good, _ := s.Mint(testClaims())
	b := []byte(good)
	i := len(token.Prefix) + 20
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	if _, err := token.Parse(string(b)); !errors.Is(err, token.ErrChecksum) {
		t.Fatalf("got %v, want ErrChecksum", err)
	}
	if _, err := token.Parse(good[:len(good)-1]); err == nil {
		t.Fatal("truncated token accepted")
	}
	if _, err := token.Parse("ghp_" + good); !errors.Is(err, token.ErrMalformed) {
		t.Fatalf("wrong prefix: %v", err)
	}
}

func TestWindowWithin(t *testing.T) {
	outer := token.Window{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "07:00", End: "21:00", Zone: "Europe/Paris"}
	cases := []struct {
		w    token.Window
		want bool
	}{
		{token.Window{Days: []string{"mon"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}, true},
		{token.Window{Days: []string{"sat"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}, false},
		{token.Window{Days: []string{"mon"}, Start: "06:00", End: "18:00", Zone: "Europe/Paris"}, false},
		{token.Window{Days: []string{"mon"}, Start: "08:00", End: "18:00", Zone: "UTC"}, false},
		{token.Window{Start: "08:00", End: "18:00", Zone: "Europe/Paris"}, false}, // every day
	}
	for i, c := range cases {
		if got := c.w.Within(outer); got != c.want {
			t.Errorf("case %d: got %v want %v", i, got, c.want)
		}
	}
}

// FuzzParse feeds arbitrary strings to the parser: it must never panic,
// whatever it accepts must carry valid claims, and it must re-encode to the
// very same string (one encoding per token). Seeds: the committed fixtures
// and the corpus in testdata/fuzz/FuzzParse (non-canonical spellings).
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../testdata/tokens/*.txt")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(strings.TrimSpace(string(b)))
		}
	}
	f.Add("cordon_")
	f.Add("cordon_e30.e30.AAAA000000")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := token.Parse(s)
		if err != nil {
			return
		}
		if err := u.Claims.Validate(); err != nil {
			t.Fatalf("parse accepted invalid claims: %v", err)
		}
		if u.KeyID == "" {
			t.Fatal("parse accepted a token without key id")
		}
		// One string per token: whatever parses is the canonical encoding
		// of what it decodes to.
		again, err := token.Reencode(u)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if again != s {
			t.Fatalf("parse accepted a non-canonical encoding:\n got %q\nwant %q", s, again)
		}
	})
}

// TestFixtures verifies the committed fixtures against the fixture key, so
// a change to the wire format that breaks issued tokens fails here.
func TestFixtures(t *testing.T) {
	hexKey, err := os.ReadFile("../../testdata/tokens/fixture-key.hex")
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	if _, err := fmt.Sscanf(strings.TrimSpace(string(hexKey)), "%x", &key); err != nil {
		t.Fatal(err)
	}
	kr := token.NewKeyring()
	if err := kr.Add("ktest-fixture", key); err != nil {
		t.Fatal(err)
	}
	cases := map[string]error{"valid-minimal.txt": nil, "valid-full.txt": nil, "bad-checksum.txt": token.ErrChecksum}
	for name, want := range cases {
		b, err := os.ReadFile(filepath.Join("../../testdata/tokens", name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = kr.Verify(strings.TrimSpace(string(b)))
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("%s: got %v, want %v", name, err, want)
		}
	}
}

// fixtureTokens reads committed token fixtures by name.
func fixtureTokens(t testing.TB, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("../../testdata/tokens", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSpace(string(b)))
	}
	return out
}
