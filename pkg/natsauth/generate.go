package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/cordonhq/cordon/pkg/privdir"
)

// AuthConfFile is the name of the nats-server configuration include that
// Generate writes next to the seeds.
const AuthConfFile = "auth.conf"

// CredsSubdir is the directory, inside a Cordon data directory, where the
// embedded system (`cordon up`) keeps the identities it generates for its
// services and for the CLI, and where the CLI looks for them.
const CredsSubdir = "creds"

// SeedFile returns the path of role's seed file in dir: DIR/<role>.nk.
// Enforcers have one seed each: EnforcerSeedFile.
func SeedFile(dir string, r Role) string { return filepath.Join(dir, string(r)+".nk") }

// EnforcerSeedFile returns the path of the seed file of the enforcer with
// id in dir: DIR/enforcer-<id>.nk.
func EnforcerSeedFile(dir, id string) string {
	return filepath.Join(dir, string(RoleEnforcer)+"-"+id+".nk")
}

// AuthConfPath returns the path of the configuration include in dir.
func AuthConfPath(dir string) string { return filepath.Join(dir, AuthConfFile) }

// User is one generated NATS identity. It never holds the seed.
type User struct {
	Role Role
	// Enforcer is the enforcer id of an enforcer identity (Role is
	// RoleEnforcer), empty for the other roles.
	Enforcer string
	// PublicKey is the NKey user public key ("U…"), the server's view of
	// the identity.
	PublicKey string
	// SeedFile is where the private seed was written (mode 0600).
	SeedFile string
	// Created is false when an existing seed file was kept.
	Created bool
}

// Name is the identity's name in listings and logs: the role, or
// "enforcer/<id>" for an enforcer.
func (u User) Name() string {
	if u.Role == RoleEnforcer {
		return string(RoleEnforcer) + "/" + u.Enforcer
	}
	return string(u.Role)
}

// Permissions returns the user's NATS permissions.
func (u User) Permissions() (*server.Permissions, error) {
	if u.Role == RoleEnforcer {
		return EnforcerPermissions(u.Enforcer, InboxPrefix(u.PublicKey))
	}
	return Permissions(u.Role, InboxPrefix(u.PublicKey))
}

// GenerateOptions tunes Generate.
type GenerateOptions struct {
	// Roles to generate; when empty, every role but the enforcer (issuer,
	// auditor, revoker, admin). The enforcer role has no identity of its
	// own: naming it requires Enforcers.
	Roles []Role
	// Enforcers are the ids of the enforcer identities to generate, one
	// seed each (EnforcerSeedFile), each allowed to publish usage only
	// under its own id. auth.conf lists exactly Roles and Enforcers.
	Enforcers []string
	// Force replaces existing seed files with new keys (key rotation);
	// by default an existing, valid seed is kept so that re-running
	// Generate only refreshes auth.conf.
	Force bool
}

// Generate writes a seed file for each role and each enforcer id to dir
// (created 0700 if missing, tightened to 0700 if wider) and the server
// include auth.conf listing every identity's public key and permissions.
// Existing seeds are kept unless o.Force. The seeds are written with mode
// 0600 and are never returned or logged.
func Generate(dir string, o GenerateOptions) ([]User, error) {
	roles := o.Roles
	if len(roles) == 0 {
		for _, r := range Roles() {
			if r != RoleEnforcer {
				roles = append(roles, r)
			}
		}
	}
	for _, r := range roles {
		if _, err := ParseRole(string(r)); err != nil {
			return nil, fmt.Errorf("generate nats credentials: %w", err)
		}
		if r == RoleEnforcer && len(o.Enforcers) == 0 {
			return nil, fmt.Errorf("generate nats credentials: %w: name each enforcer (--enforcer ID)", ErrEnforcerID)
		}
	}
	for _, id := range o.Enforcers {
		if err := ValidateEnforcerID(id); err != nil {
			return nil, fmt.Errorf("generate nats credentials: %w", err)
		}
	}
	if _, err := privdir.Ensure(dir); err != nil {
		return nil, fmt.Errorf("generate nats credentials: %w", err)
	}
	users := make([]User, 0, len(roles)+len(o.Enforcers))
	seen := map[Role]bool{}
	for _, r := range roles {
		if seen[r] || r == RoleEnforcer {
			continue
		}
		seen[r] = true
		u, err := ensureSeed(SeedFile(dir, r), User{Role: r}, o.Force)
		if err != nil {
			return nil, fmt.Errorf("generate nats credentials for %s: %w", r, err)
		}
		users = append(users, u)
	}
	seenEnf := map[string]bool{}
	for _, id := range o.Enforcers {
		if seenEnf[id] {
			continue
		}
		seenEnf[id] = true
		u, err := ensureSeed(EnforcerSeedFile(dir, id), User{Role: RoleEnforcer, Enforcer: id}, o.Force)
		if err != nil {
			return nil, fmt.Errorf("generate nats credentials for enforcer %s: %w", id, err)
		}
		users = append(users, u)
	}
	conf, err := AuthConfig(users)
	if err != nil {
		return nil, fmt.Errorf("generate nats credentials: %w", err)
	}
	if err := writeFileAtomic(AuthConfPath(dir), conf, 0o644); err != nil {
		return nil, fmt.Errorf("generate nats credentials: %w", err)
	}
	return users, nil
}

// ensureSeed keeps a valid existing seed for identity u at path or writes
// a new one.
func ensureSeed(path string, u User, force bool) (User, error) {
	u.SeedFile = path
	if !force {
		pub, err := PublicKeyOf(path)
		switch {
		case err == nil:
			u.PublicKey = pub
			return u, nil
		case !errors.Is(err, fs.ErrNotExist):
			return User{}, fmt.Errorf("existing seed (use --force to replace it): %w", err)
		}
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return User{}, fmt.Errorf("create nkey: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return User{}, fmt.Errorf("nkey seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return User{}, fmt.Errorf("nkey public key: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Cordon NATS identity %s (public key %s).\n", u.Name(), pub)
	fmt.Fprintf(&b, "# Secret: give this file only to %s; the server knows the public key (auth.conf).\n", u.Name())
	b.Write(seed)
	b.WriteByte('\n')
	wipe(seed)
	err = writeFileAtomic(path, b.Bytes(), 0o600)
	wipe(b.Bytes())
	if err != nil {
		return User{}, err
	}
	u.PublicKey, u.Created = pub, true
	return u, nil
}

// PublicKeyOf returns the user public key of the seed in file, without
// keeping the seed.
func PublicKeyOf(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read seed: %w", err)
	}
	defer wipe(b)
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return "", fmt.Errorf("seed %s: %w", file, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("seed %s: %w", file, err)
	}
	return pub, nil
}

// AuthConfig renders the nats-server configuration include for users: an
// authorization block with one NKey user per role and its permissions.
func AuthConfig(users []User) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Cordon service identities and their least-privilege permissions.\n")
	b.WriteString("# Generated by `cordon creds generate`; regenerate rather than edit.\n")
	b.WriteString("# Include it from the server configuration:  include \"auth.conf\"\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range users {
		if !nkeys.IsValidPublicUserKey(u.PublicKey) {
			return nil, fmt.Errorf("auth config: %s: %q is not a user public key", u.Name(), u.PublicKey)
		}
		p, err := u.Permissions()
		if err != nil {
			return nil, fmt.Errorf("auth config: %w", err)
		}
		fmt.Fprintf(&b, "    # %s\n", u.Name())
		fmt.Fprintf(&b, "    {\n      nkey: %s\n      permissions: {\n", quote(u.PublicKey))
		b.WriteString("        publish: {\n")
		writeList(&b, "allow", p.Publish.Allow)
		writeList(&b, "deny", p.Publish.Deny)
		b.WriteString("        }\n        subscribe: {\n")
		writeList(&b, "allow", p.Subscribe.Allow)
		writeList(&b, "deny", p.Subscribe.Deny)
		b.WriteString("        }\n")
		if p.Response != nil {
			fmt.Fprintf(&b, "        allow_responses: { max: %d, expires: %s }\n", p.Response.MaxMsgs, quote(p.Response.Expires.String()))
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes(), nil
}

func writeList(b *bytes.Buffer, name string, subjects []string) {
	if len(subjects) == 0 {
		return
	}
	fmt.Fprintf(b, "          %s: [\n", name)
	for _, s := range subjects {
		fmt.Fprintf(b, "            %s\n", quote(s))
	}
	b.WriteString("          ]\n")
}

// quote makes a NATS configuration string; quoted strings are taken
// literally, so "$JS…" is not read as a variable reference.
func quote(s string) string { return strconv.Quote(s) }

// InboxPrefix is the private inbox prefix of the user with publicKey; the
// user may subscribe to replies under it and nowhere else. ConnectOption
// sets it on the connection.
func InboxPrefix(publicKey string) string { return "_INBOX_" + publicKey }

// writeFileAtomic writes data to path through a temporary file in the
// same directory, so that a reader never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}
