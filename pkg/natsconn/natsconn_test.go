package natsconn_test

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
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/natsrun"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

var (
	adminIdentity   = natsconn.RoleIdentity(natsauth.RoleAdmin)
	revokerIdentity = natsconn.RoleIdentity(natsauth.RoleRevoker)
)

func ptr(s string) *string { return &s }

// TestRegisterFlags: a full command line, and the environment variables
// under it, give the Config expected.
func TestRegisterFlags(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want natsconn.Config
	}{
		{name: "defaults", want: natsconn.Config{URL: nats.DefaultURL}},
		{name: "environment", env: map[string]string{"CORDON_NATS": "nats://a:4222", "CORDON_NATS_CREDS": "s.nk", "CORDON_NATS_CA": "ca.pem",
			"CORDON_NATS_CERT": "c.pem", "CORDON_NATS_KEY": "k.pem"},
			want: natsconn.Config{URL: "nats://a:4222", Creds: "s.nk", CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}},
		{name: "flags over environment", env: map[string]string{"CORDON_NATS": "nats://a:4222", "CORDON_NATS_CREDS": "s.nk"},
			args: []string{"--nats", "tls://n1:4222,tls://n2:4222", "--nats-creds", "/run/nats.nk", "--nats-ca", "/run/ca.pem",
				"--nats-cert", "/run/client.pem", "--nats-key", "/run/client-key.pem"},
			want: natsconn.Config{URL: "tls://n1:4222,tls://n2:4222", Creds: "/run/nats.nk", CA: "/run/ca.pem", Cert: "/run/client.pem", Key: "/run/client-key.pem"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range []string{"CORDON_NATS", "CORDON_NATS_CREDS", "CORDON_NATS_CA", "CORDON_NATS_CERT", "CORDON_NATS_KEY"} {
				t.Setenv(v, c.env[v])
			}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			var got natsconn.Config
			got.RegisterFlags(fs, adminIdentity)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			if got.Identity == nil {
				t.Error("the identity was not kept")
			}
			got.Identity = nil
			if got.URL != c.want.URL || got.Creds != c.want.Creds || got.CA != c.want.CA || got.Cert != c.want.Cert || got.Key != c.want.Key {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestDialFindsCordonUpCredentials: next to a `cordon up` data directory,
// a command connects as its own identity with no flags; away from it, the
// server's refusal says what to pass.
func TestDialFindsCordonUpCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	t.Setenv("CORDON_NATS_CREDS", "")
	t.Setenv("CORDON_NATS", "")
	up := t.TempDir()
	creds := filepath.Join(up, natsconn.DefaultCredsDir)
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
	parse := func(t *testing.T, identity func() string, args ...string) natsconn.Config {
		t.Helper()
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var c natsconn.Config
		c.RegisterFlags(fs, identity)
		if err := fs.Parse(append([]string{"--nats", srv.ClientURL()}, args...)); err != nil {
			t.Fatal(err)
		}
		return c
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
		{name: "enforcer by its id", dir: up, identity: natsconn.EnforcerIdentity(ptr("edge-1")), want: pubOf(t, natsauth.EnforcerSeedFile(creds, "edge-1"))},
		{name: "explicit flag wins", dir: up, identity: adminIdentity, args: []string{"--nats-creds", natsauth.SeedFile(creds, natsauth.RoleAuditor)},
			want: pubOf(t, natsauth.SeedFile(creds, natsauth.RoleAuditor))},
		{name: "elsewhere: anonymous is refused", dir: t.TempDir(), identity: adminIdentity,
			errHas: []string{"refuses connections without credentials", "--nats-creds", "$CORDON_NATS_CREDS", filepath.Join(natsconn.DefaultCredsDir, "admin.nk")}},
		{name: "unknown enforcer id: anonymous is refused", dir: up, identity: natsconn.EnforcerIdentity(ptr("edge-9")),
			errHas: []string{"refuses connections without credentials", "enforcer-edge-9.nk"}},
		{name: "a stranger's identity is refused", dir: up, identity: adminIdentity, args: []string{"--nats-creds", natsauth.SeedFile(stranger, natsauth.RoleAdmin)},
			errHas: []string{"refused the identity in " + natsauth.SeedFile(stranger, natsauth.RoleAdmin)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(c.dir)
			cfg := parse(t, c.identity, c.args...)
			cfg.Name = "test"
			nc, err := natsconn.Dial(cfg)
			if c.want == "" {
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("error %v does not wrap the authorization violation", err)
				}
				if errors.Is(err, svcconfig.ErrInvalid) {
					t.Errorf("a refusal by the server is not a configuration mistake: %v", err)
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
			if nc.Opts.MaxReconnect != -1 {
				t.Errorf("MaxReconnect %d: a service must reconnect forever", nc.Opts.MaxReconnect)
			}
			if nc.Opts.Name != "test" {
				t.Errorf("connection name %q", nc.Opts.Name)
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

// The default identity is only a default: a directory or a missing file
// is not used.
func TestIdentityMustBeAFile(t *testing.T) {
	t.Setenv("CORDON_NATS_CREDS", "")
	t.Chdir(t.TempDir())
	if err := os.MkdirAll(natsauth.SeedFile(natsconn.DefaultCredsDir, natsauth.RoleAdmin), 0o700); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var c natsconn.Config
	c.RegisterFlags(fs, adminIdentity)
	if got := c.CredsFile(); got != "" {
		t.Errorf("a directory was taken for credentials: %q", got)
	}
	if got := (&natsconn.Config{Identity: natsconn.EnforcerIdentity(ptr("../x"))}).CredsFile(); got != "" {
		t.Errorf("an invalid enforcer id named credentials: %q", got)
	}
}

// TestDialConfigurationMistakes: what is wrong in the configuration
// itself is reported as such (a command exits with a usage error), naming
// the file, and no connection is attempted.
func TestDialConfigurationMistakes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.nk")
	cases := []struct {
		name string
		c    natsconn.Config
		want string
	}{
		{"no url", natsconn.Config{}, "--nats is empty"},
		{"missing credentials", natsconn.Config{URL: "nats://127.0.0.1:1", Creds: missing}, "nats credentials: stat " + missing},
		{"missing CA", natsconn.Config{URL: "nats://127.0.0.1:1", CA: missing}, "nats tls: CA"},
		{"certificate without key", natsconn.Config{URL: "nats://127.0.0.1:1", Cert: missing}, "needs both the certificate and the key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nc, err := natsconn.Dial(c.c)
			if err == nil {
				nc.Close()
				t.Fatal("dialled")
			}
			if !errors.Is(err, svcconfig.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want a configuration mistake with %q", err, c.want)
			}
		})
	}
}

// TestDialUnreachable: no server at the address is not a configuration
// mistake, and the error says where it looked.
func TestDialUnreachable(t *testing.T) {
	nc, err := natsconn.Dial(natsconn.Config{URL: "nats://127.0.0.1:1", Options: []nats.Option{nats.MaxReconnects(0)}})
	if err == nil {
		nc.Close()
		t.Fatal("connected to nothing")
	}
	if errors.Is(err, svcconfig.ErrInvalid) || !errors.Is(err, nats.ErrNoServers) || !strings.Contains(err.Error(), "nats://127.0.0.1:1") {
		t.Errorf("error %v", err)
	}
}
