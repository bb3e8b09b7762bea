package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/cordonhq/cordon/pkg/natsauth"
)

const credsUsage = `Usage: cordon creds <subcommand> [flags]

Least-privilege NATS identities for Cordon's services (one NKey user per role:
issuer, auditor, revoker, enforcer, admin).

Subcommands:
  generate     write DIR/<role>.nk seeds (mode 0600) and DIR/auth.conf for nats-server
  permissions  print the subjects a role may publish and subscribe to
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

// runCredsGenerate is `cordon creds generate --out DIR`.
func runCredsGenerate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "creds generate", "creds generate --out DIR [--role ROLE …] [--force]")
	var (
		out   string
		roles credsRoles
		force bool
	)
	fs.StringVar(&out, "out", "", "directory for the seeds and auth.conf (created 0700; required)")
	fs.Var(&roles, "role", "generate only these roles (repeatable or comma-separated; default: all). auth.conf lists exactly these")
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
	users, err := natsauth.Generate(out, natsauth.GenerateOptions{Roles: roles, Force: force})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ROLE\tPUBLIC KEY\tSEED FILE\t")
	for _, u := range users {
		state := "kept"
		if u.Created {
			state = "new"
		}
		fmt.Fprintf(w, "%s\t%s\t%s (%s)\t\n", u.Role, u.PublicKey, u.SeedFile, state)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "\nserver include: %s (include it from nats-server.conf; restart or reload the servers)\n", natsauth.AuthConfPath(out))
	fmt.Fprintln(env.Stdout, "give each service only its own seed: --nats-creds DIR/<role>.nk")
	env.Log.Info().Str("dir", out).Int("roles", len(users)).Msg("nats credentials written")
	return nil
}

// runCredsPermissions is `cordon creds permissions ROLE`.
func runCredsPermissions(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "creds permissions", "creds permissions ROLE")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want one role (%s)", errUsage, rolesText())
	}
	role, err := natsauth.ParseRole(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	const placeholder = "PUBLICKEY"
	p, err := natsauth.Permissions(role, natsauth.InboxPrefix(placeholder))
	if err != nil {
		return err
	}
	section := func(title string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(env.Stdout, "%s:\n", title)
		for _, s := range subjects {
			fmt.Fprintf(env.Stdout, "  %s\n", strings.Replace(s, placeholder, "<public key>", 1))
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
