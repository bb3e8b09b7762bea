package cli

import (
	"context"
	"fmt"

	"github.com/cordonhq/cordon/services/enforcer"
)

// runEnforce is `cordon enforce`: the enforcing reverse proxy.
func runEnforce(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "enforce", "enforce --upstream URL --routes FILE [--listen ADDR] [--nats URL] [--id ID] [--trusted-proxy CIDR …] [--check-config]")
	cfg := enforcer.Config{}
	cfg.RegisterFlags(fs)
	cfg.Log = env.Log
	return runService(ctx, env, fs, args, &cfg, "validate the routes and flags, then exit", func(ctx context.Context) error {
		fmt.Fprintf(env.Stderr, "cordon enforce: %s\n", cfg.StalenessPolicy())
		return enforcer.Run(ctx, cfg)
	})
}
