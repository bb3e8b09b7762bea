package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

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
	return subcommand(ctx, env, args, credsUsage, map[string]func(context.Context, *Env, []string) error{
		"generate": runCredsGenerate, "permissions": runCredsPermissions,
	})
}

// runCredsGenerate is `cordon creds generate --out DIR`.
func runCredsGenerate(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "creds generate", "creds generate --out DIR [--enforcer ID …] [--role ROLE …] [--force]")
	var o natsauth.GenerateOptions
	out := fs.String("out", "", "directory for the seeds and auth.conf (created 0700; required)")
	o.RegisterFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	case *out == "":
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if err := invalidFlags(o.Validate()); err != nil {
		return err
	}
	if err := privdir.EnsureLogged(*out, env.Log); err != nil {
		return fmt.Errorf("generate nats credentials: %w", err)
	}
	users, err := natsauth.Generate(*out, o)
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
	fmt.Fprintf(env.Stdout, "\nserver include: %s (include it from nats-server.conf; restart or reload the servers)\n", natsauth.AuthConfPath(*out))
	fmt.Fprintln(env.Stdout, "give each service only its own seed: --nats-creds DIR/<role>.nk; each enforcer DIR/enforcer-<id>.nk with --id <id>")
	if len(o.Enforcers) == 0 {
		fmt.Fprintln(env.Stdout, "no enforcer identity written: each enforcer needs its own (--enforcer ID[,ID…]), listed in the same run")
	}
	env.Log.Info().Str("dir", *out).Int("identities", len(users)).Msg("nats credentials written")
	return nil
}

// runCredsPermissions is `cordon creds permissions ROLE [--enforcer ID]`.
func runCredsPermissions(_ context.Context, env *Env, args []string) error {
	fs := newFlags(env, "creds permissions", "creds permissions ROLE [--enforcer ID]")
	var q natsauth.PermissionsQuery
	q.RegisterFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		roles := make([]string, 0, len(natsauth.Roles()))
		for _, r := range natsauth.Roles() {
			roles = append(roles, string(r))
		}
		return fmt.Errorf("%w: want one role (%s)", errUsage, strings.Join(roles, ", "))
	}
	q.Role = natsauth.Role(pos[0])
	if err := invalidFlags(q.Validate()); err != nil {
		return err
	}
	return q.WriteText(env.Stdout)
}
