package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/revoker"
)

func TestRevokerFlags(t *testing.T) {
	badPolicy := filepath.Join(t.TempDir(), "bad.yaml")
	src := "version: 1\nholders: []\nresponse:\n  rules:\n    - name: x\n      action: revok\n"
	if err := os.WriteFile(badPolicy, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		usage   bool
		wantOut string
		wantErr string
	}{
		{name: "default policy", args: []string{"--policy", "../../testdata/policy/default.yaml", "--check-config"},
			wantOut: "critical→revoke, high-risk→revoke"},
		{name: "response section", args: []string{"--policy", "../../testdata/response/good/full.yaml", "--check-config", "--max-token-ttl", "48h"},
			wantOut: "exfiltration→revoke"},
		{name: "dry run flag", args: []string{"--check-config", "--dry-run", "--slack-webhook", "https://hooks.example/services/secret"},
			wantOut: "dry-run: critical→revoke"},
		{name: "bad response section", args: []string{"--policy", badPolicy, "--check-config"},
			wantErr: "bad.yaml:6: response.rules[0].action: \"revok\" is not one of alert, shadow, narrow, step_up, revoke"},
		{name: "bad webhook", args: []string{"--check-config", "--slack-webhook", "hooks.example/services/secret"},
			usage: true, wantErr: "--slack-webhook"},
		{name: "argument", args: []string{"now"}, usage: true, wantErr: "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, out, _ := testEnv()
			err := runRevoker(context.Background(), env, tc.args)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out.String(), tc.wantOut) {
					t.Fatalf("output %q lacks %q", out.String(), tc.wantOut)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want %q", err, tc.wantErr)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Fatalf("usage error %v, want %v", errors.Is(err, errUsage), tc.usage)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error quotes a credential: %v", err)
			}
		})
	}
}

func TestRevokeFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"none", []string{"--reason", "x"}, "exactly one"},
		{"two", []string{"--token", "a", "--kid", "k", "--reason", "x"}, "exactly one"},
		{"bad holder", []string{"--holder", "acme", "--reason", "x"}, "TENANT/HOLDER"},
		{"before without tenant", []string{"--before", "2026-01-01T00:00:00Z", "--reason", "x"}, "--before needs --tenant"},
		{"bad time", []string{"--before", "yesterday", "--tenant", "acme", "--reason", "x"}, "RFC 3339"},
		{"no reason", []string{"--token", "a"}, "--reason is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, _, _ := testEnv()
			err := runRevoke(context.Background(), env, tc.args)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a usage error with %q", err, tc.want)
			}
		})
	}
}

// TestRevokeCommand runs `cordon revoker` against a real JetStream and
// revokes with `cordon revoke`, which prints the structured reply.
func TestRevokeCommand(t *testing.T) {
	nt := natstest.Run(t)
	now := time.Now()
	signer, err := token.GenerateSigner(now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nt.PublishKey(t, signer)
	mint := func(id string) string {
		c := token.Claims{ID: id, Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:revoke"},
			Audience: []string{"cordon"}, IssuedAt: now.Unix() - 60, NotBefore: now.Unix() - 60, Expiry: now.Add(time.Hour).Unix()}
		s, err := signer.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		recordIssued(t, nt.JS, signer.KeyID, c)
		return s
	}
	adminID := "01940000-0000-7000-8000-00000000ad01"
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(mint(adminID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A token on the ledger to revoke.
	victim := "01940000-0000-7000-8000-0000000000f1"
	ev, _ := events.New("test", now, &events.TokenIssued{TokenID: victim, Tenant: "acme", Holder: "billing", KeyID: signer.KeyID,
		Actor: "issuer", Claims: events.TokenClaims{Scopes: []string{"a:b"}, Audience: []string{"s"}, NotBefore: now, Expiry: now.Add(time.Hour)}})
	b, _ := events.Encode(ev)
	if _, err := nt.JS.Publish(ctx, events.Subject(ev), b); err != nil {
		t.Fatal(err)
	}

	var logs lockedBuffer
	srvEnv := &Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Log: zerolog.New(&logs)}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runRevoker(runCtx, srvEnv, []string{"--nats", nt.Server.ClientURL(), "--source", "revoker/cli-test", "--trust-anchor", nt.Anchor.Public().String()})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("cordon revoker: %v", err)
		}
	})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "revoker started") {
			return fmt.Errorf("revoker not started: %s", logs.String())
		}
		return nil
	})

	revoke := func(args ...string) (revoker.Reply, string, error) {
		env, out, _ := testEnv()
		err := runRevoke(ctx, env, append([]string{"--nats", nt.Server.ClientURL(), "--token-file", tokenFile}, args...))
		var rep revoker.Reply
		if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
			return rep, out.String(), fmt.Errorf("output is not a reply: %v: %q (command error: %v)", jerr, out.String(), err)
		}
		return rep, out.String(), err
	}
	// cordon token restrict / release, before the holder is revoked below.
	cmd := func(run func(context.Context, *Env, []string) error, args ...string) (revoker.RestrictReply, error) {
		env, out, _ := testEnv()
		err := run(ctx, env, append([]string{"--nats", nt.Server.ClientURL(), "--token-file", tokenFile}, args...))
		var rep revoker.RestrictReply
		if out.Len() > 0 {
			if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
				t.Fatalf("output is not a reply: %v: %q", jerr, out.String())
			}
		}
		return rep, err
	}
	for _, bad := range [][]string{
		{"--token", victim, "--reason", "x"},                                          // no step
		{"--token", victim, "--narrow", "--step-up", "--reason", "x"},                 // two steps
		{"--token", victim, "--step-up", "--networks", "10.0.0.0/8", "--reason", "x"}, // networks on a step-up
		{"--narrow", "--networks", "10.0.0.0/8", "--reason", "x"},                     // no token
		{"--token", victim, "--step-up"},                                              // no reason
	} {
		if _, err := cmd(runTokenRestrict, bad...); !errors.Is(err, errUsage) {
			t.Errorf("token restrict %v: %v, want a usage error", bad, err)
		}
	}
	rr, err := cmd(runTokenRestrict, "--token", victim, "--narrow", "--networks", "10.20.0.0/16, 192.0.2.7", "--for", "30m", "--reason", "odd use")
	if err != nil || !rr.OK || rr.Step != events.StepNarrow || len(rr.Networks) != 2 || rr.Networks[1] != "192.0.2.7/32" {
		t.Fatalf("token restrict: %+v %v", rr, err)
	}
	if rr, err := cmd(runTokenRestrict, "--token", victim, "--narrow", "--reason", "no networks"); err == nil || rr.OK || rr.Code != revoker.CodeBadRequest {
		t.Fatalf("narrowing a token without networks: %+v %v", rr, err)
	}
	if rr, err := cmd(runTokenRelease, "--token", victim, "--reason", "false alarm"); err != nil || !rr.OK || len(rr.Released) != 1 {
		t.Fatalf("token release: %+v %v", rr, err)
	}
	if rr, err := cmd(runTokenRelease, "--token", victim, "--reason", "again"); err == nil || rr.Code != revoker.CodeNotFound {
		t.Fatalf("second release: %+v %v", rr, err)
	}

	rep, out, err := revoke("--token", victim, "--reason", "found in a paste", "--idempotency-key", "k1")
	if err != nil || !rep.OK || len(rep.Revoked) != 1 || rep.Revoked[0] != victim {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	rep, out, err = revoke("--holder", "acme/billing", "--reason", "holder compromised")
	if err != nil || !rep.OK || len(rep.Already) != 1 || len(rep.Rules) != 1 || rep.Rules[0] != "holder.acme.billing" {
		t.Fatalf("revoke holder: %v\n%s", err, out)
	}
	rep, out, err = revoke("--before", now.Format(time.RFC3339), "--tenant", "acme", "--reason", "rotation drill")
	if err != nil || !rep.OK || len(rep.Rules) != 1 || rep.Rules[0] != "before.acme" {
		t.Fatalf("revoke before: %v\n%s", err, out)
	}
	// A refusal is printed too, and is an error.
	if err := os.WriteFile(tokenFile, []byte("cordon_not-a-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, out, err = revoke("--tenant", "acme", "--reason", "x")
	if err == nil || rep.OK || rep.Code != revoker.CodeUnauthorized {
		t.Fatalf("bad token: %v\n%s", err, out)
	}
	if strings.Contains(logs.String(), "cordon_") {
		t.Fatal("a token string appears in the revoker's logs")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recordIssued records a token on the ledger the way the issuer does.
func recordIssued(t *testing.T, js jetstream.JetStream, kid string, c token.Claims) {
	t.Helper()
	e, err := events.New("issuer/test", time.Unix(c.IssuedAt, 0), &events.TokenIssued{TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder,
		KeyID: kid, Claims: adminauth.LedgerClaims(c), Actor: "issuer:test", BreakGlass: c.BreakGlass})
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, events.Subject(e), b); err != nil {
		t.Fatal(err)
	}
}
