package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cordonhq/cordon/pkg/detect"
	"github.com/cordonhq/cordon/pkg/natsconn"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// runAuditor is `cordon auditor`: the usage consumer, detectors and the
// analyst API on their own; `cordon auditor status` shows every running
// instance.
func runAuditor(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return runAuditorStatus(ctx, env, args[1:])
	}
	fs := newFlags(env, "auditor", "auditor --nats URL [--store chdb|clickhouse] [--chdb-path DIR | --clickhouse-addr HOST:PORT …] --state DIR [--policy FILE] [--check-config]\n"+
		"       cordon auditor status [--wait 2s] [-o text|json]   (every running instance, by USAGE partition)")
	cfg := auditor.Config{Log: env.Log}
	cfg.RegisterFlags(fs)
	return runService(ctx, env, fs, args, &cfg, "validate the policy and flags, then exit (the USAGE stream's partition count is compared at start)",
		func(ctx context.Context) error { return auditor.Run(ctx, cfg) })
}

// runAuditorStatus is `cordon auditor status`: it asks every auditor
// instance for its status, gathers the replies for --wait and prints, per
// USAGE partition, its owner, lag, events and last checkpoint; partitions
// without exactly one owner are flagged and make the exit status 1.
func runAuditorStatus(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "auditor status", "auditor status [--wait 2s] [-o text|json] [--nats URL] [--token-file FILE]")
	var c clientFlags
	c.register(fs)
	wait := fs.Duration("wait", auditor.DefaultStatusWait, "how long to gather the instances' replies (every instance answers; an instance that answers later is not shown)")
	format := outputFlag(fs, "text", "text or json")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if err := checkFormat(*format, "text", store.FormatJSON); err != nil {
		return err
	}
	if *wait <= 0 || *wait > time.Minute {
		return fmt.Errorf("%w: --wait %v: want more than 0, at most 1m", errUsage, *wait)
	}
	if *wait >= c.Timeout {
		return fmt.Errorf("%w: --wait %v must be shorter than --timeout %v", errUsage, *wait, c.Timeout)
	}
	var fleet auditor.Fleet
	err = c.call(ctx, env, "cordon-auditor-status", func(ctx context.Context, cl *auditor.Client) error {
		replies, err := cl.StatusAll(ctx, *wait)
		if err != nil {
			return err
		}
		// The stream's own count, so that a partition nobody runs shows
		// even when no instance reports the count.
		parts := 0
		if js, err := jetstream.New(cl.NC); err == nil {
			if parts, err = natsconn.UsagePartitions(ctx, js); err != nil {
				fmt.Fprintf(env.Stderr, "cordon auditor status: note: the USAGE stream's partition count is unknown (%v): using the instances'\n", err)
			}
		}
		fleet = auditor.NewFleet(replies, parts)
		if *format == store.FormatJSON {
			return writeIndented(env.Stdout, fleet)
		}
		return fleet.WriteText(env.Stdout, time.Now())
	})
	if err != nil {
		return err
	}
	return fleet.Err()
}

// loadDetectors reads the detectors: section of a policy file over the
// default thresholds (detect.LoadConfig).
func loadDetectors(path string) (detect.Config, error) { return detect.LoadConfig(path) }

// openChDB opens the embedded store's database in path (an error in a
// build without chDB).
var openChDB = auditor.OpenChDB
