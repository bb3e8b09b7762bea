package up_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// TestForgedAdminTokensEverywhere replays issue 8's takeover on `cordon
// up`: the issuer's signing key is read from its data directory, admin
// tokens are minted with it outside the issuer — (a) a fresh id with
// admin scopes, (b) the bootstrap admin token's id with cordon:* and a
// year more of life, (c) a cordon:read token's id with cordon:* — and each
// is refused by the issuer's HTTP API and NATS commands, the revoker's
// cordon.cmd.revoke and the auditor's analyst API. Nothing is minted or
// revoked; the genuine admin token works everywhere.
func TestForgedAdminTokensEverywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	sys, err := up.Start(ctx, up.Options{DataDir: dir, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "forged", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	api := "http://" + sys.Issuer.Addr()
	b, err := os.ReadFile(filepath.Join(dir, issuer.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(b))

	httpDo := func(method, path, tok string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
		req, _ := http.NewRequestWithContext(ctx, method, api+path, rd)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, out
	}
	issue := func(req issuer.IssueRequest) issuer.IssueResponse {
		t.Helper()
		status, out := httpDo("POST", "/v1/tokens", admin, req)
		var res issuer.IssueResponse
		if status != http.StatusCreated || json.Unmarshal(out, &res) != nil {
			t.Fatalf("issue: %d %s", status, out)
		}
		return res
	}
	reader := issue(issuer.IssueRequest{Tenant: issuer.AdminTenant, Holder: issuer.AdminHolder, Scopes: []string{issuer.ScopeRead}, TTL: "1h"})
	victim := issue(issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}, TTL: "1h"})

	// The attacker's key, read off the data directory.
	kid, err := os.ReadFile(filepath.Join(dir, "keys", "active"))
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "keys", strings.TrimSpace(string(kid))+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	stolen := token.Signer{KeyID: strings.TrimSpace(string(kid)), Key: priv.(ed25519.PrivateKey)}
	claimsOf := func(tok string) token.Claims {
		u, err := token.Parse(tok)
		if err != nil {
			t.Fatal(err)
		}
		c := u.Claims
		c.Scopes, c.Audience = slices.Clone(c.Scopes), slices.Clone(c.Audience)
		return c
	}
	now := time.Now()
	boot := claimsOf(admin)
	boot.Scopes, boot.Expiry = []string{"cordon:*"}, boot.Expiry+365*24*3600
	read := claimsOf(reader.Token)
	read.Scopes = []string{"cordon:*"}
	forged := map[string]token.Claims{
		"(a) fresh id with admin scopes": {ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:*"},
			Audience: []string{"cordon"}, IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Hour).Unix()},
		"(b) bootstrap id, cordon:*, a year longer": boot,
		"(c) cordon:read token's id as cordon:*":    read,
	}
	for name, c := range forged {
		t.Run(name, func(t *testing.T) {
			tok, err := stolen.Mint(c)
			if err != nil {
				t.Fatal(err)
			}
			if status, out := httpDo("GET", "/v1/tokens", tok, nil); status != http.StatusUnauthorized {
				t.Errorf("issuer HTTP list: %d %s", status, out)
			}
			if status, out := httpDo("POST", "/v1/tokens", tok, issuer.IssueRequest{Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:keys"}}); status != http.StatusUnauthorized {
				t.Errorf("issuer HTTP issue: %d %s", status, out)
			}
			for subj, req := range map[string]issuer.CmdRequest{
				events.SubjectCmdList:  {Auth: tok},
				events.SubjectCmdIssue: {Auth: tok, IdempotencyKey: "x", Issue: &issuer.IssueRequest{Tenant: "acme", Holder: "billing-api", Scopes: []string{"invoices:read"}}},
			} {
				body, _ := json.Marshal(req)
				m, err := sys.NC.RequestWithContext(ctx, subj, body)
				var rep issuer.CmdReply
				if err != nil || json.Unmarshal(m.Data, &rep) != nil || rep.OK || rep.Code != "unauthenticated" {
					t.Errorf("issuer NATS %s: %v %+v", subj, err, rep)
				}
			}
			rep, err := revoker.Call(ctx, sys.NC, revoker.CommandRequest{Auth: tok, Kind: events.RevokeToken, TokenID: victim.ID, Reason: "forged"})
			if err != nil || rep.OK || rep.Code != revoker.CodeUnauthorized {
				t.Errorf("revoker: %v %+v", err, rep)
			}
			cl := auditor.Client{NC: sys.NC, Token: tok}
			if _, err := cl.SQL(ctx, "SELECT count() FROM token_ledger"); !errors.Is(err, auditor.ErrUnauthenticated) {
				t.Errorf("analyst API: %v", err)
			}
		})
	}
	if d, err := sys.Issuer.Inspect(victim.ID); err != nil || d.Status != issuer.StatusActive {
		t.Fatalf("forged tokens revoked the victim: %v %v", d.Status, err)
	}
	list, _ := sys.Issuer.List(issuer.ListFilter{})
	if len(list) != 3 { // bootstrap admin, reader, victim
		t.Fatalf("%d tokens in the registry, want 3: forged tokens minted", len(list))
	}

	// The genuine admin token works everywhere.
	if status, out := httpDo("GET", "/v1/tokens", admin, nil); status != http.StatusOK {
		t.Fatalf("issuer HTTP: %d %s", status, out)
	}
	if _, err := (&auditor.Client{NC: sys.NC, Token: admin}).SQL(ctx, "SELECT count() FROM token_ledger"); err != nil {
		t.Fatalf("analyst API: %v", err)
	}
	rep, err := revoker.Call(ctx, sys.NC, revoker.CommandRequest{Auth: admin, Kind: events.RevokeToken, TokenID: victim.ID, Reason: "drill"})
	if err != nil || !rep.OK || !slices.Equal(rep.Revoked, []string{victim.ID}) {
		t.Fatalf("revoker: %v %+v", err, rep)
	}
}
