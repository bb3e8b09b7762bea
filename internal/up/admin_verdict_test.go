package up_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/issuer"
	"github.com/cordonhq/cordon/services/revoker"
)

// verdictPolicy lets the issuer mint tokens that look like admin tokens
// without being ones: another tenant's holder with Cordon's scopes and
// audience, and a Cordon holder whose tokens may name another audience.
const verdictPolicy = `version: 1
holders:
  - tenant: acme
    holder: ops
    description: another tenant's operator with Cordon's scopes and audience
    scopes: [cordon:read, cordon:revoke]
    audiences: [cordon]
    max_ttl: 1h
  - tenant: cordon
    holder: bot
    description: a Cordon holder whose tokens may reach another service
    scopes: [cordon:read, cordon:revoke]
    audiences: [cordon, billing]
    max_ttl: 1h
`

// Verdicts of an admin check, as each service reports them.
const (
	accepted        = "accepted"
	unauthenticated = "unauthenticated"
	forbidden       = "forbidden"
)

// TestAdminVerdictsAgree presents the same tokens to every admin check of
// the control plane — the issuer's HTTP API and NATS commands, the
// revoker's cordon.cmd.revoke and the auditor's analyst API, each with the
// scope its operation needs (cordon:read, cordon:revoke) — and requires one
// verdict per token, the same everywhere: the right token is accepted; one
// of another tenant with audience cordon, one without audience cordon and
// one without the scope are forbidden; a revoked one, one the ledger does
// not know and an expired one on the ledger are unauthenticated.
func TestAdminVerdictsAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(verdictPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	sys, err := up.Start(ctx, up.Options{DataDir: dir, PolicyFile: policyFile, NATSPort: -1, IssuerListen: "127.0.0.1:0", ProxyListen: "127.0.0.1:0",
		ChDBPath: chdbPath, Database: "verdicts", Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sys.Close()
	api := "http://" + sys.Issuer.Addr()
	b, err := os.ReadFile(filepath.Join(dir, issuer.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	boot := strings.TrimSpace(string(b))

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
		req.TTL = "1h"
		status, out := httpDo("POST", "/v1/tokens", boot, req)
		var res issuer.IssueResponse
		if status != http.StatusCreated || json.Unmarshal(out, &res) != nil {
			t.Fatalf("issue %s/%s: %d %s", req.Tenant, req.Holder, status, out)
		}
		return res
	}
	both := []string{events.ScopeRead, events.ScopeRevoke}
	right := issue(issuer.IssueRequest{Tenant: events.AdminTenant, Holder: events.AdminHolder, Scopes: both})
	otherTenant := issue(issuer.IssueRequest{Tenant: "acme", Holder: "ops", Scopes: both, Audience: []string{events.AdminAudience}})
	otherAudience := issue(issuer.IssueRequest{Tenant: events.AdminTenant, Holder: "bot", Scopes: both, Audience: []string{"billing"}})
	noScope := issue(issuer.IssueRequest{Tenant: events.AdminTenant, Holder: events.AdminHolder, Scopes: []string{events.ScopeKeys}})
	revoked := issue(issuer.IssueRequest{Tenant: events.AdminTenant, Holder: events.AdminHolder, Scopes: both})
	if rep, err := revoker.Call(ctx, sys.NC, revoker.CommandRequest{Auth: boot, Kind: events.RevokeToken, TokenID: revoked.ID, Reason: "test"}); err != nil || !rep.OK {
		t.Fatalf("revoke: %v %+v", err, rep)
	}

	// Tokens the issuer would not mint, made with its signing key as read
	// off the data directory: one it never recorded, and one recorded on
	// the ledger (with the issuer's NATS identity) that expired.
	stolen := signingKey(t, dir)
	now := time.Now()
	claims := func(nbf, exp time.Time) token.Claims {
		return token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: events.AdminTenant, Holder: events.AdminHolder, Scopes: both,
			Audience: []string{events.AdminAudience}, IssuedAt: nbf.Unix(), NotBefore: nbf.Unix(), Expiry: exp.Unix()}
	}
	mint := func(c token.Claims) string {
		tok, err := stolen.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	unknown := mint(claims(now.Add(-time.Minute), now.Add(time.Hour)))
	expiredClaims := claims(now.Add(-2*time.Hour), now.Add(-time.Hour))
	expired := mint(expiredClaims)
	inc, err := sys.Connect("verdict-test-issuer", sys.CredsFile(natsauth.RoleIssuer))
	if err != nil {
		t.Fatal(err)
	}
	defer inc.Close()
	ijs, err := jetstream.New(inc)
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.New("issuer/test", time.Unix(expiredClaims.IssuedAt, 0), &events.TokenIssued{TokenID: expiredClaims.ID,
		Tenant: expiredClaims.Tenant, Holder: expiredClaims.Holder, KeyID: stolen.KeyID, Claims: adminauth.LedgerClaims(expiredClaims), Actor: "issuer:test"})
	if err != nil {
		t.Fatal(err)
	}
	eb, _ := events.Encode(e)
	if _, err := ijs.Publish(ctx, events.Subject(e), eb, jetstream.WithMsgID(e.MsgID())); err != nil {
		t.Fatalf("record the expired token: %v", err)
	}

	judges := []struct {
		name  string
		judge func(tok string) (string, error)
	}{
		{"issuer HTTP", func(tok string) (string, error) {
			status, out := httpDo("GET", "/v1/tokens", tok, nil)
			switch status {
			case http.StatusOK:
				return accepted, nil
			case http.StatusUnauthorized:
				return unauthenticated, nil
			case http.StatusForbidden:
				return forbidden, nil
			}
			return "", fmt.Errorf("status %d: %s", status, out)
		}},
		{"issuer NATS", func(tok string) (string, error) {
			body, _ := json.Marshal(issuer.CmdRequest{Auth: tok})
			m, err := sys.NC.RequestWithContext(ctx, events.SubjectCmdList, body)
			if err != nil {
				return "", err
			}
			var rep issuer.CmdReply
			if err := json.Unmarshal(m.Data, &rep); err != nil {
				return "", err
			}
			switch {
			case rep.OK:
				return accepted, nil
			case rep.Code == "unauthenticated", rep.Code == "forbidden":
				return rep.Code, nil
			}
			return "", fmt.Errorf("reply %+v", rep)
		}},
		{"revoker", func(tok string) (string, error) {
			// A token id nobody issued: an accepted caller gets not_found,
			// and nothing is revoked.
			rep, err := revoker.Call(ctx, sys.NC, revoker.CommandRequest{Auth: tok, Kind: events.RevokeToken,
				TokenID: uuid.Must(uuid.NewV7()).String(), Reason: "verdict test"})
			switch {
			case err != nil:
				return "", err
			case rep.Code == revoker.CodeNotFound:
				return accepted, nil
			case rep.Code == revoker.CodeUnauthorized:
				return unauthenticated, nil
			case rep.Code == revoker.CodeForbidden:
				return forbidden, nil
			}
			return "", fmt.Errorf("reply %+v", rep)
		}},
		{"auditor", func(tok string) (string, error) {
			_, err := (&auditor.Client{NC: sys.NC, Token: tok}).SQL(ctx, "SELECT count() FROM token_ledger")
			switch {
			case err == nil:
				return accepted, nil
			case errors.Is(err, auditor.ErrUnauthenticated):
				return unauthenticated, nil
			case errors.Is(err, auditor.ErrForbidden):
				return forbidden, nil
			}
			return "", err
		}},
	}
	for _, tt := range []struct {
		name, token, want string
	}{
		{"the right token", right.Token, accepted},
		{"another tenant, audience cordon", otherTenant.Token, forbidden},
		{"tenant cordon, another audience", otherAudience.Token, forbidden},
		{"without the operation's scope", noScope.Token, forbidden},
		{"revoked", revoked.Token, unauthenticated},
		{"unknown to the ledger", unknown, unauthenticated},
		{"expired, on the ledger", expired, unauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			verdicts := map[string]string{}
			for _, j := range judges {
				v, err := j.judge(tt.token)
				if err != nil {
					t.Fatalf("%s: %v", j.name, err)
				}
				verdicts[j.name] = v
			}
			for name, v := range verdicts {
				if v != tt.want {
					t.Errorf("verdicts %v: %s says %s, want %s everywhere", verdicts, name, v, tt.want)
				}
			}
		})
	}
}

// signingKey reads the issuer's active signing key off its data directory,
// as an attacker with the disk would.
func signingKey(t *testing.T, dir string) token.Signer {
	t.Helper()
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
	return token.Signer{KeyID: strings.TrimSpace(string(kid)), Key: priv.(ed25519.PrivateKey)}
}
