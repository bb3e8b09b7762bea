package leak_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/leak"
)

// scanner stands in for GitHub: a P-256 key pair per identifier and the
// key document it publishes, served over HTTP.
type scanner struct {
	mu    sync.Mutex
	keys  map[string]*ecdsa.PrivateKey
	order []string
	hits  atomic.Int64
	srv   *httptest.Server
}

func newScanner(t *testing.T, ids ...string) *scanner {
	t.Helper()
	s := &scanner{keys: map[string]*ecdsa.PrivateKey{}}
	for _, id := range ids {
		s.add(t, id)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		_, _ = w.Write(s.document(t))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scanner) add(t *testing.T, id string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = k
	s.order = append(s.order, id)
}

func (s *scanner) document(t *testing.T) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var doc leak.KeyDocument
	for i, id := range s.order {
		der, err := x509.MarshalPKIXPublicKey(&s.keys[id].PublicKey)
		if err != nil {
			t.Error(err)
		}
		doc.PublicKeys = append(doc.PublicKeys, leak.PublishedKey{KeyIdentifier: id, IsCurrent: i == len(s.order)-1,
			Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Error(err)
	}
	return b
}

func (s *scanner) sign(t *testing.T, id string, body []byte) string {
	t.Helper()
	s.mu.Lock()
	k := s.keys[id]
	s.mu.Unlock()
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

const body = `[{"token":"cordon_x","type":"cordon_api_token","url":"https://github.com/o/r/blob/abc/.env","source":"content"}]`

// TestVerify: a body signed by a published key verifies; a wrong
// signature, an unknown key, a re-serialised body and a signature of
// another body are refused.
func TestVerify(t *testing.T) {
	sc := newScanner(t, "k1")
	other := newScanner(t, "k1") // same identifier, another key
	keys, err := leak.NewKeys(leak.KeysOptions{Source: sc.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := sc.sign(t, "k1", []byte(body))
	var reser []byte
	var rs []leak.Report
	if err := json.Unmarshal([]byte(body), &rs); err != nil {
		t.Fatal(err)
	}
	if reser, err = json.MarshalIndent(rs, "", " "); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		body      []byte
		keyID     string
		sig       string
		want      error
		wantEmpty bool
	}{
		{"signed", []byte(body), "k1", good, nil, false},
		{"another key's signature", []byte(body), "k1", other.sign(t, "k1", []byte(body)), leak.ErrSignature, false},
		{"unknown key", []byte(body), "k9", good, leak.ErrUnknownKey, false},
		{"no key id", []byte(body), "", good, leak.ErrUnknownKey, false},
		{"re-serialised body", reser, "k1", good, leak.ErrSignature, false},
		{"one byte more", []byte(body + " "), "k1", good, leak.ErrSignature, false},
		{"not base64", []byte(body), "k1", "%%%", leak.ErrSignature, false},
		{"empty signature", []byte(body), "k1", "", leak.ErrSignature, false},
		{"truncated signature", []byte(body), "k1", good[:20], leak.ErrSignature, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := keys.Verify(ctx, tt.body, tt.keyID, tt.sig)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestKeyRotation: a key published after the document was fetched is
// found by fetching it again; a flood of unknown identifiers fetches the
// document at most once per MinRefetch.
func TestKeyRotation(t *testing.T) {
	sc := newScanner(t, "k1")
	keys, err := leak.NewKeys(leak.KeysOptions{Source: sc.srv.URL, MinRefetch: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := keys.Verify(ctx, []byte(body), "k1", sc.sign(t, "k1", []byte(body))); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := keys.Verify(ctx, []byte(body), "made-up-"+string(rune('a'+i%26)), "AAAA"); !errors.Is(err, leak.ErrUnknownKey) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := sc.hits.Load(); n != 1 {
		t.Fatalf("%d fetches for one start and 100 unknown identifiers within MinRefetch, want 1", n)
	}

	// Rotation: with a short MinRefetch the new key is fetched.
	sc2 := newScanner(t, "k1")
	keys2, err := leak.NewKeys(leak.KeysOptions{Source: sc2.srv.URL, MinRefetch: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys2.Verify(ctx, []byte(body), "k1", sc2.sign(t, "k1", []byte(body))); err != nil {
		t.Fatal(err)
	}
	sc2.add(t, "k2")
	if err := keys2.Verify(ctx, []byte(body), "k2", sc2.sign(t, "k2", []byte(body))); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if err := keys2.Verify(ctx, []byte(body), "k1", sc2.sign(t, "k1", []byte(body))); err != nil {
		t.Fatalf("the previous key, still published: %v", err)
	}
}

// TestKeyDocumentSources: a file source works; a missing file, a server
// error and malformed documents are refused with ErrKeyDocument, and a
// document that fails to load keeps refusing instead of verifying.
func TestKeyDocumentSources(t *testing.T) {
	sc := newScanner(t, "k1")
	dir := t.TempDir()
	file := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(file, sc.document(t), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, err := leak.NewKeys(leak.KeysOptions{Source: file})
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Verify(ctx, []byte(body), "k1", sc.sign(t, "k1", []byte(body))); err != nil {
		t.Fatalf("file source: %v", err)
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	p384 := `{"public_keys":[{"key_identifier":"k1","key":` + jsonString(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))) + `}]}`
	docs := map[string]string{
		"not json":      "{",
		"no keys":       `{"public_keys":[]}`,
		"no identifier": `{"public_keys":[{"key":"x"}]}`,
		"not pem":       `{"public_keys":[{"key_identifier":"k1","key":"MFkw"}]}`,
		"P-384 key":     p384,
	}
	sources := map[string]string{"missing file": filepath.Join(dir, "none.json"), "server error": failing.URL}
	for name, doc := range docs {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		sources[name] = path
	}
	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			keys, err := leak.NewKeys(leak.KeysOptions{Source: src})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := keys.Verify(ctx, []byte(body), "k1", sc.sign(t, "k1", []byte(body))); !errors.Is(err, leak.ErrKeyDocument) {
					t.Fatalf("Verify: %v, want ErrKeyDocument", err)
				}
			}
		})
	}
	if _, err := leak.NewKeys(leak.KeysOptions{}); !errors.Is(err, leak.ErrKeyDocument) {
		t.Fatalf("no source: %v", err)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestParseReports: GitHub's payloads parse; malformed and oversized ones
// are refused with a reason.
func TestParseReports(t *testing.T) {
	tests := []struct {
		name string
		body string
		n    int
		want string
	}{
		{"github", body, 1, ""},
		{"no source (older payloads)", `[{"token":"a","type":"t","url":"u"}]`, 1, ""},
		{"unknown field", `[{"token":"a","type":"t","url":"u","extra":1}]`, 1, ""},
		{"empty array", `[]`, 0, ""},
		{"object", `{"token":"a"}`, 0, "JSON array"},
		{"empty", ``, 0, "JSON array"},
		{"no token", `[{"type":"t"}]`, 0, "no token"},
		{"token not a string", `[{"token":1}]`, 0, "leak report"},
		{"truncated", `[{"token":"a"`, 0, "leak report"},
		{"long url", `[{"token":"a","url":"` + strings.Repeat("x", 5000) + `"}]`, 0, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := leak.ParseReports([]byte(tt.body))
			if tt.want == "" {
				if err != nil || len(rs) != tt.n {
					t.Fatalf("ParseReports: %d reports, %v; want %d", len(rs), err, tt.n)
				}
				return
			}
			if !errors.Is(err, leak.ErrReport) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseReports: %v, want ErrReport containing %q", err, tt.want)
			}
		})
	}
	many := "[" + strings.Repeat(`{"token":"a"},`, leak.MaxReports) + `{"token":"a"}]`
	if _, err := leak.ParseReports([]byte(many)); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("%d reports: %v, want the limit", leak.MaxReports+1, err)
	}
}

// FuzzParseReports: ParseReports never panics, and what it accepts has a
// token in every report.
func FuzzParseReports(f *testing.F) {
	f.Add([]byte(body))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"token":""}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := leak.ParseReports(b)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Token == "" {
				t.Fatal("accepted a report without a token")
			}
		}
	})
}
