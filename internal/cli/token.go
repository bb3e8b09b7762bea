package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"

	"github.com/cordonhq/cordon/services/issuer"
)

const tokenUsage = `Usage: cordon token <command> [flags]

Commands:
  issue    mint a token within the holder's ceiling (prints it on stdout)
  canary   mint a canary: a real-looking token every enforcer denies, whose
           first use pages on-call (plant it where a thief would look)
  list     list tokens (--tenant, --holder, --status)
  inspect  show a token's claims, status and ledger history
  rotate   mint a successor and revoke the token after a grace period
  restrict quarantine a token (--narrow: read scopes from known networks only)
           or step it up (--step-up: its bound client certificate only), for a while
  release  lift a token's restriction before it ends

issue, canary, list, inspect and rotate talk to the issuer's HTTP API (--api,
$CORDON_API, default ` + issuer.DefaultAPIURL + `) with an admin token (--token-file,
$CORDON_TOKEN_FILE, default ` + issuer.DefaultAdminTokenFile + `); restrict and release
ask the revoker over NATS (--nats), as cordon revoke does.
`

const keyUsage = `Usage: cordon key <command> [flags]

Commands:
  list     list the issuer's signing keys
  rotate   make a new signing key active (older keys keep verifying)
  retire   retire a non-active key: its tokens stop verifying everywhere
`

func runToken(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, args, tokenUsage, map[string]func(context.Context, *Env, []string) error{
		"issue": runTokenIssue, "canary": runTokenCanary, "list": runTokenList, "inspect": runTokenInspect, "rotate": runTokenRotate,
		"restrict": runTokenRestrict, "release": runTokenRelease,
	})
}

func runKey(ctx context.Context, env *Env, args []string) error {
	return subcommand(ctx, env, args, keyUsage, map[string]func(context.Context, *Env, []string) error{
		"list": runKeyList, "rotate": runKeyRotate, "retire": runKeyRetire,
	})
}

func subcommand(ctx context.Context, env *Env, args []string, usage string, cmds map[string]func(context.Context, *Env, []string) error) error {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return fmt.Errorf("%w: a subcommand is required", errUsage)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stderr, usage)
		return flag.ErrHelp
	}
	run, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(env.Stderr, usage)
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
	return run(ctx, env, args[1:])
}

// apiFlags are the flags every API command shares: the client's and the
// output format.
type apiFlags struct {
	issuer.ClientFlags
	output string
}

func addAPIFlags(fs *flag.FlagSet) *apiFlags {
	f := &apiFlags{}
	f.RegisterFlags(fs)
	fs.StringVar(&f.output, "o", "text", "output format: text or json")
	return f
}

// client validates the shared flags, reads the admin token and returns the
// issuer API's client.
func (f *apiFlags) client(env *Env) (*issuer.Client, error) {
	if f.output != "text" && f.output != "json" {
		return nil, fmt.Errorf("%w: -o %q: want text or json", errUsage, f.output)
	}
	if err := invalidFlags(f.Validate()); err != nil {
		return nil, err
	}
	tok, err := readAdminToken(env, f.TokenFile)
	if err != nil {
		return nil, err
	}
	c, err := issuer.NewClient(issuer.ClientConfig{URL: f.URL, Token: tok, CAFile: f.CAFile})
	if err != nil {
		return nil, fmt.Errorf("--api-ca: %w", err)
	}
	return c, nil
}

// readAdminToken reads the admin token file, warning on env's stderr when
// others may read it.
func readAdminToken(env *Env, path string) (string, error) {
	tok, err := issuer.ReadAdminToken(path, env.Stderr)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w; pass --token-file or set $CORDON_TOKEN_FILE", err)
	}
	return tok, err
}

// parse parses a command's flags and its n arguments, checks the flags
// with the command's checks (each error a usage error), then returns the
// client.
func (f *apiFlags) parse(env *Env, fs *flag.FlagSet, args []string, n int, what string, checks ...func() error) (*issuer.Client, []string, error) {
	pos, err := parseArgs(fs, args, n, what)
	if err != nil {
		return nil, nil, err
	}
	for _, check := range checks {
		if err := invalidFlags(check()); err != nil {
			return nil, nil, err
		}
	}
	c, err := f.client(env)
	return c, pos, err
}

// reply writes an API reply: as JSON with -o json, else with text.
func (f *apiFlags) reply(env *Env, what string, v any, err error, text func() error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, f.Explain(err))
	}
	if f.output == "json" {
		return writeIndented(env.Stdout, v)
	}
	return text()
}

func runTokenIssue(ctx context.Context, env *Env, args []string) error {
	return issueToken(ctx, env, args, false)
}

// runTokenCanary mints a canary: the issue flags, Canary set.
func runTokenCanary(ctx context.Context, env *Env, args []string) error {
	return issueToken(ctx, env, args, true)
}

func issueToken(ctx context.Context, env *Env, args []string, canary bool) error {
	name := "token issue"
	if canary {
		name = "token canary"
	}
	fs := newFlags(env, name, name+" --tenant T --holder H --scope s1,s2 [--audience a] [--network CIDR] [--env E] "+
		"[--window 'mon-fri 08:00-18:00 Europe/Paris'] [--device THUMB] [--ttl 1h] [-o json]")
	af := addAPIFlags(fs)
	var f issuer.IssueFlags
	f.RegisterFlags(fs)
	var req issuer.IssueRequest
	c, _, err := af.parse(env, fs, args, 0, "no arguments", func() (err error) { req, err = f.IssueRequest(); return err })
	if err != nil {
		return err
	}
	req.Canary = canary
	res, err := c.Issue(ctx, req, f.IdempotencyKey)
	return af.reply(env, "issue", res, err, func() error {
		if _, err := fmt.Fprintln(env.Stdout, res.Token); err != nil {
			return err
		}
		res.WriteSummary(env.Stderr)
		return nil
	})
}

func runTokenList(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token list", "token list [--tenant T] [--holder H] [--status active|rotated|revoked|expired] [-o json]")
	af := addAPIFlags(fs)
	var f issuer.ListFilter
	f.RegisterFlags(fs)
	c, _, err := af.parse(env, fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	list, err := c.List(ctx, f)
	return af.reply(env, "list", list, err, func() error {
		if err := list.WriteText(env.Stdout); err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "%d token(s)\n", len(list.Tokens))
		return nil
	})
}

func runTokenInspect(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token inspect", "token inspect ID [-o json]")
	af := addAPIFlags(fs)
	c, pos, err := af.parse(env, fs, args, 1, "the token ID")
	if err != nil {
		return err
	}
	d, err := c.Inspect(ctx, pos[0])
	return af.reply(env, "inspect", d, err, func() error { return d.WriteText(env.Stdout) })
}

func runTokenRotate(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "token rotate", "token rotate ID [--grace 10m] [--ttl 1h] [-o json]")
	af := addAPIFlags(fs)
	var f issuer.RotateFlags
	f.RegisterFlags(fs)
	c, pos, err := af.parse(env, fs, args, 1, "the token ID", f.Validate)
	if err != nil {
		return err
	}
	res, err := c.Rotate(ctx, pos[0], f.Request, f.IdempotencyKey)
	return af.reply(env, "rotate", res, err, func() error {
		if _, err := fmt.Fprintln(env.Stdout, res.Token); err != nil {
			return err
		}
		res.WriteSummary(env.Stderr)
		return nil
	})
}

func runKeyList(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "key list", "key list [-o json]")
	af := addAPIFlags(fs)
	c, _, err := af.parse(env, fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	list, err := c.Keys(ctx)
	return af.reply(env, "list keys", list, err, func() error {
		if err := list.WriteText(env.Stdout); err != nil {
			return err
		}
		for _, k := range list.Keys {
			if !k.Held {
				fmt.Fprintf(env.Stderr, "key %s is in the keys bucket but not held by the issuer: remove it with `cordon key retire %s`\n", k.KeyID, k.KeyID)
			}
		}
		return nil
	})
}

func runKeyRotate(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "key rotate", "key rotate [-o json]")
	af := addAPIFlags(fs)
	c, _, err := af.parse(env, fs, args, 0, "no arguments")
	if err != nil {
		return err
	}
	k, err := c.RotateKey(ctx)
	return af.reply(env, "rotate key", k, err, func() error {
		fmt.Fprintln(env.Stdout, k.KeyID)
		fmt.Fprintf(env.Stderr, "signing key %s is now active; older keys keep verifying until retired (cordon key retire KID)\n", k.KeyID)
		return nil
	})
}

func runKeyRetire(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "key retire", "key retire KID [--reason TEXT] [-o json]")
	af := addAPIFlags(fs)
	var in issuer.RetireRequest
	in.RegisterFlags(fs)
	c, pos, err := af.parse(env, fs, args, 1, "the key id (see cordon key list)")
	if err != nil {
		return err
	}
	res, err := c.RetireKey(ctx, pos[0], in)
	return af.reply(env, "retire key", res, err, func() error {
		fmt.Fprintf(env.Stderr, "signing key %s retired: tokens it signed no longer verify\n", res.KeyID)
		if res.AdminTokenRenewed {
			fmt.Fprintf(env.Stderr, "the bootstrap admin token was signed by it: the issuer wrote a new one to its data directory (%s)\n", issuer.AdminTokenFile)
		}
		return nil
	})
}
