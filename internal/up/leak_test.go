package up_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/leak"
	"github.com/cordonhq/cordon/services/issuer"
)

// githubStandIn is a generated P-256 key standing in for GitHub's secret
// scanning signing key, with its key document written to a file.
type githubStandIn struct {
	id  string
	key *ecdsa.PrivateKey
}

func newGitHubStandIn(t *testing.T, dir, id string) (githubStandIn, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(leak.KeyDocument{PublicKeys: []leak.PublishedKey{{KeyIdentifier: id, IsCurrent: true,
		Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "github-keys.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	return githubStandIn{id: id, key: k}, path
}

func (g githubStandIn) sign(t *testing.T, body []byte) string {
	t.Helper()
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, g.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// post sends a report body to the issuer's GitHub intake.
func postLeaks(t *testing.T, url string, body []byte, keyID, sig string) (int, []leak.Feedback) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("GITHUB-PUBLIC-KEY-IDENTIFIER", keyID)
	req.Header.Set("GITHUB-PUBLIC-KEY-SIGNATURE", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fb []leak.Feedback
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&fb); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, fb
}

// proxyStatus is the status the enforcing proxy answers tok with.
func proxyStatus(t *testing.T, proxy, tok string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, proxy+"/invoices", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestGitHubLeakReports: a signed batch of 1,000 reports — live Cordon
// tokens, the same with a broken checksum, garbage with the prefix and
// other vendors' secrets — labels exactly the live tokens true_positive,
// revokes exactly them (the enforcer denies them, and keeps allowing the
// tokens whose broken copies were reported), and on-call is told where
// each was found. A wrong signature, an unknown key identifier and a
// re-serialised body are refused and change nothing.
func TestGitHubLeakReports(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end system skipped with -short")
	}
	dir := t.TempDir()
	gh, keysFile := newGitHubStandIn(t, dir, "gh-test-key-1")
	pager := newPager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sys, err := up.Start(ctx, up.Options{DataDir: filepath.Join(dir, "data"), NATSPort: -1, IssuerListen: "127.0.0.1:0",
		ProxyListen: "127.0.0.1:0", AlertWebhook: pager.URL, ChDBPath: chdbPath, Database: "leaks", LeakGitHubKeys: keysFile,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	intake := "http://" + sys.Issuer.Addr() + "/v1/leaks/github"

	var leaked, kept []string
	for n := range 40 {
		holder := []string{"billing-api", "reporting"}[n%2]
		res, err := sys.Issuer.Issue(ctx, "test", issuer.IssueRequest{Tenant: "acme", Holder: holder, Scopes: []string{"invoices:list"},
			Audience: []string{"invoices"}, Environment: "demo", TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		if n < 30 {
			leaked = append(leaked, res.Token)
		} else {
			kept = append(kept, res.Token)
		}
	}
	for _, tok := range append(append([]string{}, leaked...), kept...) {
		if st := proxyStatus(t, sys.ProxyURL, tok); st != http.StatusOK {
			t.Fatalf("a fresh token is answered %d before any report", st)
		}
	}

	// The batch: 30 live tokens, the 10 kept ones with a broken checksum,
	// 60 prefixed garbage, 900 other vendors' secrets; shuffled.
	var reports []leak.Report
	want := map[string]leak.Label{}
	add := func(tok string, label leak.Label) {
		url := fmt.Sprintf("https://github.com/octo/repo-%d/blob/0123abc/.env", len(reports))
		reports = append(reports, leak.Report{Token: tok, Type: "cordon_api_token", URL: url, Source: "content"})
		want[hashOf(tok)] = label
	}
	for _, tok := range leaked {
		add(tok, leak.TruePositive)
	}
	for _, tok := range kept {
		broken := []byte(tok)
		broken[len(broken)/2] ^= 0x01
		add(string(broken), leak.FalsePositive)
	}
	for n := range 60 {
		add(fmt.Sprintf("cordon_%032x.garbage.%d", n, n), leak.FalsePositive)
	}
	for n := range 900 {
		add(fmt.Sprintf("ghp_%036d", n), leak.FalsePositive)
	}
	mrand.Shuffle(len(reports), func(a, b int) { reports[a], reports[b] = reports[b], reports[a] })
	body, err := json.Marshal(reports)
	if err != nil {
		t.Fatal(err)
	}

	// Refused: nothing changes.
	other, _ := newGitHubStandIn(t, t.TempDir(), gh.id)
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, body, "", "  "); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name       string
		body       []byte
		keyID, sig string
		wantStatus int
	}{
		{"another key's signature", body, gh.id, other.sign(t, body), http.StatusUnauthorized},
		{"unknown key identifier", body, "gh-unknown", gh.sign(t, body), http.StatusUnauthorized},
		{"re-serialised body", pretty.Bytes(), gh.id, gh.sign(t, body), http.StatusUnauthorized},
		{"no signature", body, gh.id, "", http.StatusUnauthorized},
	}
	for _, r := range refusals {
		if st, fb := postLeaks(t, intake, r.body, r.keyID, r.sig); st != r.wantStatus || fb != nil {
			t.Errorf("%s: status %d with %d verdicts, want %d and none", r.name, st, len(fb), r.wantStatus)
		}
	}
	if st := proxyStatus(t, sys.ProxyURL, leaked[0]); st != http.StatusOK {
		t.Fatalf("a refused report changed something: a reported token is answered %d", st)
	}

	start := time.Now()
	st, fb := postLeaks(t, intake, body, gh.id, gh.sign(t, body))
	t.Logf("1,000 reports answered in %v", time.Since(start))
	if st != http.StatusOK || len(fb) != len(reports) {
		t.Fatalf("status %d with %d verdicts, want 200 and %d", st, len(fb), len(reports))
	}
	for n, f := range fb {
		if f.TokenHash != hashOf(reports[n].Token) || f.Label != want[f.TokenHash] {
			t.Fatalf("verdict %d: %+v, want %s for its report", n, f, want[hashOf(reports[n].Token)])
		}
	}
	if bytes.Contains(body, []byte(leaked[0])) && strings.Contains(fmt.Sprint(fb), leaked[0]) {
		t.Fatal("the reply names a token")
	}

	// Every reported live token is denied; the others still allowed.
	deadline := time.Now().Add(time.Minute)
	for _, tok := range leaked {
		for proxyStatus(t, sys.ProxyURL, tok) == http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatal("a reported token is still allowed a minute later")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, tok := range kept {
		if st := proxyStatus(t, sys.ProxyURL, tok); st != http.StatusOK {
			t.Errorf("a token whose broken copy was reported is answered %d", st)
		}
	}
	// On-call is told where the tokens were found.
	pager.await(t, "naming where a token was found", func(a string) bool {
		return strings.Contains(a, "https://github.com/octo/repo-") && strings.Contains(a, "leaked_public")
	})
	for _, tok := range leaked {
		if strings.Contains(strings.Join(pager.all(), "\n"), tok) {
			t.Fatal("an alert carries a token string")
		}
	}
}
