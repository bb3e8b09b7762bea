package token_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/token"
)

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// segments splits a token into its header, claims and signature segments.
func segments(t testing.TB, tok string) []string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(tok[:len(tok)-6], token.Prefix), ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	return parts
}

// TestAlternativeSignatureEncodingsRefused: a 64-byte signature is 86
// base64url characters, 516 bits for 512, so the last character has four
// unused bits and 15 other spellings that decode (leniently) to the same
// signature. Each must be refused, as must a signature with line breaks,
// which the base64 decoder skips.
func TestAlternativeSignatureEncodingsRefused(t *testing.T) {
	s := newSigner(t)
	kr := token.NewKeyring()
	if err := kr.Add(s.KeyID, s.Public()); err != nil {
		t.Fatal(err)
	}
	good, err := s.Mint(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Verify(good); err != nil {
		t.Fatalf("the minted token does not verify: %v", err)
	}
	p := segments(t, good)
	sig := p[2]
	wantSig, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(sig) != 86 {
		t.Fatalf("signature segment of %d characters: %v", len(sig), err)
	}
	last := strings.IndexByte(b64url, sig[len(sig)-1])
	if last&0x0f != 0 {
		t.Fatalf("minted signature has non-zero trailing bits")
	}
	var variants []string
	for k := 1; k < 16; k++ {
		variants = append(variants, sig[:len(sig)-1]+string(b64url[last|k]))
	}
	if len(variants) != 15 {
		t.Fatalf("%d variants", len(variants))
	}
	for i, v := range variants {
		// The premise: a lenient decoder reads the same signature.
		if b, err := base64.RawURLEncoding.DecodeString(v); err != nil || !bytes.Equal(b, wantSig) {
			t.Fatalf("variant %d is not an alternative encoding: %v", i, err)
		}
		tok := token.Seal(p[0] + "." + p[1] + "." + v)
		if _, err := kr.Verify(tok); !errors.Is(err, token.ErrMalformed) {
			t.Errorf("alternative signature encoding %d: got %v, want ErrMalformed", i+1, err)
		}
		if _, err := token.Parse(tok); err == nil {
			t.Errorf("alternative signature encoding %d parses", i+1)
		}
	}
	for name, v := range map[string]string{
		"line feed in signature":       sig[:40] + "\n" + sig[40:],
		"carriage return in signature": sig[:40] + "\r\n" + sig[40:],
		"padding on signature":         sig + "==",
		"standard alphabet":            base64.RawStdEncoding.EncodeToString(wantSig),
	} {
		tok := token.Seal(p[0] + "." + p[1] + "." + v)
		if v == sig {
			continue // the standard alphabet spelled it identically
		}
		if _, err := kr.Verify(tok); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestNonCanonicalClaimsRefused signs, with the real key, header and claims
// the issuer never writes: case variants of claim names, duplicate names,
// white space, re-ordered names, explicit empty optional fields, needless
// escapes. A valid signature does not make them acceptable.
func TestNonCanonicalClaimsRefused(t *testing.T) {
	s := newSigner(t)
	kr := token.NewKeyring()
	if err := kr.Add(s.KeyID, s.Public()); err != nil {
		t.Fatal(err)
	}
	c := testClaims()
	c.Networks, c.Windows, c.Device, c.Environment = nil, nil, "", ""
	claims, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte(`{"v":1,"kid":"` + s.KeyID + `"}`)
	canon := string(claims)
	if !strings.HasPrefix(canon, `{"jti":"`+c.ID+`","ten":"acme","sub":"billing-api","scp":[`) {
		t.Fatalf("unexpected canonical claims %s", canon)
	}
	// The control: the canonical form, signed the same way, verifies.
	if _, err := kr.Verify(token.SignRaw(s, hdr, claims)); err != nil {
		t.Fatalf("canonical claims signed by hand: %v", err)
	}
	rep := func(old, new string) string {
		if !strings.Contains(canon, old) {
			t.Fatalf("canonical claims lack %q", old)
		}
		return strings.Replace(canon, old, new, 1)
	}
	claimCases := []struct{ name, json string }{
		{"JTI upper case", rep(`"jti":`, `"JTI":`)},
		{"Scp title case", rep(`"scp":`, `"Scp":`)},
		{"SUB upper case", rep(`"sub":`, `"SUB":`)},
		{"duplicate scp widening scope", rep(`"aud":`, `"scp":["admin:*"],"aud":`)},
		{"duplicate jti", rep(`"ten":`, `"jti":"019abcde-0000-7000-8000-00000000beef","ten":`)},
		{"space after colon", rep(`"ten":"acme"`, `"ten": "acme"`)},
		{"leading space", " " + canon},
		{"trailing newline", canon + "\n"},
		{"re-ordered names", rep(`"ten":"acme","sub":"billing-api"`, `"sub":"billing-api","ten":"acme"`)},
		{"explicit empty networks", rep(`"iat":`, `"net":[],"iat":`)},
		{"explicit false break-glass", strings.TrimSuffix(canon, "}") + `,"bg":false}`},
		{"explicit empty environment", rep(`"iat":`, `"env":"","iat":`)},
		{"escaped letter", rep(`"ten":"acme"`, `"ten":"\u0061cme"`)},
		{"escaped slash", rep(`"sub":"billing-api"`, `"sub":"billing\/api"`)},
		{"exponent number", rep(`"exp":`+jsonInt(c.Expiry), `"exp":`+jsonInt(c.Expiry)+`.0`)},
	}
	for _, tc := range claimCases {
		t.Run("claims "+tc.name, func(t *testing.T) {
			tok := token.SignRaw(s, hdr, []byte(tc.json))
			if _, err := kr.Verify(tok); !errors.Is(err, token.ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed for %s", err, tc.json)
			}
		})
	}
	headerCases := []struct{ name, json string }{
		{"KID upper case", `{"v":1,"KID":"` + s.KeyID + `"}`},
		{"V upper case", `{"V":1,"kid":"` + s.KeyID + `"}`},
		{"re-ordered", `{"kid":"` + s.KeyID + `","v":1}`},
		{"duplicate kid", `{"v":1,"kid":"other","kid":"` + s.KeyID + `"}`},
		{"white space", `{"v": 1,"kid":"` + s.KeyID + `"}`},
		{"trailing newline", `{"v":1,"kid":"` + s.KeyID + `"}` + "\n"},
	}
	for _, tc := range headerCases {
		t.Run("header "+tc.name, func(t *testing.T) {
			tok := token.SignRaw(s, []byte(tc.json), claims)
			if _, err := kr.Verify(tok); !errors.Is(err, token.ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed for %s", err, tc.json)
			}
		})
	}
}

func jsonInt(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestMintedTokensReencodeToThemselves: every minted shape and every
// committed fixture is in canonical form.
func TestMintedTokensReencodeToThemselves(t *testing.T) {
	s := newSigner(t)
	full := testClaims()
	full.BreakGlass = true
	minimal := testClaims()
	minimal.Networks, minimal.Windows, minimal.Device, minimal.Environment = nil, nil, "", ""
	odd := testClaims()
	odd.Holder = "<billing & co>" // escaped by json.Marshal as the issuer writes it
	var toks []string
	for _, c := range []token.Claims{full, minimal, odd} {
		tok, err := s.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	toks = append(toks, fixtureTokens(t, "valid-minimal.txt", "valid-full.txt")...)
	for i, tok := range toks {
		u, err := token.Parse(tok)
		if err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		again, err := token.Reencode(u)
		if err != nil {
			t.Fatal(err)
		}
		if again != tok {
			t.Fatalf("token %d re-encodes differently", i)
		}
	}
}
