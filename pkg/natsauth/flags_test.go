package natsauth_test

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cordonhq/cordon/pkg/natsauth"
)

// TestGenerateFlags: --role and --enforcer take repeated and
// comma-separated values and refuse a bad one as they are parsed; Validate
// refuses the enforcer role without enforcers, as Generate would.
func TestGenerateFlags(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		roles     []natsauth.Role
		enforcers []string
		force     bool
		parseErr  error // its text, from the flag set (which does not wrap)
		invalid   string
	}{
		{name: "defaults"},
		{name: "lists", args: []string{"--role", "admin, issuer", "--role", "enforcer", "--enforcer", "edge-1,edge-2", "--enforcer", "edge-3", "--force"},
			roles: []natsauth.Role{natsauth.RoleAdmin, natsauth.RoleIssuer, natsauth.RoleEnforcer}, enforcers: []string{"edge-1", "edge-2", "edge-3"}, force: true},
		{name: "empty parts", args: []string{"--role", ",auditor,", "--enforcer", " ,e1"}, roles: []natsauth.Role{natsauth.RoleAuditor}, enforcers: []string{"e1"}},
		{name: "unknown role", args: []string{"--role", "root"}, parseErr: natsauth.ErrUnknownRole},
		{name: "wildcard id", args: []string{"--enforcer", "*"}, parseErr: natsauth.ErrEnforcerID},
		{name: "dotted id", args: []string{"--enforcer", "edge.1"}, parseErr: natsauth.ErrEnforcerID},
		{name: "enforcer role without ids", args: []string{"--role", "enforcer"}, roles: []natsauth.Role{natsauth.RoleEnforcer},
			invalid: "--role enforcer: each enforcer has its own identity; name them with --enforcer ID[,ID…]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var o natsauth.GenerateOptions
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o.RegisterFlags(fs)
			err := fs.Parse(c.args)
			if c.parseErr != nil {
				if err == nil || !strings.Contains(err.Error(), c.parseErr.Error()) {
					t.Fatalf("parse: %v, want %v", err, c.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(o.Roles, c.roles) || !slices.Equal(o.Enforcers, c.enforcers) || o.Force != c.force {
				t.Errorf("options %+v, want roles %v, enforcers %v, force %v", o, c.roles, c.enforcers, c.force)
			}
			err = o.Validate()
			if c.invalid == "" && err != nil || c.invalid != "" && (err == nil || err.Error() != c.invalid) {
				t.Errorf("Validate() = %v, want %q", err, c.invalid)
			}
		})
	}
}

// TestPermissionsQuery: the listing is exactly the permissions the role
// (or the enforcer) is granted, placeholders shown by name; a role that
// does not exist, a bad enforcer id and an id for another role are
// refused.
func TestPermissionsQuery(t *testing.T) {
	const key = "PUBLICKEY" // what the listing shows as <public key>
	for _, c := range []struct {
		name    string
		q       natsauth.PermissionsQuery
		perms   func() (*server.Permissions, error)
		invalid error
		message string
	}{
		{name: "issuer", q: natsauth.PermissionsQuery{Role: natsauth.RoleIssuer},
			perms: func() (*server.Permissions, error) {
				return natsauth.Permissions(natsauth.RoleIssuer, natsauth.InboxPrefix(key))
			}},
		{name: "auditor", q: natsauth.PermissionsQuery{Role: natsauth.RoleAuditor},
			perms: func() (*server.Permissions, error) {
				return natsauth.Permissions(natsauth.RoleAuditor, natsauth.InboxPrefix(key))
			}},
		{name: "revoker", q: natsauth.PermissionsQuery{Role: natsauth.RoleRevoker},
			perms: func() (*server.Permissions, error) {
				return natsauth.Permissions(natsauth.RoleRevoker, natsauth.InboxPrefix(key))
			}},
		{name: "admin", q: natsauth.PermissionsQuery{Role: natsauth.RoleAdmin},
			perms: func() (*server.Permissions, error) {
				return natsauth.Permissions(natsauth.RoleAdmin, natsauth.InboxPrefix(key))
			}},
		{name: "one enforcer", q: natsauth.PermissionsQuery{Role: natsauth.RoleEnforcer, Enforcer: "edge-7"},
			perms: func() (*server.Permissions, error) {
				return natsauth.EnforcerPermissions("edge-7", natsauth.InboxPrefix(key))
			}},
		{name: "any enforcer", q: natsauth.PermissionsQuery{Role: natsauth.RoleEnforcer},
			perms: func() (*server.Permissions, error) {
				return natsauth.EnforcerPermissions("ENFORCERID", natsauth.InboxPrefix(key))
			}},
		{name: "unknown role", q: natsauth.PermissionsQuery{Role: "root"}, invalid: natsauth.ErrUnknownRole, message: `unknown role "root"`},
		{name: "bad id", q: natsauth.PermissionsQuery{Role: natsauth.RoleEnforcer, Enforcer: ">"}, invalid: natsauth.ErrEnforcerID},
		{name: "id of another role", q: natsauth.PermissionsQuery{Role: natsauth.RoleAdmin, Enforcer: "edge-1"},
			message: "--enforcer applies to the enforcer role only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b strings.Builder
			err := c.q.Validate()
			if c.perms == nil {
				if err == nil || c.invalid != nil && !errors.Is(err, c.invalid) || !strings.Contains(err.Error(), c.message) {
					t.Fatalf("Validate() = %v, want %v %q", err, c.invalid, c.message)
				}
				if werr := c.q.WriteText(&b); werr == nil || b.Len() > 0 {
					t.Errorf("WriteText wrote %q, %v", b.String(), werr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.q.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			if strings.Contains(out, key) || strings.Contains(out, "ENFORCERID") || !strings.Contains(out, "_INBOX_<public key>.>") {
				t.Errorf("placeholders not shown by name:\n%s", out)
			}
			p, err := c.perms()
			if err != nil {
				t.Fatal(err)
			}
			listed := sections(strings.NewReplacer("<public key>", key, "<enforcer id>", "ENFORCERID").Replace(out))
			for title, want := range map[string][]string{"publish allow": p.Publish.Allow, "publish deny": p.Publish.Deny, "subscribe allow": p.Subscribe.Allow} {
				if !slices.Equal(listed[title], want) {
					t.Errorf("%s: listed %v, granted %v", title, listed[title], want)
				}
			}
			if p.Response != nil && !strings.Contains(out, "responses: 1 reply per request received") {
				t.Errorf("responses not listed:\n%s", out)
			}
		})
	}
}

// sections reads WriteText's listing back: the subjects under each title.
func sections(out string) map[string][]string {
	m := map[string][]string{}
	var title string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "  "):
			m[title] = append(m[title], strings.TrimSpace(line))
		case strings.HasSuffix(line, ":"):
			title = strings.TrimSuffix(line, ":")
		}
	}
	return m
}
