package issuer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
)

// stealKey reads the issuer's active signing key the way an attacker who
// can read its data directory would (issue 8: `SELECT file(...)` returned
// it): the active file names the key, the PEM holds it.
func stealKey(t *testing.T, dir string) token.Signer {
	t.Helper()
	kid, err := os.ReadFile(filepath.Join(dir, "keys", "active"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "keys", strings.TrimSpace(string(kid))+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block in the key file")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return token.Signer{KeyID: blk.Headers["Cordon-Key-Id"], Key: k.(ed25519.PrivateKey)}
}

// forge mints claims with a stolen key, outside the issuer.
func forge(t *testing.T, s token.Signer, c token.Claims) string {
	t.Helper()
	tok, err := s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claimsOf reads a token's claims (as anyone holding it can).
func claimsOf(t *testing.T, tok string) token.Claims {
	t.Helper()
	u, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	c := u.Claims
	c.Scopes, c.Audience = slices.Clone(c.Scopes), slices.Clone(c.Audience)
	return c
}

// TestForgedAdminTokens is issue 8's finding 1, second half: with the
// issuer's real signing key, an attacker mints admin tokens outside the
// issuer — a fresh id with admin scopes, the bootstrap admin token's id
// with wider scopes or a longer life, a cordon:read token's id with
// cordon:* — and none is accepted by the HTTP API or the NATS commands,
// nothing is minted, no key is rotated; the legitimate tokens still work.
func TestForgedAdminTokens(t *testing.T) {
	h := newHarness(t)
	reader := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeRead}, TTL: "1h"})
	stolen := stealKey(t, h.dir)
	if _, err := h.iss.keys.ring.Verify(forge(t, stolen, claimsOf(t, h.admin))); err != nil {
		t.Fatalf("the stolen key does not sign like the issuer: %v", err)
	}
	now := h.clk.Now()
	boot := claimsOf(t, h.admin)

	fresh := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: AdminTenant, Holder: AdminHolder, Scopes: events.AdminScopes(),
		Audience: []string{AdminAudience}, IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Hour).Unix()}
	bootWide := boot
	bootWide.Scopes = []string{"cordon:*"}
	bootLong := boot
	bootLong.Expiry = boot.Expiry + 365*24*3600
	bootLater := boot // same claims, a later issue time: would escape "revoke everything issued before"
	bootLater.IssuedAt = now.Add(time.Hour).Unix()
	readerWide := claimsOf(t, reader.Token)
	readerWide.Scopes = []string{"cordon:*"}

	forged := map[string]string{
		"fresh id with admin scopes":           forge(t, stolen, fresh),
		"bootstrap id with cordon:*":           forge(t, stolen, bootWide),
		"bootstrap id living a year longer":    forge(t, stolen, bootLong),
		"bootstrap id with a later issue":      forge(t, stolen, bootLater),
		"cordon:read token's id as cordon:*":   forge(t, stolen, readerWide),
		"cordon:read token's id, other holder": forge(t, stolen, func() token.Claims { c := claimsOf(t, reader.Token); c.Holder = "root"; return c }()),
	}
	issuedBefore := len(ledgerOf[*events.TokenIssued](h, ""))
	keysBefore := len(h.iss.keys.ids())
	mintAdmin := IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeKeys}, TTL: "1h"}

	for name, tok := range forged {
		h.remember(tok)
		t.Run(name, func(t *testing.T) {
			for _, c := range []struct {
				method, path string
				body         any
			}{
				{"GET", "/v1/tokens", nil},
				{"POST", "/v1/tokens", mintAdmin},
				{"POST", "/v1/keys/rotate", nil},
				{"POST", "/v1/tokens/" + reader.ID + "/rotate", nil},
			} {
				status, out := h.do(c.method, c.path, tok, c.body)
				if status != http.StatusUnauthorized {
					t.Errorf("HTTP %s %s: status %d, want 401: %s", c.method, c.path, status, out)
				}
				if strings.Contains(string(out), tok) {
					t.Errorf("HTTP %s %s echoes the token", c.method, c.path)
				}
			}
			for subj, req := range map[string]CmdRequest{
				events.SubjectCmdIssue:   {Auth: tok, IdempotencyKey: "forged-" + name, Issue: &mintAdmin},
				events.SubjectCmdList:    {Auth: tok},
				events.SubjectCmdInspect: {Auth: tok, TokenID: reader.ID},
				events.SubjectCmdRotate:  {Auth: tok, IdempotencyKey: "forged-" + name, Rotate: &RotateRequest{TokenID: reader.ID}},
			} {
				r := h.command(subj, req)
				if r.OK || r.Code != "unauthenticated" || r.Issued != nil || r.Tokens != nil || r.Token != nil {
					t.Errorf("NATS %s: %+v, want unauthenticated", subj, r)
				}
			}
		})
	}
	if n := len(ledgerOf[*events.TokenIssued](h, "")); n != issuedBefore {
		t.Fatalf("forged tokens minted %d tokens", n-issuedBefore)
	}
	if n := len(h.iss.keys.ids()); n != keysBefore {
		t.Fatalf("forged tokens rotated the signing key: %d keys, were %d", n, keysBefore)
	}
	if d, _ := h.iss.Inspect(reader.ID); d.Status != StatusActive {
		t.Fatalf("forged tokens rotated the reader token: %s", d.Status)
	}

	// The genuine tokens keep working, over HTTP and NATS.
	call[TokenList](h, "GET", "/v1/tokens", h.admin, nil, http.StatusOK)
	call[TokenList](h, "GET", "/v1/tokens", reader.Token, nil, http.StatusOK)
	if r := h.command(events.SubjectCmdList, CmdRequest{Auth: reader.Token}); !r.OK {
		t.Fatalf("reader over NATS: %+v", r)
	}
	h.issue(IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}})
	h.assertNoSecrets()
}

// dayName is the window day name of d.
func dayName(d time.Weekday) string {
	return []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}[d]
}

// TestAdminContextBindings: an admin token's network, window and device
// claims are enforced by the HTTP API, and a NATS command refuses a
// token bound to networks or a device it cannot check (issue 8, finding 4).
func TestAdminContextBindings(t *testing.T) {
	serverCert, clientCert, otherCert := selfSigned(t, "127.0.0.1"), selfSigned(t, "admin-laptop"), selfSigned(t, "someone-else")
	h := &harness{t: t, tls: &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}}
	h.init()
	roots := x509.NewCertPool()
	roots.AddCert(serverCert.Leaf)
	clientWith := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
	}
	h.client = clientWith(clientCert)
	h.start()

	now := h.clk.Now()
	read := func(mod func(*IssueRequest)) IssueResponse {
		req := IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeRead}, TTL: "1h"}
		mod(&req)
		return h.issue(req)
	}
	elsewhere := read(func(r *IssueRequest) { r.Networks = []string{"10.99.0.0/16"} })
	loopback := read(func(r *IssueRequest) { r.Networks = []string{"127.0.0.0/8", "::1/128"} })
	otherDay := read(func(r *IssueRequest) {
		r.Windows = []Window{{Days: []string{dayName(now.Add(48 * time.Hour).Weekday())}, Start: "00:00", End: "24:00", Zone: "UTC"}}
	})
	today := read(func(r *IssueRequest) {
		r.Windows = []Window{{Days: []string{dayName(now.Weekday())}, Start: "00:00", End: "24:00", Zone: "UTC"}}
	})
	device := read(func(r *IssueRequest) { r.Device = token.Thumbprint(clientCert.Leaf.Raw) })

	type via int
	const (
		https via = iota
		httpsNoCert
		httpsOtherCert
		nats
	)
	tests := []struct {
		name string
		tok  string
		via  via
		ok   bool
		want string
	}{
		{"network elsewhere over HTTPS", elsewhere.Token, https, false, "outside its networks"},
		{"network elsewhere over NATS", elsewhere.Token, nats, false, "use the HTTPS API"},
		{"network loopback over HTTPS", loopback.Token, https, true, ""},
		{"network loopback over NATS", loopback.Token, nats, false, "bound to networks"},
		{"window another day over HTTPS", otherDay.Token, https, false, "outside its time windows"},
		{"window another day over NATS", otherDay.Token, nats, false, "outside its time windows"},
		{"window today over HTTPS", today.Token, https, true, ""},
		{"window today over NATS", today.Token, nats, true, ""},
		{"device with its certificate", device.Token, https, true, ""},
		{"device without a certificate", device.Token, httpsNoCert, false, "no TLS client certificate"},
		{"device with another certificate", device.Token, httpsOtherCert, false, "another device"},
		{"device over NATS", device.Token, nats, false, "bound to a device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ok bool
			var msg string
			switch tt.via {
			case nats:
				r := h.command(events.SubjectCmdList, CmdRequest{Auth: tt.tok})
				ok, msg = r.OK, r.Error
				if !ok && r.Code != "forbidden" {
					t.Errorf("code %q, want forbidden", r.Code)
				}
			default:
				h.client = map[via]*http.Client{https: clientWith(clientCert), httpsNoCert: clientWith(), httpsOtherCert: clientWith(otherCert)}[tt.via]
				status, out := h.do("GET", "/v1/tokens", tt.tok, nil)
				ok = status == http.StatusOK
				if !ok {
					msg = errorBody(t, out).Error
					if status != http.StatusForbidden {
						t.Errorf("status %d, want 403", status)
					}
				}
			}
			if ok != tt.ok || !strings.Contains(msg, tt.want) {
				t.Fatalf("accepted %v (want %v): %q, want it to say %q", ok, tt.ok, msg, tt.want)
			}
		})
	}
	h.client = clientWith(clientCert)
	h.assertNoSecrets()
}

// TestIdempotencyScopedToToken is issue 8's finding 5 (idempotency keys):
// a second admin token of the same holder replaying the first one's key
// gets a request of its own, never the first reply nor its token string;
// the first token's retry still replays.
func TestIdempotencyScopedToToken(t *testing.T) {
	h := newHarness(t)
	a := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeIssue}, TTL: "1h"})
	b := h.issue(IssueRequest{Tenant: AdminTenant, Holder: AdminHolder, Scopes: []string{ScopeIssue}, TTL: "1h"})
	body := IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"}

	t.Run("HTTP", func(t *testing.T) {
		post := func(tok string) (int, []byte) {
			h.t.Helper()
			b, _ := json.Marshal(body)
			req, _ := http.NewRequest("POST", h.url+"/v1/tokens", bytes.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set(HeaderIdempotencyKey, "deploy-7")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, out
		}
		sa, outA := post(a.Token)
		var first IssueResponse
		if sa != http.StatusCreated || json.Unmarshal(outA, &first) != nil || first.Token == "" {
			t.Fatalf("first: %d %s", sa, outA)
		}
		h.remember(first.Token)
		sb, outB := post(b.Token)
		var second IssueResponse
		if sb != http.StatusCreated || json.Unmarshal(outB, &second) != nil {
			t.Fatalf("other token: %d %s", sb, outB)
		}
		h.remember(second.Token)
		if strings.Contains(string(outB), first.Token) || second.ID == first.ID {
			t.Fatalf("another token replayed the first token's idempotency key and got its reply (%s)", first.ID)
		}
		sa2, outA2 := post(a.Token)
		var retry IssueResponse
		if sa2 != http.StatusCreated || json.Unmarshal(outA2, &retry) != nil || retry.ID != first.ID || retry.Token != first.Token {
			t.Fatalf("the same token's retry did not replay: %d %s", sa2, outA2)
		}
	})

	t.Run("NATS", func(t *testing.T) {
		first := h.command(events.SubjectCmdIssue, CmdRequest{Auth: a.Token, IdempotencyKey: "nightly", Issue: &body})
		if !first.OK || first.Replayed {
			t.Fatalf("first: %+v", first)
		}
		raw := h.request(events.SubjectCmdIssue, mustJSON(CmdRequest{Auth: b.Token, IdempotencyKey: "nightly", Issue: &body}))
		if !raw.OK || raw.Replayed || raw.Issued.ID == first.Issued.ID || raw.Issued.Token == first.Issued.Token {
			t.Fatalf("another token replayed the key and got the first reply: %+v", raw)
		}
		b2, _ := json.Marshal(raw)
		if strings.Contains(string(b2), first.Issued.Token) {
			t.Fatal("the other token's reply carries the first token string")
		}
		retry := h.command(events.SubjectCmdIssue, CmdRequest{Auth: a.Token, IdempotencyKey: "nightly", Issue: &body})
		if !retry.OK || !retry.Replayed || retry.Issued.Token != first.Issued.Token {
			t.Fatalf("the same token's retry did not replay: %+v", retry)
		}
	})
	h.assertNoSecrets()
}

// selfSigned makes a self-signed certificate for name (an IP address or a
// DNS name), usable by a server and a client.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
