//go:build !nochdb

package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cordonhq/cordon/internal/bench"
)

func runBench(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "bench", "bench [--only NAME] [--out BENCHMARKS.md]")
	out := fs.String("out", "", "write the results (with the machine they ran on) to this markdown file")
	only := fs.String("only", "", "run only the suites whose name contains this")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "machine: %s\n", bench.Machine())
	res, order, err := bench.Run(ctx, *only, env.Stdout)
	if err != nil {
		return err
	}
	if *out == "" {
		return nil
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := bench.WriteMarkdown(f, res, order, time.Now()); err != nil {
		f.Close()
		return fmt.Errorf("results: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	fmt.Fprintf(env.Stdout, "results written to %s\n", *out)
	return nil
}
