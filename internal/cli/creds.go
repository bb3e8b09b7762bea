package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/privdir"
)

const credsUsage = `Usage: cordon creds <subcommand> [flags]

Least-privilege NATS identities for Cordon's services: one NKey user per role
(issuer, auditor, revoker, admin) and one per enforcer (--enforcer ID), which
may publish usage only under its own id.

Subcommands:
  generate     write DIR/<role>.nk and DIR/enforcer-<id>.nk seeds (mode 0600)
               and DIR/auth.conf for nats-server
  permissions  print the subjects a role (an enforcer: --enforcer ID) may
               publish and subscribe to
`

// runCreds is `cordon creds`.
func runCreds(ctx context.Context, env *Env, args []string) error {
	cmds := map[string]func(context.Context, *Env, []string) error{
		"generate": runCredsGenerate, "permissions": runCredsPermissions,
	}
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, credsUsage)
		return fmt.Errorf("%w: a subcommand is required", errUsage)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stderr, credsUsage)
		return flag.ErrHelp
	}
	run, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(env.Stderr, credsUsage)
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
	return run(ctx, env, args[1:])
}

// credsRoles is a repeatable, comma-separated --role flag.
type credsRoles []natsauth.Role

func (r *credsRoles) String() string {
	s := make([]string, len(*r))
	for i, x := range *r {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func (r *credsRoles) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		role, err := natsauth.ParseRole(part)
		if err != nil {
			return err
		}
		*r = append(*r, role)
	}
	return nil
}

// credsEnforcers is a repeatable, comma-separated --enforcer flag.
type credsEnforcers []string

func (e *credsEnforcers) String() string { return strings.Join(*e, ",") }

func (e *credsEnforcers) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if err := natsauth.ValidateEnforcerID(part); err != nil {
			return err
		}
		*e = append(*e, part)
	}
	return nil
}

// runCredsGenerate is `cordon creds generate --out DIR`.
func runCredsGenerate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "creds generate", "creds generate --out DIR [--enforcer ID …] [--role ROLE …] [--force]")
	var (
		out       string
		roles     credsRoles
		enforcers credsEnforcers
		force     bool
	)
	fs.StringVar(&out, "out", "", "directory for the seeds and auth.conf (created 0700; required)")
	fs.Var(&enforcers, "enforcer", "an identity for each of these enforcer ids (repeatable or comma-separated): DIR/enforcer-<id>.nk, allowed to publish usage only as <id> (`cordon enforce --id <id>`)")
	fs.Var(&roles, "role", "generate only these roles (repeatable or comma-separated; default: issuer, auditor, revoker, admin; enforcer needs --enforcer). auth.conf lists exactly these and the --enforcer ids")
	fs.BoolVar(&force, "force", false, "replace existing seeds with new keys (rotation); by default existing seeds are kept and only auth.conf is rewritten")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if slices.Contains(roles, natsauth.RoleEnforcer) && len(enforcers) == 0 {
		return fmt.Errorf("%w: --role enforcer: each enforcer has its own identity; name them with --enforcer ID[,ID…]", errUsage)
	}
	if err := privdir.EnsureLogged(out, env.Log); err != nil {
		return fmt.Errorf("generate nats credentials: %w", err)
	}
	users, err := natsauth.Generate(out, natsauth.GenerateOptions{Roles: roles, Enforcers: enforcers, Force: force})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "IDENTITY\tPUBLIC KEY\tSEED FILE\t")
	for _, u := range users {
		state := "kept"
		if u.Created {
			state = "new"
		}
		fmt.Fprintf(w, "%s\t%s\t%s (%s)\t\n", u.Name(), u.PublicKey, u.SeedFile, state)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "\nserver include: %s (include it from nats-server.conf; restart or reload the servers)\n", natsauth.AuthConfPath(out))
	fmt.Fprintln(env.Stdout, "give each service only its own seed: --nats-creds DIR/<role>.nk; each enforcer DIR/enforcer-<id>.nk with --id <id>")
	if len(enforcers) == 0 {
		fmt.Fprintln(env.Stdout, "no enforcer identity written: each enforcer needs its own (--enforcer ID[,ID…]), listed in the same run")
	}
	env.Log.Info().Str("dir", out).Int("identities", len(users)).Msg("nats credentials written")
	return nil
}

// runCredsPermissions is `cordon creds permissions ROLE [--enforcer ID]`.
func runCredsPermissions(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "creds permissions", "creds permissions ROLE [--enforcer ID]")
	enforcer := fs.String("enforcer", "", "the enforcer id (role enforcer; default: a placeholder)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one role (%s)", errUsage, rolesText())
	}
	role, err := natsauth.ParseRole(pos[0])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	const placeholder, idPlaceholder = "PUBLICKEY", "ENFORCERID"
	var p *server.Permissions
	switch {
	case role == natsauth.RoleEnforcer:
		id := *enforcer
		if id == "" {
			id = idPlaceholder
		}
		p, err = natsauth.EnforcerPermissions(id, natsauth.InboxPrefix(placeholder))
	case *enforcer != "":
		return fmt.Errorf("%w: --enforcer applies to the enforcer role only", errUsage)
	default:
		p, err = natsauth.Permissions(role, natsauth.InboxPrefix(placeholder))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	names := strings.NewReplacer(placeholder, "<public key>", idPlaceholder, "<enforcer id>")
	section := func(title string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(env.Stdout, "%s:\n", title)
		for _, s := range subjects {
			fmt.Fprintf(env.Stdout, "  %s\n", names.Replace(s))
		}
	}
	section("publish allow", p.Publish.Allow)
	section("publish deny", p.Publish.Deny)
	section("subscribe allow", p.Subscribe.Allow)
	if p.Response != nil {
		fmt.Fprintf(env.Stdout, "responses: %d reply per request received, within %s\n", p.Response.MaxMsgs, p.Response.Expires)
	}
	return nil
}

func rolesText() string {
	var s []string
	for _, r := range natsauth.Roles() {
		s = append(s, string(r))
	}
	return strings.Join(s, ", ")
}
