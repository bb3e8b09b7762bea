//go:build !nochdb

package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/up"
	"github.com/cordonhq/cordon/pkg/enforce"
	"github.com/cordonhq/cordon/pkg/natsauth"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/svcconfig"
)

func runUp(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "up", "up [flags]")
	var o up.Options
	fs.StringVar(&o.DataDir, "data", ".cordon", "data directory (NATS and its identities in creds/, chDB, keys, admin token, detector state); made 0700")
	fs.StringVar(&o.PolicyFile, "policy", "", "policy file (default: the embedded demo policy)")
	fs.StringVar(&o.RoutesFile, "routes", "", "routes file of the protected service (default: the embedded demo routes)")
	fs.IntVar(&o.NATSPort, "nats-port", 4222, "client port of the embedded NATS server (-1: any free port)")
	fs.StringVar(&o.IssuerListen, "api", "127.0.0.1:7400", "issuer HTTP API address")
	fs.StringVar(&o.ProxyListen, "proxy", "127.0.0.1:8080", "enforcing proxy address")
	fs.StringVar(&o.AlertWebhook, "alert-webhook", getenvDefault("CORDON_ALERT_WEBHOOK", ""), "Alertmanager-compatible webhook for on-call alerts ($CORDON_ALERT_WEBHOOK)")
	fs.DurationVar(&o.MaxStaleness, "max-staleness", enforce.DefaultMaxStaleness, "how old the proxy's denylist view may get before it counts as stale")
	failClosed := fs.Bool("fail-closed", true, "the proxy denies every request (denylist_stale) while its denylist view is stale")
	svcconfig.UsagePartitionsFlag(fs, &o.UsagePartitions)
	demo := fs.Bool("demo", false, "run the leak drill once everything is up")
	exit := fs.Bool("exit", false, "stop after the drill instead of serving until interrupted")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := svcconfig.CheckUsagePartitions(o.UsagePartitions); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if o.MaxStaleness <= 0 {
		return fmt.Errorf("%w: --max-staleness must be positive", errUsage)
	}
	o.FailOpen = !*failClosed
	o.Log = env.Log
	if *demo && os.Getenv("CORDON_LOG_LEVEL") == "" {
		o.Log = env.Log.Level(zerolog.WarnLevel) // let the drill's timeline speak
	}
	env.Log.Info().Str("data", o.DataDir).Msg("starting cordon: nats, chdb, issuer, auditor, revoker, enforcer")
	sys, err := up.Start(ctx, o)
	if err != nil {
		return err
	}
	defer sys.Close()
	fmt.Fprintf(env.Stderr, "cordon up: the proxy is %s\n", sys.Enforcer.Options().StalenessPolicy())
	env.Log.Info().Str("nats", sys.NATS.ClientURL()).Str("api", "http://"+sys.Issuer.Addr()).Str("proxy", sys.ProxyURL).
		Str("admin_token_file", sys.Issuer.AdminTokenPath()).Str("nats_creds", sys.CredsDir).
		Str("admin_nats_creds", sys.CredsFile(natsauth.RoleAdmin)).Msg("cordon is up")
	if *demo {
		rep, err := up.Drill(ctx, sys, env.Stdout)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "\nThe leaked token was denied everywhere %d ms after its first out-of-context use.\n",
			rep.DetectionToDenial().Milliseconds())
		if *exit {
			return nil
		}
	}
	where := "from this directory, the CLI finds the admin's NATS identity (" + sys.CredsFile(natsauth.RoleAdmin) + ") and token by itself"
	if filepath.Clean(o.DataDir) != filepath.Dir(natsconn.DefaultCredsDir) {
		where = "NATS refuses anonymous clients: pass --nats-creds " + sys.CredsFile(natsauth.RoleAdmin) + " --token-file " + sys.Issuer.AdminTokenPath()
	}
	fmt.Fprintf(env.Stdout, `
Cordon is running (%s). Try, in another terminal:
  bin/cordon token list
  bin/cordon token issue --tenant acme --holder reporting --scope invoices:read --audience invoices --env demo --ttl 1h
  bin/cordon sql "SELECT decision, reason, count() FROM usage_events GROUP BY ALL"
  curl -H "Authorization: Bearer <token>" %s/invoices/1
Press Ctrl-C to stop.
`, where, sys.ProxyURL)
	<-ctx.Done()
	env.Log.Info().Msg("stopping")
	return nil
}
