package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"time"
)

// GenerateSigner creates a fresh Ed25519 signing key with an id of the form
// "k20261127-1a2b3c4d" (creation date and random suffix).
func GenerateSigner(now time.Time) (Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Signer{}, fmt.Errorf("generate signing key: %w", err)
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return Signer{}, fmt.Errorf("generate key id: %w", err)
	}
	return Signer{KeyID: fmt.Sprintf("k%s-%x", now.UTC().Format("20060102"), r), Key: priv}, nil
}

// Public returns the signer's public key.
func (s Signer) Public() ed25519.PublicKey { return s.Key.Public().(ed25519.PublicKey) }
