package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
)

// serviceConfig is what a service command needs of its service's Config
// (services/*): the flags are declared by its RegisterFlags.
type serviceConfig interface {
	// Validate checks the configuration without I/O.
	Validate() error
	// Check loads what the configuration names and describes it (what
	// --check-config prints).
	Check() (string, error)
}

// runService is the whole of a service command once its Config declared
// its flags into fs: parse, validate, --check-config (checkHelp says what
// it checks), or run until ctx ends.
func runService(ctx context.Context, env *Env, fs *flag.FlagSet, args []string, cfg serviceConfig, checkHelp string, run func(context.Context) error) error {
	check := fs.Bool("check-config", false, checkHelp)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *check {
		s, err := cfg.Check()
		if err != nil {
			return usageOf(err)
		}
		_, err = fmt.Fprintln(env.Stdout, s)
		return err
	}
	err := run(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Stopped (SIGTERM, Ctrl-C) while it was still starting: a clean stop.
		return nil
	}
	return usageOf(err)
}
