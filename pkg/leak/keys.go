package leak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Errors of signature verification. A refused report changes nothing.
var (
	// ErrUnknownKey: the key identifier names no published key, even after
	// fetching the key document again.
	ErrUnknownKey = errors.New("leak report: unknown signing key")
	// ErrSignature: the signature is malformed or does not verify.
	ErrSignature = errors.New("leak report: bad signature")
	// ErrKeyDocument: the key document cannot be read or parsed.
	ErrKeyDocument = errors.New("leak report: key document")
)

// maxKeyDocument bounds the key document.
const maxKeyDocument = 1 << 20

// KeyDocument is the published key document's shape.
type KeyDocument struct {
	// PublicKeys are the signing keys, by identifier.
	PublicKeys []PublishedKey `json:"public_keys"`
}

// PublishedKey is one key of a KeyDocument.
type PublishedKey struct {
	// KeyIdentifier names the key in GITHUB-PUBLIC-KEY-IDENTIFIER.
	KeyIdentifier string `json:"key_identifier"`
	// Key is the PEM "PUBLIC KEY" (PKIX) of an ECDSA P-256 key.
	Key string `json:"key"`
	// IsCurrent marks the key in use for new signatures.
	IsCurrent bool `json:"is_current"`
}

// ParseKeyDocument decodes a key document into P-256 keys by identifier.
// A key that is not an ECDSA P-256 PKIX key fails the whole document: a
// publisher's mistake should be loud, not a silently missing key.
func ParseKeyDocument(b []byte) (map[string]*ecdsa.PublicKey, error) {
	var doc KeyDocument
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyDocument, err)
	}
	if len(doc.PublicKeys) == 0 {
		return nil, fmt.Errorf("%w: no public_keys", ErrKeyDocument)
	}
	out := make(map[string]*ecdsa.PublicKey, len(doc.PublicKeys))
	for _, k := range doc.PublicKeys {
		if k.KeyIdentifier == "" {
			return nil, fmt.Errorf("%w: a key without key_identifier", ErrKeyDocument)
		}
		blk, _ := pem.Decode([]byte(k.Key))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: key %s: want a PEM PUBLIC KEY", ErrKeyDocument, k.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: key %s: %v", ErrKeyDocument, k.KeyIdentifier, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: key %s: want an ECDSA P-256 key", ErrKeyDocument, k.KeyIdentifier)
		}
		out[k.KeyIdentifier] = ec
	}
	return out, nil
}

// KeysOptions configure Keys.
type KeysOptions struct {
	// Source is the key document: an https:// or http:// URL, or a file
	// path.
	Source string
	// Client fetches a URL (default: a client with a 10 s timeout).
	Client *http.Client
	// Refresh is how long a fetched document is used before it is fetched
	// again (default 1 h).
	Refresh time.Duration
	// MinRefetch bounds how often an unknown key identifier fetches the
	// document again (default 1 min): a flood of made-up identifiers costs
	// one fetch per MinRefetch.
	MinRefetch time.Duration
}

// Keys verifies report signatures against a cached key document.
type Keys struct {
	o KeysOptions

	mu      sync.Mutex
	keys    map[string]*ecdsa.PublicKey
	fetched time.Time // last successful fetch
	tried   time.Time // last attempt
	lastErr error     // of the last attempt, while no document is known
}

// retryFailed is how soon a document never fetched is tried again.
const retryFailed = 5 * time.Second

// NewKeys returns a key cache; the document is fetched on first use.
func NewKeys(o KeysOptions) (*Keys, error) {
	if o.Source == "" {
		return nil, fmt.Errorf("%w: no source (a URL or a file)", ErrKeyDocument)
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Refresh <= 0 {
		o.Refresh = time.Hour
	}
	if o.MinRefetch <= 0 {
		o.MinRefetch = time.Minute
	}
	return &Keys{o: o}, nil
}

// Verify checks sig (base64 ASN.1 ECDSA) over body with the key keyID.
func (k *Keys) Verify(ctx context.Context, body []byte, keyID, sig string) error {
	if keyID == "" {
		return fmt.Errorf("%w: no key identifier", ErrUnknownKey)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
	if err != nil || len(raw) == 0 {
		return fmt.Errorf("%w: not base64", ErrSignature)
	}
	pub, err := k.key(ctx, keyID)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, sum[:], raw) {
		return ErrSignature
	}
	return nil
}

// key returns keyID's key, fetching the document when it is stale or
// does not hold keyID (at most once per MinRefetch).
func (k *Keys) key(ctx context.Context, keyID string) (*ecdsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if k.keys == nil && k.lastErr != nil && now.Sub(k.tried) < retryFailed {
		return nil, k.lastErr
	}
	pub, ok := k.keys[keyID]
	stale := k.keys == nil || now.Sub(k.fetched) >= k.o.Refresh
	if (ok && !stale) || now.Sub(k.tried) < k.o.MinRefetch && k.keys != nil {
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownKey, keyID)
		}
		return pub, nil
	}
	k.tried = now
	keys, err := k.fetch(ctx)
	k.lastErr = err
	if err != nil {
		if ok {
			return pub, nil // a stale document still knows the key
		}
		return nil, err
	}
	k.keys, k.fetched = keys, now
	if pub, ok = keys[keyID]; !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	return pub, nil
}

// fetch reads and parses the document.
func (k *Keys) fetch(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	var b []byte
	if strings.HasPrefix(k.o.Source, "https://") || strings.HasPrefix(k.o.Source, "http://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.o.Source, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeyDocument, err)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := k.o.Client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%w: fetch %s: %v", ErrKeyDocument, k.o.Source, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%w: fetch %s: %s", ErrKeyDocument, k.o.Source, resp.Status)
		}
		if b, err = io.ReadAll(io.LimitReader(resp.Body, maxKeyDocument+1)); err != nil {
			return nil, fmt.Errorf("%w: fetch %s: %v", ErrKeyDocument, k.o.Source, err)
		}
	} else {
		var err error
		if b, err = os.ReadFile(k.o.Source); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKeyDocument, err)
		}
	}
	if len(b) > maxKeyDocument {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrKeyDocument, k.o.Source, maxKeyDocument)
	}
	return ParseKeyDocument(b)
}
