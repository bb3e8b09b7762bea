package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
)

const testPolicy = "../../testdata/policy/default.yaml"

type cliHarness struct {
	t         *testing.T
	env       *natstest.Env
	iss       *issuer.Issuer
	api       string
	tokenFile string
}

func newCLIHarness(t *testing.T) *cliHarness {
	t.Helper()
	pol, err := policy.Load(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	env := natstest.Run(t)
	iss, err := issuer.New(issuer.Options{NC: env.NC, JS: env.JS, DataDir: t.TempDir(), Policy: pol,
		Logger: zerolog.Nop(), Listen: "127.0.0.1:0", TickInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := iss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	return &cliHarness{t: t, env: env, iss: iss, api: "http://" + iss.Addr(), tokenFile: iss.AdminTokenPath()}
}

// run runs a command function with the harness's API flags appended.
func (h *cliHarness) run(fn func(context.Context, *Env, []string) error, args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb, Log: zerolog.Nop()}
	args = append(args, "--api", h.api, "--token-file", h.tokenFile)
	err = fn(context.Background(), env, args)
	return out.String(), errb.String(), err
}

func (h *cliHarness) keyring() *token.Keyring {
	h.t.Helper()
	ring := token.NewKeyring()
	keys, err := h.iss.Keys(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, k := range keys {
		if err := ring.Add(k.KeyID, k.PublicKey); err != nil {
			h.t.Fatal(err)
		}
	}
	return ring
}

func TestTokenCommands(t *testing.T) {
	h := newCLIHarness(t)

	out, errOut, err := h.run(runToken, "issue", "--tenant", "acme", "--holder", "billing-api",
		"--scope", "invoices:read,customers:read", "--network", "10.20.1.0/24", "--env", "prod",
		"--window", "mon,wed 08:00-18:00 Europe/Paris", "--ttl", "1h")
	if err != nil {
		t.Fatalf("issue: %v\n%s", err, errOut)
	}
	tokStr := strings.TrimSpace(out)
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(tokStr, token.Prefix) {
		t.Fatalf("stdout must hold exactly the token, got %q", out)
	}
	tok, err := h.keyring().Verify(tokStr)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.Scopes) != 2 || tok.Networks[0].String() != "10.20.1.0/24" || tok.Windows[0].Zone != "Europe/Paris" ||
		tok.Expiry-tok.NotBefore != 3600 {
		t.Errorf("claims = %+v", tok.Claims)
	}
	for _, want := range []string{"issued token " + tok.ID + " for acme/billing-api", "invoices:read, customers:read",
		"mon,wed 08:00-18:00 Europe/Paris", "(1h)"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("summary lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, tokStr) {
		t.Error("the token is repeated on stderr")
	}

	// -o json, flags after the subcommand's arguments
	out, _, err = h.run(runToken, "issue", "--tenant", "globex", "--holder", "inventory-svc", "--scope", "stock:read", "--env", "staging", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res issuer.IssueResponse
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Token == "" || res.Claims.Environment != "staging" {
		t.Fatalf("json issue = %s (%v)", out, err)
	}

	out, _, err = h.run(runToken, "list", "--tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, tok.ID) || strings.Contains(out, res.ID) || !strings.Contains(out, "active") {
		t.Fatalf("list:\n%s", out)
	}

	out, errOut, err = h.run(runToken, "rotate", tok.ID, "--grace", "5m")
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, errOut)
	}
	succ, err := h.keyring().Verify(strings.TrimSpace(out))
	if err != nil || succ.ID == tok.ID {
		t.Fatalf("rotate printed %q: %v", out, err)
	}
	if !strings.Contains(errOut, "rotated "+tok.ID+" → "+succ.ID) || !strings.Contains(errOut, "stays valid until") {
		t.Errorf("rotate summary:\n%s", errOut)
	}

	out, _, err = h.run(runToken, "inspect", tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"token " + tok.ID + " for acme/billing-api: rotated", "successor " + succ.ID, "token.issued", "token.rotated"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	out, _, err = h.run(runToken, "inspect", succ.ID, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var d issuer.TokenDetail
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.RotatedFrom != tok.ID {
		t.Fatalf("inspect json: %s (%v)", out, err)
	}
	if strings.Contains(out, token.Prefix) {
		t.Error("inspect shows a token string")
	}
}

func TestTokenCommandErrors(t *testing.T) {
	h := newCLIHarness(t)
	tests := []struct {
		name    string
		args    []string
		usage   bool
		want    string
		setup   func(h *cliHarness)
		restore func(h *cliHarness)
	}{
		{name: "exceeds ceiling", args: []string{"issue", "--tenant", "acme", "--holder", "billing-api", "--scope", "invoices:delete"},
			want: `scope "invoices:delete" is not in the ceiling of acme/billing-api`},
		{name: "exceeds ceiling status", args: []string{"issue", "--tenant", "acme", "--holder", "billing-api", "--scope", "invoices:read", "--ttl", "48h"},
			want: "(HTTP 422, exceeds_ceiling)"},
		{name: "missing scope", args: []string{"issue", "--tenant", "acme", "--holder", "billing-api"}, usage: true, want: "at least one --scope"},
		{name: "bad window", args: []string{"issue", "--tenant", "acme", "--holder", "x", "--scope", "a:b", "--window", "mon 8-9"}, usage: true, want: "window"},
		{name: "bad ttl", args: []string{"issue", "--tenant", "acme", "--holder", "x", "--scope", "a:b", "--ttl", "soon"}, usage: true, want: "--ttl"},
		{name: "bad output", args: []string{"list", "-o", "yaml"}, usage: true, want: "-o"},
		{name: "inspect without id", args: []string{"inspect"}, usage: true, want: "the token ID"},
		{name: "unknown subcommand", args: []string{"mint"}, usage: true, want: `unknown subcommand "mint"`},
		{name: "not found", args: []string{"inspect", "nope"}, want: "(HTTP 404, not_found)"},
		{name: "no token file", args: []string{"list"}, want: "does not exist",
			setup: func(h *cliHarness) { h.tokenFile = filepath.Join(h.t.TempDir(), "missing.token") }},
		{name: "wrong token", args: []string{"list"}, want: "(HTTP 401, unauthenticated)",
			setup: func(h *cliHarness) {
				h.tokenFile = filepath.Join(h.t.TempDir(), "bad.token")
				if err := os.WriteFile(h.tokenFile, []byte("cordon_nonsense\n"), 0o600); err != nil {
					h.t.Fatal(err)
				}
			}},
		{name: "api down", args: []string{"list"}, want: "cannot reach the issuer API",
			setup: func(h *cliHarness) { h.api = "http://127.0.0.1:1" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saved := *h
			defer func() { *h = saved }()
			if tt.setup != nil {
				tt.setup(h)
			}
			_, _, err := h.run(runToken, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, errUsage) != tt.usage {
				t.Errorf("usage error = %v, want %v: %v", errors.Is(err, errUsage), tt.usage, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestKeyCommands(t *testing.T) {
	h := newCLIHarness(t)
	keys, err := h.iss.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	oldKID := keys[0].KeyID
	out, _, err := h.run(runKey, "rotate")
	if err != nil {
		t.Fatal(err)
	}
	newKID := strings.TrimSpace(out)
	if newKID == oldKID || !strings.HasPrefix(newKID, "k") {
		t.Fatalf("rotate printed %q", out)
	}
	out, _, err = h.run(runKey, "list")
	if err != nil {
		t.Fatal(err)
	}
	// One active key, both accepted (endorsed by the trust anchor).
	if !strings.Contains(out, oldKID) || !strings.Contains(out, newKID) || strings.Count(out, "yes") != 3 {
		t.Fatalf("key list:\n%s", out)
	}
	if _, _, err := h.run(runKey, "retire", newKID); err == nil || !strings.Contains(err.Error(), "active signing key") {
		t.Fatalf("retire the active key: %v", err)
	}
	_, errOut, err := h.run(runKey, "retire", oldKID, "--reason", "test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "retired") || !strings.Contains(errOut, "new one") {
		t.Errorf("retire summary: %s", errOut)
	}
	// the token file now holds the renewed admin token: the CLI keeps working
	out, _, err = h.run(runKey, "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list issuer.KeyList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Keys) != 1 || list.Keys[0].KeyID != newKID {
		t.Fatalf("keys after retire: %s (%v)", out, err)
	}
}

func TestIssuerCommand(t *testing.T) {
	t.Run("check-config", func(t *testing.T) {
		var out bytes.Buffer
		env := &Env{Stdout: &out, Stderr: &out, Log: zerolog.Nop()}
		if err := runIssuer(context.Background(), env, []string{"--policy", testPolicy, "--check-config"}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "ok (7 holders") {
			t.Errorf("check-config printed %q", out.String())
		}
		err := runIssuer(context.Background(), env, []string{"--policy", "../../testdata/policy/bad/bad-cidr.yaml", "--check-config"})
		if err == nil || !strings.Contains(err.Error(), `bad-cidr.yaml:9: holders[0].networks[1]: "10.0.0.0/33" is not a CIDR`) {
			t.Fatalf("bad policy: %v", err)
		}
		for _, args := range [][]string{{"--check-config"}, {"--policy", testPolicy, "--listen", "nope"}, {"--policy", testPolicy, "--admin-ttl", "1s"}} {
			if err := runIssuer(context.Background(), env, args); !errors.Is(err, errUsage) {
				t.Errorf("%v: %v, want a usage error", args, err)
			}
		}
	})

	t.Run("standalone", func(t *testing.T) {
		dir := t.TempDir()
		srv, err := natstestServer(t)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		env := &Env{Stdout: io.Discard, Stderr: io.Discard, Log: zerolog.Nop()}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- runIssuer(ctx, env, []string{"--nats", srv.Server.ClientURL(), "--data", dir, "--policy", testPolicy, "--listen", addr, "--grace", "1m"})
		}()
		natstest.WaitFor(t, 10*time.Second, func() error {
			select {
			case err := <-done:
				t.Fatalf("issuer exited early: %v", err)
			default:
			}
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("healthz %d", resp.StatusCode)
			}
			return nil
		})
		h := &cliHarness{t: t, api: "http://" + addr, tokenFile: filepath.Join(dir, issuer.AdminTokenFile)}
		if out, _, err := h.run(runToken, "issue", "--tenant", "initech", "--holder", "tps-cron", "--scope", "reports:read", "--ttl", "1h"); err != nil || !strings.HasPrefix(out, token.Prefix) {
			t.Fatalf("issue against the standalone issuer: %q %v", out, err)
		}
		for _, name := range []string{events.StreamAnomalies, "KV_" + events.BucketKeys} {
			if _, err := srv.JS.Stream(context.Background(), name); err != nil {
				t.Errorf("stream %s was not created: %v", name, err)
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("issuer exited with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("issuer did not stop")
		}
	})
}

// natstestServer starts JetStream with one stream and one bucket deleted,
// so that the command must create what is missing.
func natstestServer(t *testing.T) (*natstest.Env, error) {
	t.Helper()
	env := natstest.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := env.JS.DeleteKeyValue(ctx, events.BucketKeys); err != nil {
		return nil, err
	}
	if err := env.JS.DeleteStream(ctx, events.StreamAnomalies); err != nil {
		return nil, err
	}
	return env, nil
}

// TestTokenFlagsCheckedFirst: a bad --api is a usage error (exit status 2)
// even when the admin token file is missing too: flags are checked before
// anything is read.
func TestTokenFlagsCheckedFirst(t *testing.T) {
	for _, args := range [][]string{
		{"list", "--api", "ftp://127.0.0.1:7400", "--token-file", "/nonexistent/admin.token"},
		{"list", "-o", "yaml", "--token-file", "/nonexistent/admin.token"},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"token"}, args...), &out, &errb)
		if code != 2 || strings.Contains(errb.String(), "admin token file") {
			t.Errorf("cordon token %v: exit status %d, want 2 for the flag\n%s", args, code, errb.String())
		}
	}
}
