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
	if err := runCreds(context.Background(), env, []string{"generate", "--out", dir, "--enforcer", "edge-1,edge-2", "--enforcer", "edge-3"}); err != nil {
		t.Fatal(err)
	}
	seeds := map[string]string{
		"enforcer/edge-1": natsauth.EnforcerSeedFile(dir, "edge-1"),
		"enforcer/edge-2": natsauth.EnforcerSeedFile(dir, "edge-2"),
		"enforcer/edge-3": natsauth.EnforcerSeedFile(dir, "edge-3"),
	}
	for _, r := range []natsauth.Role{natsauth.RoleIssuer, natsauth.RoleAuditor, natsauth.RoleRevoker, natsauth.RoleAdmin} {
		seeds[string(r)] = natsauth.SeedFile(dir, r)
	}
	for name, file := range seeds {
		pub, err := natsauth.PublicKeyOf(file)
		if err != nil {
			t.Fatalf("%s seed: %v", name, err)
		}
		if !strings.Contains(out.String(), name) || !strings.Contains(out.String(), pub) {
			t.Errorf("output does not list %s and its public key", name)
		}
		seed, _ := os.ReadFile(file)
		for _, line := range strings.Split(string(seed), "\n") {
			if strings.HasPrefix(line, "SU") && (strings.Contains(out.String(), line) || strings.Contains(errb.String(), line)) {
				t.Errorf("%s seed printed or logged", name)
			}
		}
	}
	if _, err := os.Stat(natsauth.SeedFile(dir, natsauth.RoleEnforcer)); err == nil {
		t.Error("a generic enforcer seed was written")
	}
	if _, err := natsauth.ServerAuth(dir); err != nil {
		t.Fatalf("auth.conf: %v", err)
	}
	// Re-running keeps the keys.
	env2, out2, _ := credsEnv()
	if err := runCreds(context.Background(), env2, []string{"generate", "--out", dir, "--role", "enforcer,admin", "--enforcer", "edge-1"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out2.String(), "(kept)") || strings.Contains(out2.String(), "(new)") {
		t.Errorf("re-run output:\n%s", out2)
	}
}

// TestCredsGenerateTightensTheDirectory: seeds never land in a directory
// others can list; a wider existing one is made 0700, with a log line.
func TestCredsGenerateTightensTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	env, _, errb := credsEnv()
	if err := runCreds(context.Background(), env, []string{"generate", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v, mode %v, want 0700", err, st.Mode().Perm())
	}
	if !strings.Contains(errb.String(), "tightened to 0700") {
		t.Errorf("no log line about the tightened directory: %s", errb.String())
	}
}

func TestCredsUsageErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"no subcommand":   {},
		"unknown":         {"mint"},
		"no out":          {"generate"},
		"bad role":        {"generate", "--out", "x", "--role", "root"},
		"enforcer no id":  {"generate", "--out", "x", "--role", "enforcer"},
		"wildcard id":     {"generate", "--out", "x", "--enforcer", "*"},
		"dotted id":       {"generate", "--out", "x", "--enforcer", "edge.1"},
		"bad perm id":     {"permissions", "enforcer", "--enforcer", ">"},
		"id of non-enf":   {"permissions", "admin", "--enforcer", "edge-1"},
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

// TestCredsPermissions: an enforcer may publish usage only under its own id
// (the generic "cordon.usage.>" of older versions is gone).
func TestCredsPermissions(t *testing.T) {
	for _, c := range []struct {
		args  []string
		usage string
	}{
		{[]string{"permissions", "enforcer"}, "cordon.usage.*.<enforcer id>"},
		{[]string{"permissions", "enforcer", "--enforcer", "edge-7"}, "cordon.usage.*.edge-7"},
	} {
		env, out, _ := credsEnv()
		if err := runCreds(context.Background(), env, c.args); err != nil {
			t.Fatal(err)
		}
		s := out.String()
		for _, want := range []string{c.usage, "$JS.API.STREAM.INFO.KV_denylist", "_INBOX_<public key>.>", "publish deny:", "cordon.token.revoked.>"} {
			if !strings.Contains(s, want) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, want, s)
			}
		}
		allow := s[:strings.Index(s, "publish deny:")]
		if strings.Contains(allow, "cordon.token.") || strings.Contains(allow, "$KV.denylist") || strings.Contains(allow, "cordon.usage.>") {
			t.Errorf("%v: enforcer publish allow list has ledger, denylist or any-enforcer usage subjects:\n%s", c.args, allow)
		}
	}
}
