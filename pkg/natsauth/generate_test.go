package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsrun"
)

func TestGenerateWritesSeedsAndConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	users, err := natsauth.Generate(dir, natsauth.GenerateOptions{Enforcers: []string{"edge-1", "edge-2"}})
	if err != nil {
		t.Fatal(err)
	}
	// Every role but the generic enforcer, and one identity per enforcer.
	if len(users) != len(natsauth.Roles())-1+2 {
		t.Fatalf("%d users, want %d", len(users), len(natsauth.Roles())+1)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v %v, want mode 0700", err, st.Mode().Perm())
	}
	conf, err := os.ReadFile(natsauth.AuthConfPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(natsauth.SeedFile(dir, natsauth.RoleEnforcer)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a generic enforcer seed was written: %v", err)
	}
	for _, u := range users {
		t.Run(u.Name(), func(t *testing.T) {
			if !u.Created {
				t.Error("Created = false for a new seed")
			}
			st, err := os.Stat(u.SeedFile)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("seed mode %v, want 0600", st.Mode().Perm())
			}
			want := natsauth.SeedFile(dir, u.Role)
			if u.Role == natsauth.RoleEnforcer {
				want = natsauth.EnforcerSeedFile(dir, u.Enforcer)
			}
			if u.SeedFile != want {
				t.Errorf("seed at %s, want %s", u.SeedFile, want)
			}
			b, _ := os.ReadFile(u.SeedFile)
			kp, err := nkeys.ParseDecoratedUserNKey(b)
			if err != nil {
				t.Fatalf("seed file does not parse: %v", err)
			}
			if p, _ := kp.PublicKey(); p != u.PublicKey {
				t.Errorf("seed's public key %s, user says %s", p, u.PublicKey)
			}
			seed, _ := kp.Seed()
			if strings.Contains(string(conf), string(seed)) {
				t.Error("auth.conf contains a seed")
			}
			if !strings.Contains(string(conf), u.PublicKey) {
				t.Error("auth.conf does not list the public key")
			}
		})
	}
}

func TestGenerateKeepsSeedsUnlessForced(t *testing.T) {
	dir := t.TempDir()
	all := natsauth.GenerateOptions{Enforcers: []string{"edge-1"}}
	first, err := natsauth.Generate(dir, all)
	if err != nil {
		t.Fatal(err)
	}
	again, err := natsauth.Generate(dir, all)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if again[i].PublicKey != first[i].PublicKey || again[i].Created {
			t.Errorf("%s: re-run changed the key or reports it created", first[i].Name())
		}
	}
	forced, err := natsauth.Generate(dir, natsauth.GenerateOptions{Force: true, Roles: []natsauth.Role{natsauth.RoleEnforcer}, Enforcers: []string{"edge-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var old string
	for _, u := range first {
		if u.Role == natsauth.RoleEnforcer {
			old = u.PublicKey
		}
	}
	if len(forced) != 1 || !forced[0].Created || forced[0].PublicKey == old {
		t.Fatalf("forced enforcer: %+v (old key %s)", forced, old)
	}
	users, err := natsauth.ServerAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 1 || users[0].Nkey != forced[0].PublicKey {
		t.Fatalf("auth.conf lists %d users, want only the rotated enforcer", len(users))
	}
}

func TestGenerateRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{Roles: []natsauth.Role{"root"}}); !errors.Is(err, natsauth.ErrUnknownRole) {
		t.Errorf("unknown role: %v, want ErrUnknownRole", err)
	}
	// The enforcer role exists only per enforcer: a generic one, or an
	// id that is not a subject token (it would widen the usage subject
	// or escape the directory), is refused and nothing is written.
	for name, o := range map[string]natsauth.GenerateOptions{
		"enforcer without an id": {Roles: []natsauth.Role{natsauth.RoleEnforcer}},
		"wildcard id":            {Enforcers: []string{"*"}},
		"multi-token wildcard":   {Enforcers: []string{">"}},
		"dotted id":              {Enforcers: []string{"edge.1"}},
		"path id":                {Enforcers: []string{"../../evil"}},
		"empty id":               {Enforcers: []string{""}},
	} {
		empty := t.TempDir()
		if _, err := natsauth.Generate(empty, o); !errors.Is(err, natsauth.ErrEnforcerID) {
			t.Errorf("%s: %v, want ErrEnforcerID", name, err)
		}
		if entries, _ := os.ReadDir(empty); len(entries) != 0 {
			t.Errorf("%s: wrote %d files", name, len(entries))
		}
	}
	if err := os.WriteFile(natsauth.SeedFile(dir, natsauth.RoleIssuer), []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := natsauth.Generate(dir, natsauth.GenerateOptions{})
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("corrupt existing seed: %v, want an error suggesting --force", err)
	}
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{Force: true}); err != nil {
		t.Errorf("forced over a corrupt seed: %v", err)
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range natsauth.Roles() {
		if got, err := natsauth.ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	if _, err := natsauth.ParseRole("Enforcer"); !errors.Is(err, natsauth.ErrUnknownRole) {
		t.Errorf("ParseRole(Enforcer): %v", err)
	}
}

// TestServerAuthMatchesPermissions: the rendered auth.conf, read back by
// the server's own parser, grants exactly Permissions() for each role and
// EnforcerPermissions for each enforcer.
func TestServerAuthMatchesPermissions(t *testing.T) {
	dir := t.TempDir()
	gen, err := natsauth.Generate(dir, natsauth.GenerateOptions{Enforcers: []string{"edge-1", "edge-2"}})
	if err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.ServerAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != len(gen) {
		t.Fatalf("%d users in auth.conf, generated %d", len(users), len(gen))
	}
	for i, u := range gen {
		t.Run(u.Name(), func(t *testing.T) {
			got := users[i]
			if got.Nkey != u.PublicKey {
				t.Fatalf("user %d is %s, want %s", i, got.Nkey, u.PublicKey)
			}
			want, err := u.Permissions()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Permissions.Publish, want.Publish) {
				t.Errorf("publish:\n got %+v\nwant %+v", got.Permissions.Publish, want.Publish)
			}
			if !reflect.DeepEqual(got.Permissions.Subscribe, want.Subscribe) {
				t.Errorf("subscribe:\n got %+v\nwant %+v", got.Permissions.Subscribe, want.Subscribe)
			}
			if !reflect.DeepEqual(got.Permissions.Response, want.Response) {
				t.Errorf("responses: got %+v, want %+v", got.Permissions.Response, want.Response)
			}
		})
	}
}

// TestPermissionsShape pins the promises of the package doc: who may write
// the ledger, the denylist and the keys, and that every role has a
// private inbox and nothing wider.
func TestPermissionsShape(t *testing.T) {
	const inbox = "_INBOX_TEST"
	writes := map[string][]natsauth.Role{
		"cordon.token.issued.t.x":           {natsauth.RoleIssuer},
		"cordon.token.revoked.t.x":          {natsauth.RoleIssuer, natsauth.RoleRevoker},
		"$KV.denylist.tok.x":                {natsauth.RoleRevoker},
		"$KV.keys.k1":                       {natsauth.RoleIssuer},
		"cordon.usage.t.edge-1":             {natsauth.RoleEnforcer},
		"cordon.usage.t.edge-2":             nil,
		"cordon.usage.t.edge-1.x":           {natsauth.RoleEnforcer},
		"cordon.usage.t.edge-1.x.y":         nil,
		"cordon.usage.part.3.t.edge-1.x":    nil,
		"cordon.usage.t.edge-2.x":           nil,
		"cordon.usage.t":                    nil,
		"cordon.cmd.revoke":                 {natsauth.RoleAdmin},
		"cordon.anomaly.high.t.x":           {natsauth.RoleAuditor},
		"cordon.anomaly.critical.t.x":       {natsauth.RoleAuditor, natsauth.RoleIssuer},
		"cordon.cmd.report-leak":            {natsauth.RoleAdmin},
		"cordon.canary.edge-1":              {natsauth.RoleEnforcer},
		"cordon.canary.edge-2":              nil,
		"$JS.API.STREAM.UPDATE.TOKENS":      nil,
		"$JS.API.STREAM.DELETE.KV_denylist": nil,
		"$JS.API.STREAM.PURGE.USAGE":        nil,
	}
	for _, r := range natsauth.Roles() {
		p, err := natsauth.Permissions(r, inbox)
		if r == natsauth.RoleEnforcer {
			if !errors.Is(err, natsauth.ErrEnforcerID) {
				t.Fatalf("generic enforcer permissions: %v, want ErrEnforcerID", err)
			}
			p, err = natsauth.EnforcerPermissions("edge-1", inbox)
		}
		if err != nil {
			t.Fatal(err)
		}
		for subj, writers := range writes {
			if got, want := allowed(subj, p.Publish.Allow, p.Publish.Deny), slices.Contains(writers, r); got != want {
				t.Errorf("%s may publish %s: %v, want %v", r, subj, got, want)
			}
		}
		if !slices.Contains(p.Subscribe.Allow, inbox+".>") || slices.Contains(p.Subscribe.Allow, "_INBOX.>") || slices.Contains(p.Subscribe.Allow, ">") {
			t.Errorf("%s subscribe allow %v: want its private inbox and no wildcard inbox", r, p.Subscribe.Allow)
		}
	}
	if _, err := natsauth.Permissions(natsauth.RoleAdmin, "_INBOX.>"); err == nil {
		t.Error("a wildcard inbox prefix was accepted")
	}
	if _, err := natsauth.Permissions("root", inbox); !errors.Is(err, natsauth.ErrUnknownRole) {
		t.Errorf("unknown role: %v", err)
	}
}

// allowed is the server's rule: some allow matches and no deny does.
func allowed(subject string, allow, deny []string) bool {
	match := func(patterns []string) bool {
		for _, p := range patterns {
			if subjectMatches(subject, p) {
				return true
			}
		}
		return false
	}
	return match(allow) && !match(deny)
}

func subjectMatches(subject, pattern string) bool {
	st, pt := strings.Split(subject, "."), strings.Split(pattern, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(st) == len(pt)
}

func TestConnectOption(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	f := secured(t, setup{})
	t.Run("sets the private inbox prefix", func(t *testing.T) {
		c := f.connect(t, natsauth.RoleRevoker)
		if got, want := c.nc.Opts.InboxPrefix, natsauth.InboxPrefix(pub(t, f, natsauth.RoleRevoker)); got != want {
			t.Fatalf("inbox prefix %q, want %q", got, want)
		}
		if !strings.HasPrefix(c.nc.NewInbox(), natsauth.InboxPrefix(pub(t, f, natsauth.RoleRevoker))+".") {
			t.Fatalf("new inbox %q", c.nc.NewInbox())
		}
	})
	t.Run("unknown key is refused", func(t *testing.T) {
		other := t.TempDir()
		if _, err := natsauth.Generate(other, natsauth.GenerateOptions{Roles: []natsauth.Role{natsauth.RoleAdmin}}); err != nil {
			t.Fatal(err)
		}
		_, err := nats.Connect(f.srv.ClientURL(), natsauth.ConnectOption(natsauth.SeedFile(other, natsauth.RoleAdmin)), nats.MaxReconnects(0))
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("stranger's key: %v, want authorization violation", err)
		}
	})
	t.Run("no credentials are refused", func(t *testing.T) {
		if _, err := nats.Connect(f.srv.ClientURL(), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("anonymous: %v, want authorization violation", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := nats.Connect(f.srv.ClientURL(), natsauth.ConnectOption(filepath.Join(t.TempDir(), "nope.nk")))
		if err == nil || !strings.Contains(err.Error(), "nope.nk") {
			t.Fatalf("missing seed file: %v", err)
		}
	})
	t.Run("client options", func(t *testing.T) {
		opts, err := natsauth.ClientOptions(natsauth.SeedFile(f.dir, natsauth.RoleAdmin), "", "", "")
		if err != nil || len(opts) != 1 {
			t.Fatalf("ClientOptions: %d options, %v", len(opts), err)
		}
		nc, err := nats.Connect(f.srv.ClientURL(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
		if _, err := natsauth.ClientOptions("", "", "cert.pem", ""); err == nil {
			t.Error("a client certificate without its key was accepted")
		}
		if _, err := natsauth.ClientOptions("", filepath.Join(t.TempDir(), "ca.pem"), "", ""); err == nil {
			t.Error("a missing CA file was accepted")
		}
	})
}

// TestEmbeddedServerWithAuth: natsrun's NkeyUsers option turns
// authentication on for the in-process server as well.
func TestEmbeddedServerWithAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real NATS server; skipped with -short")
	}
	dir := t.TempDir()
	if _, err := natsauth.Generate(dir, natsauth.GenerateOptions{}); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.ServerAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsrun.Start(natsrun.Options{DataDir: t.TempDir(), Port: -1, NkeyUsers: users})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if _, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connection without credentials: %v, want authorization violation", err)
	}
	nc, err := srv.Connect("admin", natsauth.ConnectOption(natsauth.SeedFile(dir, natsauth.RoleAdmin)))
	if err != nil {
		t.Fatalf("in-process admin: %v", err)
	}
	nc.Close()
}
