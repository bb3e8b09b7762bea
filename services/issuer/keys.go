package issuer

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/svcconfig"
	"github.com/cordonhq/cordon/pkg/token"
)

// keyStore holds the issuer's Ed25519 signing keys: one PEM file per key
// in DataDir/keys (0600, in a 0700 directory) and a file naming the active
// key. Private keys never leave it: not in logs, events or replies.
type keyStore struct {
	dir string
	log zerolog.Logger

	mu     sync.RWMutex
	keys   map[string]*localKey
	active string
	ring   *token.Keyring // the public halves, for verifying admin tokens
	anchor token.Anchor   // endorses every key published to the keys bucket
}

type localKey struct {
	signer  token.Signer
	created time.Time
}

const (
	pemType      = "PRIVATE KEY"
	pemKeyID     = "Cordon-Key-Id"
	pemCreated   = "Created"
	activeFile   = "active"
	keyExtension = ".pem"
	// AnchorFile is the trust anchor's private key in the key directory
	// (its extension keeps it out of the signing keys).
	AnchorFile = "anchor.key"
	// TrustAnchorFile is where the issuer writes the anchor's public half,
	// in DataDir: give it to enforcers, the revoker and the auditor
	// (--trust-anchor).
	TrustAnchorFile = svcconfig.TrustAnchorFile
)

// loadAnchor reads the trust anchor from path. With create, a missing
// anchor is generated and written (0600); otherwise it is an error.
func loadAnchor(path string, create bool, log zerolog.Logger) (token.Anchor, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			log.Warn().Str("path", path).Str("mode", st.Mode().Perm().String()).Msg("trust anchor file readable by others; restricting it to 0600")
			if err := os.Chmod(path, 0o600); err != nil {
				return token.Anchor{}, fmt.Errorf("trust anchor %s: %w", path, err)
			}
		}
		a, err := token.UnmarshalAnchor(b)
		if err != nil {
			return token.Anchor{}, fmt.Errorf("%s: %w", path, err)
		}
		return a, nil
	case !errors.Is(err, fs.ErrNotExist) || !create:
		return token.Anchor{}, fmt.Errorf("trust anchor: %w (create one with `cordon anchor generate`)", err)
	}
	a, err := token.GenerateAnchor()
	if err != nil {
		return token.Anchor{}, err
	}
	pemBytes, err := token.MarshalAnchor(a)
	if err != nil {
		return token.Anchor{}, err
	}
	if err := writeFileAtomic(path, pemBytes, 0o600); err != nil {
		return token.Anchor{}, fmt.Errorf("store trust anchor: %w", err)
	}
	log.Info().Str("anchor", a.Public().ID()).Msg("generated the trust anchor")
	return a, nil
}

// WriteTrustAnchor writes the anchor's public half to path (0644), the
// file verifiers are given with --trust-anchor.
func WriteTrustAnchor(path string, k token.AnchorKey) error {
	text := "# Cordon trust anchor " + k.ID() + ": it endorses the issuer's signing keys.\n" +
		"# Give this file to enforcers, the revoker and the auditor (--trust-anchor).\n" + k.String() + "\n"
	return writeFileAtomic(path, []byte(text), 0o644)
}

// record returns the endorsed keys bucket record of a key.
func (ks *keyStore) record(lk *localKey) events.KeyRecord {
	return ks.anchor.EndorsedRecord(events.KeyRecord{KeyID: lk.signer.KeyID, PublicKey: lk.signer.Public(), Created: lk.created})
}

// openKeyStore loads every key in dir, creating dir if needed, and the
// trust anchor: from anchorFile when set (it must exist), else from
// dir/AnchorFile, generated on first use.
func openKeyStore(dir, anchorFile string, log zerolog.Logger) (*keyStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	ks := &keyStore{dir: dir, log: log, keys: map[string]*localKey{}, ring: token.NewKeyring()}
	var err error
	if anchorFile != "" {
		ks.anchor, err = loadAnchor(anchorFile, false, log)
	} else {
		ks.anchor, err = loadAnchor(filepath.Join(dir, AnchorFile), true, log)
	}
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read key directory: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), keyExtension) {
			continue
		}
		lk, err := ks.load(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ks.keys[lk.signer.KeyID] = lk
		if err := ks.ring.Add(lk.signer.KeyID, lk.signer.Public()); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, activeFile))
	switch {
	case err == nil:
		kid := strings.TrimSpace(string(b))
		if _, ok := ks.keys[kid]; ok {
			ks.active = kid
		} else {
			log.Warn().Str("kid", kid).Msg("active key file names a missing key; choosing the newest key")
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read active key: %w", err)
	}
	if ks.active == "" {
		ks.active = ks.newest()
	}
	return ks, nil
}

func (ks *keyStore) load(path string) (*localKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		ks.log.Warn().Str("path", path).Str("mode", st.Mode().Perm().String()).Msg("signing key file readable by others; restricting it to 0600")
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemType {
		return nil, fmt.Errorf("signing key %s: not a PEM %q block", path, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an Ed25519 key", path)
	}
	kid := blk.Headers[pemKeyID]
	if err := events.ValidateName(kid); err != nil || kid+keyExtension != filepath.Base(path) {
		return nil, fmt.Errorf("signing key %s: key id header %q does not match the file name", path, kid)
	}
	created, err := time.Parse(time.RFC3339Nano, blk.Headers[pemCreated])
	if err != nil {
		return nil, fmt.Errorf("signing key %s: created header: %w", path, err)
	}
	return &localKey{signer: token.Signer{KeyID: kid, Key: priv}, created: created}, nil
}

func (ks *keyStore) newest() string {
	var best *localKey
	for _, lk := range ks.keys {
		if best == nil || lk.created.After(best.created) || (lk.created.Equal(best.created) && lk.signer.KeyID > best.signer.KeyID) {
			best = lk
		}
	}
	if best == nil {
		return ""
	}
	return best.signer.KeyID
}

// generate creates and persists a new key; it does not make it active.
func (ks *keyStore) generate(now time.Time) (*localKey, error) {
	s, err := token.GenerateSigner(now)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	created := now.UTC()
	b := pem.EncodeToMemory(&pem.Block{Type: pemType, Headers: map[string]string{
		pemKeyID: s.KeyID, pemCreated: created.Format(time.RFC3339Nano),
	}, Bytes: der})
	if err := writeFileAtomic(filepath.Join(ks.dir, s.KeyID+keyExtension), b, 0o600); err != nil {
		return nil, fmt.Errorf("store signing key %s: %w", s.KeyID, err)
	}
	lk := &localKey{signer: s, created: created}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.keys[s.KeyID] = lk
	if err := ks.ring.Add(s.KeyID, s.Public()); err != nil {
		return nil, err
	}
	return lk, nil
}

// setActive makes kid the signing key and records it on disk.
func (ks *keyStore) setActive(kid string) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if _, ok := ks.keys[kid]; !ok {
		return fmt.Errorf("%w: key %s", ErrNotFound, kid)
	}
	if err := writeFileAtomic(filepath.Join(ks.dir, activeFile), []byte(kid+"\n"), 0o600); err != nil {
		return fmt.Errorf("record active key: %w", err)
	}
	ks.active = kid
	return nil
}

// remove deletes a key: its file, and its public half from the ring.
func (ks *keyStore) remove(kid string) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if _, ok := ks.keys[kid]; !ok {
		return nil
	}
	if err := os.Remove(filepath.Join(ks.dir, kid+keyExtension)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete signing key %s: %w", kid, err)
	}
	delete(ks.keys, kid)
	ks.ring.Remove(kid)
	if ks.active == kid {
		ks.active = ""
	}
	return nil
}

// signer returns the active signing key.
func (ks *keyStore) signer() (token.Signer, error) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	lk, ok := ks.keys[ks.active]
	if !ok {
		return token.Signer{}, errors.New("no active signing key")
	}
	return lk.signer, nil
}

func (ks *keyStore) activeID() string {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.active
}

func (ks *keyStore) get(kid string) (*localKey, bool) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	lk, ok := ks.keys[kid]
	return lk, ok
}

// ids returns the key ids, oldest first.
func (ks *keyStore) ids() []string {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	out := make([]string, 0, len(ks.keys))
	for kid := range ks.keys {
		out = append(out, kid)
	}
	slices.SortFunc(out, func(a, b string) int {
		if c := ks.keys[a].created.Compare(ks.keys[b].created); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return out
}

// writeFileAtomic writes a file through a temporary file and a rename, so
// that a crash leaves either the old or the new content.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// TrustAnchor returns the public half of the anchor that endorses the
// issuer's signing keys: verifiers are configured with it.
func (i *Issuer) TrustAnchor() token.AnchorKey { return i.keys.anchor.Public() }
