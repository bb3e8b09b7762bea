package cli

import (
	"context"

	"github.com/cordonhq/cordon/services/issuer"
)

// runIssuer is `cordon issuer`: the token issuer on its own.
func runIssuer(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "issuer", "issuer --nats URL --data DIR --policy FILE [--listen ADDR] [--check-config]")
	cfg := issuer.Config{Log: env.Log}
	cfg.RegisterFlags(fs)
	return runService(ctx, env, fs, args, &cfg, "validate the policy and flags, then exit",
		func(ctx context.Context) error { return issuer.Run(ctx, cfg) })
}
