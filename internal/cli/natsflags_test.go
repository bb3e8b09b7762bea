package cli

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
)

// TestNATSFlagsFindCordonUpCredentials: next to a `cordon up` data
// directory, a command connects as its own identity with no flags; away
// from it, the server's refusal says what to pass.
func TestNATSFlagsFindCordonUpCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	t.Setenv("CORDON_NATS_CREDS", "")
	t.Setenv("CORDON_NATS", "")
	up := t.TempDir()
	creds := filepath.Join(up, DefaultCredsDir)
	if _, err := natsauth.Generate(creds, natsauth.GenerateOptions{Enforcers: []string{"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.ServerAuth(creds)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	stranger := t.TempDir()
	if _, err := natsauth.Generate(stranger, natsauth.GenerateOptions{Roles: []natsauth.Role{natsauth.RoleAdmin}}); err != nil {
		t.Fatal(err)
	}
	parse := func(t *testing.T, identity func() string, args ...string) *natsFlags {
		t.Helper()
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		nf := addNATSFlags(fs, identity)
		if err := fs.Parse(append([]string{"--nats", srv.ClientURL()}, args...)); err != nil {
			t.Fatal(err)
		}
		return nf
	}
	cases := []struct {
		name     string
		dir      string
		identity func() string
		args     []string
		want     string // the public key the server saw, or "" for a refusal
		errHas   []string
	}{
		{name: "admin next to .cordon", dir: up, identity: adminIdentity, want: pubOf(t, natsauth.SeedFile(creds, natsauth.RoleAdmin))},
		{name: "revoker next to .cordon", dir: up, identity: revokerIdentity, want: pubOf(t, natsauth.SeedFile(creds, natsauth.RoleRevoker))},
		{name: "enforcer by its id", dir: up, identity: enforcerIdentity(ptr("edge-1")), want: pubOf(t, natsauth.EnforcerSeedFile(creds, "edge-1"))},
		{name: "explicit flag wins", dir: up, identity: adminIdentity, args: []string{"--nats-creds", natsauth.SeedFile(creds, natsauth.RoleAuditor)},
			want: pubOf(t, natsauth.SeedFile(creds, natsauth.RoleAuditor))},
		{name: "elsewhere: anonymous is refused", dir: t.TempDir(), identity: adminIdentity,
			errHas: []string{"refuses connections without credentials", "--nats-creds", "$CORDON_NATS_CREDS", filepath.Join(DefaultCredsDir, "admin.nk")}},
		{name: "unknown enforcer id: anonymous is refused", dir: up, identity: enforcerIdentity(ptr("edge-9")),
			errHas: []string{"refuses connections without credentials", "enforcer-edge-9.nk"}},
		{name: "a stranger's identity is refused", dir: up, identity: adminIdentity, args: []string{"--nats-creds", natsauth.SeedFile(stranger, natsauth.RoleAdmin)},
			errHas: []string{"refused the identity in " + natsauth.SeedFile(stranger, natsauth.RoleAdmin)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(c.dir)
			nf := parse(t, c.identity, c.args...)
			nc, err := nf.connect("test")
			if c.want == "" {
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("error %v does not wrap the authorization violation", err)
				}
				for _, s := range c.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if got := nc.Opts.Nkey; got != c.want {
				t.Errorf("connected as %s, want %s", got, c.want)
			}
		})
	}
}

func pubOf(t *testing.T, seed string) string {
	t.Helper()
	p, err := natsauth.PublicKeyOf(seed)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ptr(s string) *string { return &s }

// The default identity is only a default: a directory or a missing file
// is not used.
func TestNATSFlagsIdentityMustBeAFile(t *testing.T) {
	t.Setenv("CORDON_NATS_CREDS", "")
	t.Chdir(t.TempDir())
	if err := os.MkdirAll(natsauth.SeedFile(DefaultCredsDir, natsauth.RoleAdmin), 0o700); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	nf := addNATSFlags(fs, adminIdentity)
	if got := nf.credsFile(); got != "" {
		t.Errorf("a directory was taken for credentials: %q", got)
	}
	if got := (&natsFlags{identity: enforcerIdentity(ptr("../x"))}).credsFile(); got != "" {
		t.Errorf("an invalid enforcer id named credentials: %q", got)
	}
}
