package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/issuer"
)

func runAnchor(_ context.Context, env *Env, args []string) error {
	if len(args) == 0 || args[0] != "generate" {
		fmt.Fprintln(env.Stderr, "usage: cordon anchor generate --out DIR")
		return fmt.Errorf("%w: want `cordon anchor generate`", errUsage)
	}
	fs := newFlags(env, "anchor generate", "anchor generate --out DIR [--force]")
	out := fs.String("out", "", "directory to write "+issuer.AnchorFile+" (private, for the issuer's --anchor-key) and "+issuer.TrustAnchorFile+" (public, for --trust-anchor) to")
	force := fs.Bool("force", false, "replace an existing anchor (every verifier must then be given the new public file)")
	if _, err := parseArgs(fs, args[1:], 0, "no arguments"); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	priv := filepath.Join(*out, issuer.AnchorFile)
	if _, err := os.Stat(priv); err == nil && !*force {
		return fmt.Errorf("%s exists: keep it, or pass --force to replace it", priv)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	a, err := token.GenerateAnchor()
	if err != nil {
		return err
	}
	b, err := token.MarshalAnchor(a)
	if err != nil {
		return err
	}
	if err := os.WriteFile(priv, b, 0o600); err != nil {
		return err
	}
	pub := filepath.Join(*out, issuer.TrustAnchorFile)
	if err := issuer.WriteTrustAnchor(pub, a.Public()); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s\n", a.Public())
	fmt.Fprintf(env.Stderr, "trust anchor %s: private key %s (give it to the issuer: --anchor-key), public key %s (give it to enforcers, the revoker and the auditor: --trust-anchor)\n",
		a.Public().ID(), priv, pub)
	return nil
}
