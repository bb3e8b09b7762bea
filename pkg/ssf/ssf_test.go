package ssf_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/cordonhq/cordon/pkg/ssf"
)

func newSigner(t *testing.T) *ssf.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssf.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func revocationSET(now time.Time) ssf.SET {
	return ssf.SET{Issuer: "https://cordon.example", ID: "e1", IssuedAt: now.Unix(), Audience: ssf.Audience{"https://idp.example"},
		Subject: &ssf.Subject{Format: "opaque", ID: "tok-1"},
		Events:  ssf.EventsMap{ssf.EventCredentialChange: {"credential_type": "api_key", "change_type": "revoke", "event_timestamp": now.Unix()}}}
}

// TestSignVerify: a signed SET verifies with the published JWKS (after a
// JSON round trip, as a receiver fetches it) and gives back its claims;
// another key, alg none, an HMAC signed with the public key (algorithm
// confusion), a missing typ, a tampered payload, another issuer or
// audience and a stale SET are refused.
func TestSignVerify(t *testing.T) {
	s := newSigner(t)
	now := time.Now()
	tok, err := s.Sign(revocationSET(now))
	if err != nil {
		t.Fatal(err)
	}
	published, err := json.Marshal(s.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := ssf.ParseJWKS(published)
	if err != nil {
		t.Fatal(err)
	}
	opts := ssf.VerifyOptions{Keys: keys, Issuer: "https://cordon.example", Audience: "https://idp.example", MaxAge: time.Hour}
	set, err := ssf.Verify(tok, opts)
	if err != nil {
		t.Fatal(err)
	}
	if set.Subject.Name() != "tok-1" || set.Events[ssf.EventCredentialChange]["change_type"] != "revoke" {
		t.Fatalf("claims %+v", set)
	}

	other := newSigner(t)
	otherTok, _ := other.Sign(revocationSET(now))
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "tok-1", "tok-2", 1))) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"secevent+jwt"}`)) + "." + parts[1] + "."
	// HS256 keyed with the public key's bytes: a verifier that trusted
	// "alg" would accept it.
	pub, _ := json.Marshal(s.JWKS().Keys[0])
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, (&jose.SignerOptions{}).WithType(ssf.Type))
	hsObj, _ := hs.Sign(payload)
	hsTok, _ := hsObj.CompactSerialize()
	noTyp, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: mustKey(t)}, nil)
	noTypObj, _ := noTyp.Sign(payload)
	noTypTok, _ := noTypObj.CompactSerialize()
	old, _ := s.Sign(revocationSET(now.Add(-2 * time.Hour)))
	tests := []struct {
		name string
		tok  string
		o    ssf.VerifyOptions
		want error
	}{
		{"another key", otherTok, opts, ssf.ErrKey},
		{"tampered", tampered, opts, ssf.ErrKey},
		{"alg none", none, opts, ssf.ErrInvalid},
		{"hs256 with the public key", hsTok, opts, ssf.ErrInvalid},
		{"no typ", noTypTok, opts, ssf.ErrInvalid},
		{"not a jws", "x.y", opts, ssf.ErrInvalid},
		{"another issuer", tok, ssf.VerifyOptions{Keys: keys, Issuer: "https://evil.example"}, ssf.ErrClaims},
		{"another audience", tok, ssf.VerifyOptions{Keys: keys, Audience: "https://other.example"}, ssf.ErrClaims},
		{"stale", old, opts, ssf.ErrClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ssf.Verify(tt.tok, tt.o); !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := s.Sign(ssf.SET{Issuer: "x"}); !errors.Is(err, ssf.ErrInvalid) {
		t.Fatalf("signing a SET without jti or events: %v", err)
	}
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestLoadOrCreateSigner: the key is created once (0600) and read back
// with the same key id.
func TestLoadOrCreateSigner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssf", "signing.pem")
	a, err := ssf.LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ssf.LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() || a.KeyID() == "" {
		t.Fatalf("key ids %q and %q", a.KeyID(), b.KeyID())
	}
}

// TestPushReceive: a pushed SET reaches the receiver's handler (202); a
// receiver that refuses it (wrong key) answers 400 invalid_key, which the
// pusher reports as ErrRejected; a missing credential is 401; a handler
// that fails is a 500 the pusher may retry.
func TestPushReceive(t *testing.T) {
	s := newSigner(t)
	var mu sync.Mutex
	var got []ssf.SET
	fail := false
	rc := &ssf.Receiver{Verify: ssf.VerifyOptions{Keys: s.JWKS(), Audience: "https://idp.example"}, Authorization: "Bearer s3cret",
		Handle: func(set ssf.SET) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return errors.New("store down")
			}
			got = append(got, set)
			return nil
		}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	ctx := context.Background()
	tok, err := s.Sign(revocationSET(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	p := &ssf.Pusher{Endpoint: srv.URL, Authorization: "Bearer s3cret"}
	if err := p.Push(ctx, tok); err != nil {
		t.Fatalf("push: %v", err)
	}
	if len(got) != 1 || got[0].ID != "e1" {
		t.Fatalf("received %+v", got)
	}
	otherTok, _ := newSigner(t).Sign(revocationSET(time.Now()))
	if err := p.Push(ctx, otherTok); !errors.Is(err, ssf.ErrRejected) || !strings.Contains(err.Error(), ssf.ErrCodeInvalidKey) {
		t.Fatalf("push signed by another key: %v, want ErrRejected invalid_key", err)
	}
	if err := (&ssf.Pusher{Endpoint: srv.URL}).Push(ctx, tok); err == nil || errors.Is(err, ssf.ErrRejected) {
		t.Fatalf("push without the credential: %v, want a retryable error", err)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := p.Push(ctx, tok); err == nil || errors.Is(err, ssf.ErrRejected) {
		t.Fatalf("push to a failing handler: %v, want a retryable error", err)
	}
	if len(got) != 1 {
		t.Fatalf("refused pushes reached the handler: %d SETs", len(got))
	}
}
