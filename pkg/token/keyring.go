package token

import (
	"crypto/ed25519"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
)

// Keyring holds the public keys that verify tokens, by key id. Reads are
// lock-free; it is safe for concurrent use.
type Keyring struct {
	mu   sync.Mutex // serialises writers
	keys atomic.Pointer[map[string]ed25519.PublicKey]
}

// NewKeyring returns an empty keyring.
func NewKeyring() *Keyring {
	k := &Keyring{}
	m := map[string]ed25519.PublicKey{}
	k.keys.Store(&m)
	return k
}

// Add makes key verify tokens signed under kid.
func (k *Keyring) Add(kid string, key ed25519.PublicKey) error {
	if len(key) != ed25519.PublicKeySize {
		return fmt.Errorf("add key %s: want %d bytes, got %d", kid, ed25519.PublicKeySize, len(key))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	m := maps.Clone(*k.keys.Load())
	m[kid] = append(ed25519.PublicKey(nil), key...)
	k.keys.Store(&m)
	return nil
}

// Remove retires kid: its tokens no longer verify.
func (k *Keyring) Remove(kid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := maps.Clone(*k.keys.Load())
	delete(m, kid)
	k.keys.Store(&m)
}

// Key returns the public key for kid.
func (k *Keyring) Key(kid string) (ed25519.PublicKey, bool) {
	key, ok := (*k.keys.Load())[kid]
	return key, ok
}

// Len is the number of keys held.
func (k *Keyring) Len() int { return len(*k.keys.Load()) }

// Verify parses s and verifies it against the key its header names.
// Time, audience, scope and context checks are the caller's.
func (k *Keyring) Verify(s string) (*Token, error) {
	u, err := Parse(s)
	if err != nil {
		return nil, err
	}
	key, ok := k.Key(u.KeyID)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, u.KeyID)
	}
	return u.Verify(key)
}
