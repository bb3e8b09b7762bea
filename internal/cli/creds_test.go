package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/natsauth"
)

func credsEnv() (*Env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &Env{Stdout: &out, Stderr: &errb, Log: zerolog.New(&errb)}, &out, &errb
}

func TestCredsGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	env, out, errb := credsEnv()
	if err := runCreds(context.Background(), env, []string{"generate", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	for _, r := range natsauth.Roles() {
		pub, err := natsauth.PublicKeyOf(natsauth.SeedFile(dir, r))
		if err != nil {
			t.Fatalf("%s seed: %v", r, err)
		}
		if !strings.Contains(out.String(), pub) {
			t.Errorf("output does not list %s's public key", r)
		}
		seed, _ := os.ReadFile(natsauth.SeedFile(dir, r))
		for _, line := range strings.Split(string(seed), "\n") {
			if strings.HasPrefix(line, "SU") && (strings.Contains(out.String(), line) || strings.Contains(errb.String(), line)) {
				t.Errorf("%s seed printed or logged", r)
			}
		}
	}
	if _, err := natsauth.ServerAuth(dir); err != nil {
		t.Fatalf("auth.conf: %v", err)
	}
	// Re-running keeps the keys.
	env2, out2, _ := credsEnv()
	if err := runCreds(context.Background(), env2, []string{"generate", "--out", dir, "--role", "enforcer,admin"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out2.String(), "(kept)") || strings.Contains(out2.String(), "(new)") {
		t.Errorf("re-run output:\n%s", out2)
	}
}

func TestCredsUsageErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"no subcommand":   {},
		"unknown":         {"mint"},
		"no out":          {"generate"},
		"bad role":        {"generate", "--out", "x", "--role", "root"},
		"permissions arg": {"permissions"},
		"unknown role":    {"permissions", "root"},
	} {
		t.Run(name, func(t *testing.T) {
			env, _, _ := credsEnv()
			if err := runCreds(context.Background(), env, args); !errors.Is(err, errUsage) {
				t.Fatalf("%v: %v, want a usage error", args, err)
			}
		})
	}
	env, _, _ := credsEnv()
	if err := runCreds(context.Background(), env, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

func TestCredsPermissions(t *testing.T) {
	env, out, _ := credsEnv()
	if err := runCreds(context.Background(), env, []string{"permissions", "enforcer"}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"cordon.usage.>", "$JS.API.STREAM.INFO.KV_denylist", "_INBOX_<public key>.>", "publish deny:", "cordon.token.revoked.>"} {
		if !strings.Contains(s, want) {
			t.Errorf("permissions output lacks %q:\n%s", want, s)
		}
	}
	allow := s[:strings.Index(s, "publish deny:")]
	if strings.Contains(allow, "cordon.token.") || strings.Contains(allow, "$KV.denylist") {
		t.Errorf("enforcer publish allow list has ledger or denylist subjects:\n%s", allow)
	}
}
