package natsauth

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// The flags of `cordon creds generate` and `cordon creds permissions`,
// declared next to the options they fill. Every error of a Validate here
// is a mistake in the flags, naming the flag: a command's usage error.

// RegisterFlags declares --enforcer and --role (repeatable or
// comma-separated, each value checked as it is parsed) and --force.
func (o *GenerateOptions) RegisterFlags(fs *flag.FlagSet) {
	fs.Var((*enforcersFlag)(&o.Enforcers), "enforcer", "an identity for each of these enforcer `ID`s (repeatable or comma-separated): DIR/enforcer-<id>.nk, allowed to publish usage only as <id> (cordon enforce --id <id>)")
	fs.Var((*rolesFlag)(&o.Roles), "role", "generate only these roles (repeatable or comma-separated; default: issuer, auditor, revoker, admin; enforcer needs --enforcer). auth.conf lists exactly these and the --enforcer ids")
	fs.BoolVar(&o.Force, "force", false, "replace existing seeds with new keys (rotation); by default existing seeds are kept and only auth.conf is rewritten")
}

// Validate checks what Generate would refuse: the enforcer role without
// the enforcers it stands for.
func (o *GenerateOptions) Validate() error {
	if slices.Contains(o.Roles, RoleEnforcer) && len(o.Enforcers) == 0 {
		return errors.New("--role enforcer: each enforcer has its own identity; name them with --enforcer ID[,ID…]")
	}
	return nil
}

// rolesFlag is a repeatable, comma-separated --role.
type rolesFlag []Role

func (r *rolesFlag) String() string {
	s := make([]string, len(*r))
	for i, x := range *r {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func (r *rolesFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		role, err := ParseRole(part)
		if err != nil {
			return err
		}
		*r = append(*r, role)
	}
	return nil
}

// enforcersFlag is a repeatable, comma-separated --enforcer.
type enforcersFlag []string

func (e *enforcersFlag) String() string { return strings.Join(*e, ",") }

func (e *enforcersFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if err := ValidateEnforcerID(part); err != nil {
			return err
		}
		*e = append(*e, part)
	}
	return nil
}

// PermissionsQuery asks for the permissions of a role, or of one enforcer,
// as they would be granted to an identity not generated yet (`cordon creds
// permissions`): its public key, in the private inbox prefix, is a
// placeholder, and so is the enforcer id when none is given.
type PermissionsQuery struct {
	Role Role
	// Enforcer is the enforcer id (role enforcer only; --enforcer).
	Enforcer string
}

// The placeholders of a PermissionsQuery, as the permissions hold them and
// as WriteText shows them.
const (
	keyPlaceholder, keyShown           = "PUBLICKEY", "<public key>"
	enforcerPlaceholder, enforcerShown = "ENFORCERID", "<enforcer id>"
)

// RegisterFlags declares --enforcer.
func (q *PermissionsQuery) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&q.Enforcer, "enforcer", "", "the enforcer id (role enforcer; default: a placeholder)")
}

// Validate checks the role and the enforcer id, and that an enforcer id is
// given for the enforcer role only.
func (q *PermissionsQuery) Validate() error {
	_, err := q.permissions()
	return err
}

// permissions returns the permissions asked for, with the placeholders.
func (q *PermissionsQuery) permissions() (*server.Permissions, error) {
	if _, err := ParseRole(string(q.Role)); err != nil {
		return nil, err
	}
	switch {
	case q.Role == RoleEnforcer:
		id := q.Enforcer
		if id == "" {
			id = enforcerPlaceholder
		}
		return EnforcerPermissions(id, InboxPrefix(keyPlaceholder))
	case q.Enforcer != "":
		return nil, errors.New("--enforcer applies to the enforcer role only")
	}
	return Permissions(q.Role, InboxPrefix(keyPlaceholder))
}

// WriteText writes the subjects the identity may publish to, may not, and
// may subscribe to, one a line, and how it may answer requests, with
// "<public key>" and "<enforcer id>" for what is not known yet.
func (q *PermissionsQuery) WriteText(w io.Writer) error {
	p, err := q.permissions()
	if err != nil {
		return err
	}
	names := strings.NewReplacer(keyPlaceholder, keyShown, enforcerPlaceholder, enforcerShown)
	var b strings.Builder
	section := func(title string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s:\n", title)
		for _, s := range subjects {
			fmt.Fprintf(&b, "  %s\n", names.Replace(s))
		}
	}
	if p.Publish != nil {
		section("publish allow", p.Publish.Allow)
		section("publish deny", p.Publish.Deny)
	}
	if p.Subscribe != nil {
		section("subscribe allow", p.Subscribe.Allow)
	}
	if p.Response != nil {
		fmt.Fprintf(&b, "responses: %d reply per request received, within %s\n", p.Response.MaxMsgs, p.Response.Expires)
	}
	_, err = io.WriteString(w, b.String())
	return err
}
