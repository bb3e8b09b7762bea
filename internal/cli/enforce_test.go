package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/token"
)

const demoRoutesFile = "../../testdata/routes/demo.yaml"

// testEnv is an Env writing to buffers (used by the enforce and revoker tests).
// testEnv returns an Env with its stdout and its stderr (where the log
// goes): the log is written by the command's goroutines while the test
// reads it, so it is a goroutine-safe buffer.
func testEnv() (*Env, *bytes.Buffer, *natstest.LogBuffer) {
	var out bytes.Buffer
	errb := new(natstest.LogBuffer)
	return &Env{Stdout: &out, Stderr: errb, Log: zerolog.New(errb)}, &out, errb
}

func TestEnforceFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		usage   bool   // want errUsage
		wantOut string // on success
		wantErr string
	}{
		{name: "check config", args: []string{"--routes", demoRoutesFile, "--upstream", "http://127.0.0.1:9000", "--check-config"},
			wantOut: "service invoices, environment prod, 8 routes"},
		{name: "service override", args: []string{"--routes", demoRoutesFile, "--upstream", "http://127.0.0.1:9000", "--service", "billing", "--check-config"},
			wantOut: "service billing"},
		{name: "no routes", args: []string{"--upstream", "http://x"}, usage: true, wantErr: "--routes is required"},
		{name: "no upstream", args: []string{"--routes", demoRoutesFile}, usage: true, wantErr: "--upstream is required"},
		{name: "bad upstream", args: []string{"--routes", demoRoutesFile, "--upstream", "ftp://x"}, usage: true, wantErr: "--upstream"},
		{name: "bad cidr", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--trusted-proxy", "10.0.0.0/33"}, usage: true, wantErr: "trusted-proxy"},
		{name: "bad id", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--id", "a.b"}, usage: true, wantErr: "--id"},
		{name: "fails closed by default", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--check-config"},
			wantOut: "failing closed when the denylist is older than 10s"},
		{name: "own bound", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--max-staleness", "3s", "--check-config"},
			wantOut: "failing closed when the denylist is older than 3s"},
		{name: "fail open on request", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--fail-closed=false", "--check-config"},
			wantOut: "NOT failing closed"},
		{name: "no bound, fail open", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--fail-closed=false", "--max-staleness", "0", "--check-config"},
			wantOut: "NOT failing closed"},
		{name: "fail closed without bound", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--max-staleness", "0"}, usage: true, wantErr: "--max-staleness"},
		{name: "negative bound", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--max-staleness", "-1s"}, usage: true, wantErr: "--max-staleness"},
		{name: "tls key without cert", args: []string{"--routes", demoRoutesFile, "--upstream", "http://x", "--tls-key", "k.pem"}, usage: true, wantErr: "--tls-cert"},
		{name: "bad routes file", args: []string{"--routes", "../../testdata/routes/bad-method.yaml", "--upstream", "http://x", "--check-config"}, wantErr: "bad-method.yaml:6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, out, _ := testEnv()
			err := runEnforce(context.Background(), env, tc.args)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out.String(), tc.wantOut) {
					t.Fatalf("output %q, want %q", out, tc.wantOut)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Fatalf("usage error %v, want %v: %v", errors.Is(err, errUsage), tc.usage, err)
			}
		})
	}
}

// TestEnforceRun runs `cordon enforce` in-process against a real JetStream
// and an upstream, and sends it an allowed and a denied request.
func TestEnforceRun(t *testing.T) {
	nt := natstest.Run(t)
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nt.PublishKey(t, signer)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Header.Get("X-Cordon-Holder"))
	}))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := mln.Addr().String()
	mln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	env, _, logs := testEnv()
	spoolDir := t.TempDir()
	go func() {
		done <- runEnforce(ctx, env, []string{"--routes", demoRoutesFile, "--upstream", up.URL, "--listen", addr, "--trust-anchor", nt.Anchor.Public().String(),
			"--nats", nt.Server.ClientURL(), "--id", "cli-test", "--metrics-listen", maddr, "--spool-dir", spoolDir})
	}()
	now := time.Now()
	tok, err := signer.Mint(token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "acme", Holder: "worker",
		Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string, error) { return bearerGet("http://"+addr+path, tok) }
	natstest.WaitFor(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("enforce exited: %v\n%s", err, logs)
		default:
		}
		code, body, err := get("/invoices/7")
		if err != nil {
			return err
		}
		if code != 200 || body != "hello worker" {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	})
	if code, body, err := get("/invoices"); err != nil || code != 403 || !strings.Contains(body, "scope_missing") {
		t.Fatalf("list without the scope: %d %s %v", code, body, err)
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(mb), `cordon_enforcer_decisions_total{enforcer="cli-test",service="invoices"}`) ||
		!strings.Contains(string(mb), "cordon_enforcer_cache_capacity") ||
		!strings.Contains(string(mb), `cordon_enforcer_usage_spool_pending{enforcer="cli-test",service="invoices"} 0`) {
		t.Fatalf("metrics:\n%s", mb)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("enforce did not stop")
	}
	if strings.Contains(logs.String(), tok) {
		t.Fatal("the token string was logged")
	}
	if !strings.Contains(logs.String(), "usage spool "+spoolDir+", at most 256MiB") {
		t.Fatalf("the start-up log does not say where the usage spool is:\n%s", logs)
	}
}

// TestEnforceFailsClosedByDefault runs `cordon enforce` with no fail-closed
// flag (only a shorter bound, so the test is quick): it says so at start,
// and once NATS is gone for longer than the bound, a valid token is denied
// with denylist_stale, since a revocation might be missed.
func TestEnforceFailsClosedByDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("stops NATS under a running proxy")
	}
	nt := natstest.Run(t)
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nt.PublishKey(t, signer)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	env, _, logs := testEnv()
	spoolDir := t.TempDir()
	go func() {
		done <- runEnforce(ctx, env, []string{"--routes", demoRoutesFile, "--upstream", up.URL, "--listen", addr, "--trust-anchor", nt.Anchor.Public().String(),
			"--nats", nt.Server.ClientURL(), "--id", "cli-stale", "--max-staleness", "1s", "--spool-dir", spoolDir})
	}()
	now := time.Now()
	tok, err := signer.Mint(token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "acme", Holder: "worker",
		Scopes: []string{"invoices:read"}, Audience: []string{"invoices"}, NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	get := func() (int, string, error) { return bearerGet("http://"+addr+"/invoices/7", tok) }
	natstest.WaitFor(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("enforce exited: %v\n%s", err, logs)
		default:
		}
		if code, body, err := get(); err != nil || code != 200 {
			return fmt.Errorf("got %d %q %v", code, body, err)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "cordon enforce: failing closed when the denylist is older than 1s") {
		t.Fatalf("the bound was not printed at start:\n%s", logs)
	}
	nt.Stop()
	natstest.WaitFor(t, 20*time.Second, func() error {
		code, body, err := get()
		if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "denylist_stale") {
			return fmt.Errorf("with NATS gone: %d %q %v", code, body, err)
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("enforce did not stop")
	}
}

// bearerGet sends GET url with the bearer token and returns the status and
// body.
func bearerGet(url, tok string) (int, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}
