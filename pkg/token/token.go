package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"strings"
	"time"
	"unique"
)

// Prefix starts every Cordon token.
const Prefix = "cordon_"

// MaxLen bounds a token string; longer input is malformed before decoding.
const MaxLen = 8192

const (
	formatVersion = 1
	checksumLen   = 6
	sigDomain     = "cordon-token-v1\x00"
)

// Sentinel errors. Verify and Parse wrap exactly one of them.
var (
	ErrMalformed    = errors.New("malformed token")
	ErrChecksum     = errors.New("token checksum mismatch")
	ErrUnknownKey   = errors.New("unknown signing key")
	ErrBadSignature = errors.New("bad token signature")
	ErrInvalidClaim = errors.New("invalid claim")
)

// Claims is what a token allows. Times are Unix seconds on the wire.
type Claims struct {
	// ID is the token id, a UUIDv7 string.
	ID string `json:"jti"`
	// Tenant and Holder name who the token was minted for.
	Tenant string `json:"ten"`
	Holder string `json:"sub"`
	// Scopes are "resource:action" strings; an action of "*" means any.
	Scopes []string `json:"scp"`
	// Audience lists the services (or hosts) the token may reach.
	Audience []string `json:"aud"`
	// Networks are the source CIDRs the token may come from; empty means any.
	Networks []netip.Prefix `json:"net,omitempty"`
	// Environment, if set, is the only environment the token is valid in.
	Environment string `json:"env,omitempty"`
	// Windows are the time-of-use windows; empty means any time.
	Windows []Window `json:"win,omitempty"`
	// Device is the lowercase hex SHA-256 thumbprint of the client
	// certificate (DER) the token is bound to; empty means unbound.
	Device string `json:"cnf,omitempty"`
	// IssuedAt, NotBefore and Expiry are Unix seconds. Expiry is mandatory.
	IssuedAt  int64 `json:"iat"`
	NotBefore int64 `json:"nbf"`
	Expiry    int64 `json:"exp"`
	// BreakGlass marks an emergency token: never auto-revoked, always paged.
	BreakGlass bool `json:"bg,omitempty"`
}

// Validate checks that the claims are complete and well formed.
func (c *Claims) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: jti is missing", ErrInvalidClaim)
	case c.Tenant == "":
		return fmt.Errorf("%w: tenant is missing", ErrInvalidClaim)
	case c.Holder == "":
		return fmt.Errorf("%w: holder is missing", ErrInvalidClaim)
	case len(c.Scopes) == 0:
		return fmt.Errorf("%w: at least one scope is required", ErrInvalidClaim)
	case len(c.Audience) == 0:
		return fmt.Errorf("%w: at least one audience is required", ErrInvalidClaim)
	case c.Expiry == 0:
		return fmt.Errorf("%w: expiry is mandatory", ErrInvalidClaim)
	case c.Expiry <= c.NotBefore:
		return fmt.Errorf("%w: expiry %d is not after not-before %d", ErrInvalidClaim, c.Expiry, c.NotBefore)
	}
	for _, s := range c.Scopes {
		if err := ValidateScope(s); err != nil {
			return fmt.Errorf("%w: scope %q: %v", ErrInvalidClaim, s, err)
		}
	}
	for _, n := range c.Networks {
		if !n.IsValid() {
			return fmt.Errorf("%w: invalid network", ErrInvalidClaim)
		}
	}
	for i := range c.Windows {
		if _, err := c.Windows[i].compile(); err != nil {
			return fmt.Errorf("%w: window %d: %v", ErrInvalidClaim, i, err)
		}
	}
	if c.Device != "" {
		if b, err := hex.DecodeString(c.Device); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%w: device must be a hex SHA-256 thumbprint", ErrInvalidClaim)
		}
	}
	return nil
}

// ValidateScope checks a "resource:action" scope.
func ValidateScope(s string) error {
	res, act, ok := strings.Cut(s, ":")
	if !ok || res == "" || act == "" || strings.Contains(act, ":") {
		return errors.New(`want "resource:action"`)
	}
	for _, r := range s {
		if r == ' ' || r < 0x21 || r > 0x7e {
			return errors.New("only printable ASCII without spaces")
		}
	}
	return nil
}

// ScopeCovers reports whether the granted scope covers the wanted one:
// equal, or granted is "resource:*" and wanted has that resource.
func ScopeCovers(granted, wanted string) bool {
	if granted == wanted {
		return true
	}
	if strings.HasSuffix(granted, ":*") {
		res := granted[:len(granted)-1]
		return strings.HasPrefix(wanted, res)
	}
	return false
}

// Thumbprint returns the device-binding thumbprint of a DER certificate.
func Thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// header is the token header. Only these fields are accepted.
type header struct {
	V   int    `json:"v"`
	Kid string `json:"kid"`
}

// Token is a verified token: its claims plus precompiled checks.
type Token struct {
	Claims
	// KeyID is the id of the key that signed it.
	KeyID   string
	windows []compiledWindow
}

// NotBeforeTime and ExpiryTime return the claims' times.
func (t *Token) NotBeforeTime() time.Time { return time.Unix(t.NotBefore, 0) }

// ExpiryTime returns when the token expires.
func (t *Token) ExpiryTime() time.Time { return time.Unix(t.Expiry, 0) }

// HasScope reports whether any granted scope covers want.
func (t *Token) HasScope(want string) bool {
	for _, g := range t.Scopes {
		if ScopeCovers(g, want) {
			return true
		}
	}
	return false
}

// HasAudience reports whether the token may reach service.
func (t *Token) HasAudience(service string) bool {
	for _, a := range t.Audience {
		if a == service || a == "*" {
			return true
		}
	}
	return false
}

// AllowsAddr reports whether ip is inside one of the token's networks.
func (t *Token) AllowsAddr(ip netip.Addr) bool {
	if len(t.Networks) == 0 {
		return true
	}
	ip = ip.Unmap()
	for _, n := range t.Networks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// AllowsTime reports whether at falls in one of the token's windows.
func (t *Token) AllowsTime(at time.Time) bool {
	if len(t.windows) == 0 {
		return true
	}
	for i := range t.windows {
		if t.windows[i].contains(at) {
			return true
		}
	}
	return false
}

// AllowsDevice reports, in constant time, whether the presented certificate
// thumbprint matches the token's device binding.
func (t *Token) AllowsDevice(thumbprint string) bool {
	if t.Device == "" {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(t.Device), []byte(thumbprint)) == 1
}

// b64 is the only encoding of a token's segments: unpadded base64url whose
// unused trailing bits are zero. Strict alone still skips CR and LF, so
// decodeSegment also checks the length: exactly one text per byte string.
var b64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes one token segment and refuses every spelling of its
// bytes but the one Mint writes.
func decodeSegment(s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if b64.EncodedLen(len(b)) != len(s) {
		return nil, errors.New("not canonical base64url (line breaks)")
	}
	return b, nil
}

// Signer mints tokens with one private key.
type Signer struct {
	KeyID string
	Key   ed25519.PrivateKey
}

// Mint validates the claims and returns the signed token string.
func (s Signer) Mint(c Claims) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	if s.KeyID == "" || len(s.Key) != ed25519.PrivateKeySize {
		return "", errors.New("mint: signer has no key")
	}
	h, err := json.Marshal(header{V: formatVersion, Kid: s.KeyID})
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	cb, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	var sb strings.Builder
	sb.WriteString(Prefix)
	sb.WriteString(b64.EncodeToString(h))
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(cb))
	signed := sb.String()[len(Prefix):]
	sig := ed25519.Sign(s.Key, signingInput(signed))
	sb.WriteByte('.')
	sb.WriteString(b64.EncodeToString(sig))
	sb.WriteString(checksum(sb.String()))
	return sb.String(), nil
}

func signingInput(headerDotClaims string) []byte {
	return append([]byte(sigDomain), headerDotClaims...)
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func checksum(s string) string {
	v := crc32.ChecksumIEEE([]byte(s))
	var out [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = base62[v%62]
		v /= 62
	}
	return string(out[:])
}

// Unverified is a token whose format and checksum are good but whose
// signature has not been checked. Never trust its claims.
type Unverified struct {
	KeyID     string
	Claims    Claims
	signed    string // header.claims
	signature []byte
}

// Parse checks the prefix, checksum and structure of a token and decodes
// its header and claims without verifying the signature.
func Parse(s string) (*Unverified, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLen)
	}
	if !strings.HasPrefix(s, Prefix) {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrMalformed, Prefix)
	}
	if len(s) < len(Prefix)+checksumLen+5 {
		return nil, fmt.Errorf("%w: too short", ErrMalformed)
	}
	body, sum := s[:len(s)-checksumLen], s[len(s)-checksumLen:]
	if subtle.ConstantTimeCompare([]byte(checksum(body)), []byte(sum)) != 1 {
		return nil, ErrChecksum
	}
	body = body[len(Prefix):]
	h, rest, ok := strings.Cut(body, ".")
	if !ok {
		return nil, fmt.Errorf("%w: want header.claims.signature", ErrMalformed)
	}
	c, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") {
		return nil, fmt.Errorf("%w: want header.claims.signature", ErrMalformed)
	}
	hb, err := decodeSegment(h)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	var hd header
	if err := canonicalJSON(hb, &hd); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if hd.V != formatVersion {
		return nil, fmt.Errorf("%w: header version %d, want %d", ErrMalformed, hd.V, formatVersion)
	}
	if hd.Kid == "" {
		return nil, fmt.Errorf("%w: header has no key id", ErrMalformed)
	}
	sigb, err := decodeSegment(sig)
	if err != nil || len(sigb) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is not %d bytes of canonical base64url", ErrMalformed, ed25519.SignatureSize)
	}
	cb, err := decodeSegment(c)
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	u := &Unverified{KeyID: hd.Kid, signed: body[:len(h)+1+len(c)], signature: sigb}
	if err := canonicalJSON(cb, &u.Claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if err := u.Claims.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return u, nil
}

// errNotCanonical says that JSON decoded but is not what Mint writes.
var errNotCanonical = errors.New("not in the canonical form the issuer writes (exact-case names, each once, in order, no white space, no explicit empty optional field)")

// canonicalJSON decodes b into v strictly and then requires b to be exactly
// what json.Marshal writes for v. encoding/json alone matches names
// case-insensitively, keeps the last of duplicate names and skips white
// space, so many texts decode to the same claims; this leaves one: a token
// verifies only in the form the issuer minted it.
func canonicalJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	again, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("re-encode: %w", err)
	}
	if !bytes.Equal(again, b) {
		return errNotCanonical
	}
	return nil
}

// Verify checks the signature against key and returns the verified token.
func (u *Unverified) Verify(key ed25519.PublicKey) (*Token, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, u.KeyID)
	}
	if !ed25519.Verify(key, signingInput(u.signed), u.signature) {
		return nil, ErrBadSignature
	}
	t := &Token{Claims: u.Claims, KeyID: u.KeyID}
	t.intern()
	for i := range t.Windows {
		cw, err := t.Windows[i].compile()
		if err != nil { // unreachable: Parse validated the windows
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		t.windows = append(t.windows, cw)
	}
	return t, nil
}

// intern makes the token share the storage of the strings many tokens
// repeat (tenant, holder, key id, environment, scopes, audience) with
// every other token that has them (package unique). A service caching
// thousands of verified tokens then holds each such string once, and
// the checks of each request (scopes, the usage event's tenant and
// holder) read them from memory that stays in the CPU's caches rather
// than from a copy of each token's. Only verified tokens are interned,
// so an attacker cannot grow the set.
func (t *Token) intern() {
	for _, s := range []*string{&t.Tenant, &t.Holder, &t.KeyID, &t.Environment} {
		*s = unique.Make(*s).Value()
	}
	for _, l := range [][]string{t.Scopes, t.Audience} {
		for i := range l {
			l[i] = unique.Make(l[i]).Value()
		}
	}
}

// Seal appends the checksum to a token body (header.claims.signature) and
// adds the prefix. It exists for tests and tools that build tokens by hand;
// a sealed token still needs a valid signature to verify.
func Seal(body string) string {
	s := Prefix + body
	return s + checksum(s)
}
