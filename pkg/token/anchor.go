package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cordonhq/cordon/pkg/events"
)

// A trust anchor endorses signing keys. The issuer holds its private half
// and signs every key it publishes to the keys bucket with it; enforcers
// and the control plane are configured with its public half (an
// AnchorKey) and accept a key from the bucket only with a valid
// endorsement. A write to the bucket alone therefore cannot add a key.

// AnchorPrefix starts the text form of an anchor's public key.
const AnchorPrefix = "cordonanchor_"

const (
	endorseDomain = "cordon-key-endorsement-v1\x00"
	anchorPEMType = "PRIVATE KEY"
	anchorPEMTag  = "Cordon-Anchor"
)

// Errors of endorsement checks. VerifyKeyRecord wraps one of them.
var (
	// ErrNoAnchor: no trust anchor is configured, so no key can be trusted.
	ErrNoAnchor = errors.New("no trust anchor configured")
	// ErrNotEndorsed: a key record carries no endorsement, or one by an
	// anchor that is not trusted, or one that does not verify.
	ErrNotEndorsed = errors.New("key is not endorsed by a trusted anchor")
)

// Anchor is the private half of a trust anchor.
type Anchor struct {
	Key ed25519.PrivateKey
}

// GenerateAnchor creates a new trust anchor.
func GenerateAnchor() (Anchor, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Anchor{}, fmt.Errorf("generate trust anchor: %w", err)
	}
	return Anchor{Key: priv}, nil
}

// Public returns the anchor's public half.
func (a Anchor) Public() AnchorKey {
	return AnchorKey(append(ed25519.PublicKey(nil), a.Key.Public().(ed25519.PublicKey)...))
}

// Endorse returns the endorsement of signing key pub under kid.
func (a Anchor) Endorse(kid string, pub ed25519.PublicKey) []byte {
	return ed25519.Sign(a.Key, endorsementInput(kid, pub))
}

// EndorsedRecord returns the keys bucket record for a signing key,
// endorsed by a.
func (a Anchor) EndorsedRecord(rec events.KeyRecord) events.KeyRecord {
	rec.Anchor = a.Public().ID()
	rec.Endorsement = a.Endorse(rec.KeyID, rec.PublicKey)
	return rec
}

func endorsementInput(kid string, pub ed25519.PublicKey) []byte {
	b := make([]byte, 0, len(endorseDomain)+len(kid)+1+len(pub))
	b = append(b, endorseDomain...)
	b = append(b, kid...)
	b = append(b, 0)
	return append(b, pub...)
}

// AnchorKey is the public half of a trust anchor.
type AnchorKey ed25519.PublicKey

// ID names the anchor in key records: the first 16 hex digits of the
// SHA-256 of its public key.
func (k AnchorKey) ID() string {
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:8])
}

// String is the text form: AnchorPrefix and the base64url public key.
func (k AnchorKey) String() string { return AnchorPrefix + b64.EncodeToString(k) }

// ParseAnchorKey reads the text form written by AnchorKey.String.
func ParseAnchorKey(s string) (AnchorKey, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, AnchorPrefix)
	if !ok {
		return nil, fmt.Errorf("trust anchor: want %q followed by the base64url public key", AnchorPrefix)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("trust anchor: want %d bytes of base64url Ed25519 public key", ed25519.PublicKeySize)
	}
	return AnchorKey(b), nil
}

// LoadAnchorKey reads a trust anchor's public key from v: the text form
// itself, or the path of a file holding it (lines starting with # are
// comments).
func LoadAnchorKey(v string) (AnchorKey, error) {
	if strings.HasPrefix(strings.TrimSpace(v), AnchorPrefix) {
		return ParseAnchorKey(v)
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, fmt.Errorf("trust anchor: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParseAnchorKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v, err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("trust anchor: %s holds no %s… line", v, AnchorPrefix)
}

// Anchors is the set of trust anchors a verifier accepts endorsements from.
type Anchors []AnchorKey

// VerifyKeyRecord decodes a keys bucket entry (bucketKey is the entry's
// key, the key id) and returns its public key if the record is well formed
// and endorsed by one of the anchors. Errors name the key id, never
// anything secret.
func (as Anchors) VerifyKeyRecord(bucketKey string, value []byte) (ed25519.PublicKey, error) {
	var rec events.KeyRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, fmt.Errorf("key %s: %w", bucketKey, err)
	}
	if rec.KeyID != bucketKey {
		return nil, fmt.Errorf("key %s: record names kid %q", bucketKey, rec.KeyID)
	}
	if len(rec.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key %s: want %d bytes of Ed25519 public key, got %d", bucketKey, ed25519.PublicKeySize, len(rec.PublicKey))
	}
	if err := as.Verify(rec); err != nil {
		return nil, fmt.Errorf("key %s: %w", bucketKey, err)
	}
	return ed25519.PublicKey(rec.PublicKey), nil
}

// Verify checks rec's endorsement against the anchors.
func (as Anchors) Verify(rec events.KeyRecord) error {
	if len(as) == 0 {
		return ErrNoAnchor
	}
	if len(rec.Endorsement) == 0 {
		return fmt.Errorf("%w: the record has no endorsement", ErrNotEndorsed)
	}
	for _, a := range as {
		if a.ID() != rec.Anchor || len(a) != ed25519.PublicKeySize {
			continue
		}
		if ed25519.Verify(ed25519.PublicKey(a), endorsementInput(rec.KeyID, rec.PublicKey), rec.Endorsement) {
			return nil
		}
		return fmt.Errorf("%w: the endorsement by anchor %s does not verify", ErrNotEndorsed, rec.Anchor)
	}
	return fmt.Errorf("%w: anchor %q is not trusted here", ErrNotEndorsed, rec.Anchor)
}

// MarshalAnchor encodes the private anchor as PEM (PKCS #8).
func MarshalAnchor(a Anchor) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(a.Key)
	if err != nil {
		return nil, fmt.Errorf("encode trust anchor: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: anchorPEMType, Headers: map[string]string{anchorPEMTag: a.Public().ID()}, Bytes: der}), nil
}

// UnmarshalAnchor decodes a private anchor written by MarshalAnchor.
func UnmarshalAnchor(b []byte) (Anchor, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != anchorPEMType || blk.Headers[anchorPEMTag] == "" {
		return Anchor{}, fmt.Errorf("trust anchor: not a PEM %q block with a %s header", anchorPEMType, anchorPEMTag)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return Anchor{}, fmt.Errorf("trust anchor: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return Anchor{}, errors.New("trust anchor: not an Ed25519 key")
	}
	a := Anchor{Key: priv}
	if a.Public().ID() != blk.Headers[anchorPEMTag] {
		return Anchor{}, errors.New("trust anchor: the id header does not match the key")
	}
	return a, nil
}
