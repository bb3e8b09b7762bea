package ssf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Event types.
const (
	// EventCredentialChange: a credential was created, revoked, updated…
	// (CAEP). Cordon sends it with change_type revoke.
	EventCredentialChange = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
	// EventSessionRevoked: a session was revoked (CAEP).
	EventSessionRevoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	// EventAccountDisabled: an account was disabled (RISC).
	EventAccountDisabled = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
	// EventAccountPurged: an account was deleted (RISC).
	EventAccountPurged = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
	// EventCredentialCompromise: a credential was compromised (RISC).
	EventCredentialCompromise = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"
)

// MediaType is the content type of a pushed SET; Type its "typ" header.
const (
	MediaType = "application/secevent+jwt"
	Type      = "secevent+jwt"
)

// Subject identifies what an event is about (RFC 9493 subject
// identifiers). Cordon reads the formats opaque, email, iss_sub and
// complex (user, tenant).
type Subject struct {
	Format string `json:"format"`
	ID     string `json:"id,omitempty"`
	Email  string `json:"email,omitempty"`
	Iss    string `json:"iss,omitempty"`
	Sub    string `json:"sub,omitempty"`
	// Complex subjects.
	User   *Subject `json:"user,omitempty"`
	Tenant *Subject `json:"tenant,omitempty"`
	Token  *Subject `json:"token,omitempty"`
}

// Name is the subject's identifying string: the opaque id, the email, or
// the iss_sub's sub; for a complex subject its user's.
func (s Subject) Name() string {
	switch s.Format {
	case "opaque":
		return s.ID
	case "email":
		return s.Email
	case "iss_sub":
		return s.Sub
	case "complex":
		if s.User != nil {
			return s.User.Name()
		}
	}
	return ""
}

// SET is a Security Event Token's claims.
type SET struct {
	Issuer   string    `json:"iss"`
	ID       string    `json:"jti"`
	IssuedAt int64     `json:"iat"`
	Audience Audience  `json:"aud,omitempty"`
	TxnID    string    `json:"txn,omitempty"`
	Subject  *Subject  `json:"sub_id,omitempty"`
	Events   EventsMap `json:"events"`
}

// EventsMap maps an event type to its payload.
type EventsMap map[string]map[string]any

// Audience is "aud": one string or an array of them.
type Audience []string

// UnmarshalJSON accepts a string or an array.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud: want a string or an array of strings")
	}
	*a = many
	return nil
}

// Errors of verification; a refused SET changes nothing.
var (
	// ErrInvalid: not a SET (malformed JWS, claims or events).
	ErrInvalid = errors.New("ssf: invalid security event token")
	// ErrKey: no key verifies it (unknown kid, wrong key).
	ErrKey = errors.New("ssf: security event token not verified")
	// ErrClaims: issuer, audience or age not accepted.
	ErrClaims = errors.New("ssf: security event token not accepted")
)

// Signer signs SETs with an ES256 key.
type Signer struct {
	key *ecdsa.PrivateKey
	kid string
}

// NewSigner returns a signer of key; its key id is the key's JWK
// thumbprint.
func NewSigner(key *ecdsa.PrivateKey) (*Signer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("ssf: the signing key must be ECDSA P-256")
	}
	jwk := jose.JSONWebKey{Key: &key.PublicKey}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("ssf: key thumbprint: %w", err)
	}
	return &Signer{key: key, kid: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// LoadOrCreateSigner reads a PEM "EC PRIVATE KEY" (P-256) from path, or
// generates one there (mode 0600) when the file does not exist.
func LoadOrCreateSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("ssf: key directory: %w", err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("ssf: write the signing key: %w", err)
		}
		return NewSigner(key)
	}
	if err != nil {
		return nil, fmt.Errorf("ssf: read the signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("ssf: %s holds no PEM EC PRIVATE KEY", path)
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ssf: %s: %w", path, err)
	}
	return NewSigner(key)
}

// KeyID is the signing key's id ("kid").
func (s *Signer) KeyID() string { return s.kid }

// JWKS is the public key set receivers verify with.
func (s *Signer) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &s.key.PublicKey, KeyID: s.kid, Algorithm: string(jose.ES256), Use: "sig"}}}
}

// Sign serialises set as a compact JWS with typ secevent+jwt.
func (s *Signer) Sign(set SET) (string, error) {
	if err := set.validate(); err != nil {
		return "", err
	}
	payload, err := json.Marshal(set)
	if err != nil {
		return "", fmt.Errorf("ssf: encode the SET: %w", err)
	}
	opts := (&jose.SignerOptions{}).WithType(Type).WithHeader("kid", s.kid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key}, opts)
	if err != nil {
		return "", fmt.Errorf("ssf: signer: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("ssf: sign: %w", err)
	}
	return obj.CompactSerialize()
}

func (set SET) validate() error {
	switch {
	case set.Issuer == "" || set.ID == "" || set.IssuedAt == 0:
		return fmt.Errorf("%w: iss, jti and iat are required", ErrInvalid)
	case len(set.Events) == 0:
		return fmt.Errorf("%w: no events", ErrInvalid)
	}
	return nil
}

// VerifyOptions say which SETs Verify accepts.
type VerifyOptions struct {
	// Keys verify the signature (by kid, or every key when the SET names
	// none).
	Keys jose.JSONWebKeySet
	// Issuer, when set, must equal iss.
	Issuer string
	// Audience, when set, must be in aud.
	Audience string
	// MaxAge, when set, refuses a SET issued longer ago (and one issued
	// more than a minute in the future). Now is the clock (default
	// time.Now).
	MaxAge time.Duration
	Now    func() time.Time
}

// Verify checks a compact SET's signature (ES256 only: "none" and
// symmetric algorithms are refused), its typ and its claims, and returns
// them.
func Verify(token string, o VerifyOptions) (SET, error) {
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return SET{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(obj.Signatures) != 1 {
		return SET{}, fmt.Errorf("%w: want one signature", ErrInvalid)
	}
	h := obj.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != Type && typ != MediaType {
		return SET{}, fmt.Errorf("%w: typ %q, want %q", ErrInvalid, typ, Type)
	}
	keys := o.Keys.Keys
	if h.KeyID != "" {
		keys = o.Keys.Key(h.KeyID)
	}
	var payload []byte
	for _, k := range keys {
		if payload, err = obj.Verify(k.Key); err == nil {
			break
		}
	}
	if payload == nil {
		return SET{}, fmt.Errorf("%w: no key (kid %q) verifies the signature", ErrKey, h.KeyID)
	}
	var set SET
	if err := json.Unmarshal(payload, &set); err != nil {
		return SET{}, fmt.Errorf("%w: claims: %v", ErrInvalid, err)
	}
	if err := set.validate(); err != nil {
		return SET{}, err
	}
	if o.Issuer != "" && set.Issuer != o.Issuer {
		return SET{}, fmt.Errorf("%w: issuer %q, want %q", ErrClaims, set.Issuer, o.Issuer)
	}
	if o.Audience != "" && !slices.Contains(set.Audience, o.Audience) {
		return SET{}, fmt.Errorf("%w: audience %v does not name %q", ErrClaims, []string(set.Audience), o.Audience)
	}
	if o.MaxAge > 0 {
		now := time.Now()
		if o.Now != nil {
			now = o.Now()
		}
		iat := time.Unix(set.IssuedAt, 0)
		if now.Sub(iat) > o.MaxAge || iat.Sub(now) > time.Minute {
			return SET{}, fmt.Errorf("%w: issued at %s, outside %v of now", ErrClaims, iat.UTC().Format(time.RFC3339), o.MaxAge)
		}
	}
	return set, nil
}

// ParseJWKS decodes a JWKS document.
func ParseJWKS(b []byte) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return set, fmt.Errorf("ssf: key set: %w", err)
	}
	if len(set.Keys) == 0 {
		return set, errors.New("ssf: key set: no keys")
	}
	return set, nil
}
