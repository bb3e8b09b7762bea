package enforce

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

const demoRoutes = "../../testdata/routes/demo.yaml"

// fixture is a real JetStream, a signing key published in the keys
// bucket, and an upstream that records what reaches it.
type fixture struct {
	env      *natstest.Env
	signer   token.Signer
	routes   *Routes
	upstream *httptest.Server

	hits    atomic.Int64
	mu      sync.Mutex
	lastReq http.Header
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{env: natstest.Run(t)}
	var err error
	if f.routes, err = LoadRoutes(demoRoutes); err != nil {
		t.Fatal(err)
	}
	f.signer = newSigner(t)
	f.publishKey(t, f.signer)
	f.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		f.mu.Lock()
		f.lastReq = r.Header.Clone()
		f.mu.Unlock()
		_, _ = io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(f.upstream.Close)
	return f
}

func (f *fixture) lastHeaders() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReq
}

func newSigner(t testing.TB) token.Signer {
	t.Helper()
	s, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) kv(t testing.TB, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := f.env.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// publishKey puts the signer's public key, endorsed by the fixture's trust
// anchor, in the keys bucket.
func (f *fixture) publishKey(t testing.TB, s token.Signer) uint64 {
	t.Helper()
	return f.env.PublishKey(t, s)
}

// revoke writes a denylist entry and returns its revision.
func (f *fixture) revoke(t testing.TB, key string, rec events.DenyRecord) uint64 {
	t.Helper()
	if rec.Reason == "" {
		rec.Reason = "test"
	}
	rec.Actor, rec.RevokedAt = "test", time.Now().UTC()
	if rec.Expiry.IsZero() {
		rec.Expiry = time.Now().Add(time.Hour).UTC()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := f.kv(t, events.BucketDenylist).Put(context.Background(), key, b)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// enforcer starts an enforcer for the demo routes on the fixture's NATS.
func (f *fixture) enforcer(t testing.TB, id string, mod func(*Options)) *Enforcer {
	t.Helper()
	o := Options{ID: id, Routes: f.routes, TrustAnchors: f.env.Anchors(), Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Start(ctx, f.env.JS); err != nil {
		t.Fatal(err)
	}
	return e
}

// proxy serves NewProxy(e, upstream) on loopback.
func (f *fixture) proxy(t testing.TB, e *Enforcer) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(f.upstream.URL)
	h, err := NewProxy(e, u)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// claims are valid demo claims: tenant acme, holder billing-worker,
// reading invoices, for an hour.
func claims() token.Claims {
	now := time.Now()
	return token.Claims{
		ID:        uuid.Must(uuid.NewV7()).String(),
		Tenant:    "acme",
		Holder:    "billing-worker",
		Scopes:    []string{"invoices:read", "invoices:list"},
		Audience:  []string{"invoices"},
		IssuedAt:  now.Add(-time.Minute).Unix(),
		NotBefore: now.Add(-time.Minute).Unix(),
		Expiry:    now.Add(time.Hour).Unix(),
	}
}

func mint(t testing.TB, s token.Signer, mod func(*token.Claims)) (string, token.Claims) {
	t.Helper()
	c := claims()
	if mod != nil {
		mod(&c)
	}
	tok, err := s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c
}

type reply struct {
	status int
	reason string
	body   string
	header http.Header
}

func do(t testing.TB, c *http.Client, method, u, tok string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("User-Agent", "cordon-test/1")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, body: string(b), header: resp.Header}
	var body struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(b, &body) == nil {
		r.reason = body.Reason
	}
	return r
}

func waitRevision(t testing.TB, e *Enforcer, rev uint64) {
	t.Helper()
	natstest.WaitFor(t, 5*time.Second, func() error {
		if got := e.DenylistRevision(); got < rev {
			return fmt.Errorf("denylist revision %d, want %d", got, rev)
		}
		return nil
	})
}

// clientCert makes a self-signed client certificate.
func clientCert(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
