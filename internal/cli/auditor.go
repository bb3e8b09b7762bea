package cli

import (
	"context"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/services/auditor"
)

// runAuditor is `cordon auditor`: the usage consumer, detectors and the
// analyst API on their own.
func runAuditor(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "auditor", "auditor --nats URL [--store chdb|clickhouse] [--chdb-path DIR | --clickhouse-addr HOST:PORT …] --state DIR [--policy FILE] [--check-config]")
	cfg := auditor.Config{Log: env.Log}
	cfg.RegisterFlags(fs)
	return runService(ctx, env, fs, args, &cfg, "validate the policy and flags, then exit",
		func(ctx context.Context) error { return auditor.Run(ctx, cfg) })
}

// loadDetectors reads the detectors: section of a policy file over the
// default thresholds (detect.LoadConfig).
func loadDetectors(path string) (detect.Config, error) { return detect.LoadConfig(path) }

// openChDB opens the embedded store's database in path (an error in a
// build without chDB).
var openChDB = auditor.OpenChDB
