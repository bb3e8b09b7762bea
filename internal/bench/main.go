package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"io"
	"os"
	"strings"
	"time"
)

// Main runs the cordon-bench command with args (without the program name),
// writing progress and figures to stdout and errors to stderr, and returns
// the process exit status: 0 when every selected suite ran (a missed target
// is reported, not an error), 1 when a suite or the results file failed, 2
// on a usage mistake.
//
// The fault-tolerance suite re-executes the running binary as auditor and
// query children, so the binary's main must call faults.ChildMain before
// Main (cmd/cordon-bench does).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the results, with the machine they ran on, to this markdown `file` (make bench: BENCHMARKS.md)")
	only := fs.String("only", "", "run only the suites whose name contains this `text`")
	list := fs.Bool("list", false, "list the suites and exit")
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cordon-bench: unexpected argument %q (see cordon-bench -h)\n", fs.Arg(0))
		return 2
	}
	if *list {
		for _, s := range Suites() {
			fmt.Fprintf(stdout, "%-20s %s\n", s.Name, s.Summary)
		}
		return 0
	}
	if !matchesAny(*only) {
		fmt.Fprintf(stderr, "cordon-bench: --only %q matches no suite; the suites are: %s\n", *only, strings.Join(suiteNames(), ", "))
		return 2
	}
	// Load the engine before any suite, so that a missing library stops
	// the run at once with the command that installs it.
	if err := chdbstore.Load(); err != nil {
		fmt.Fprintf(stderr, "cordon-bench: %v\n", err)
		return 3
	}
	if err := run(ctx, *only, *out, stdout); err != nil {
		fmt.Fprintf(stderr, "cordon-bench: %v\n", err)
		return 1
	}
	return 0
}

// usage is cordon-bench -h: what the command does, in a user's words, then
// the suites and the flags.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `cordon-bench — measure Cordon's latency, throughput and memory on this machine
and write them to a results file.

It runs the real components (enforcer, NATS JetStream, the embedded ClickHouse,
the issuer, the auditor and the revoker) on this machine, prints each figure
beside the target it is held to, and with --out writes them, with the machine
they ran on, as markdown. A full run takes several minutes and needs the chDB
library (make chdb).

Usage: cordon-bench [--only TEXT] [--out FILE]

Suites, in the order they run:
`)
	for _, s := range Suites() {
		fmt.Fprintf(w, "  %-20s %s\n", s.Name, s.Summary)
	}
	fmt.Fprint(w, "\nFlags:\n")
	fs.PrintDefaults()
}

// run runs the selected suites and writes the results file.
func run(ctx context.Context, only, out string, stdout io.Writer) error {
	fmt.Fprintf(stdout, "machine: %s\n", Machine())
	res, order, err := Run(ctx, only, stdout)
	if err != nil {
		return err
	}
	if out == "" {
		return nil
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := WriteMarkdown(f, res, order, time.Now()); err != nil {
		f.Close()
		return fmt.Errorf("results %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("results %s: %w", out, err)
	}
	fmt.Fprintf(stdout, "results written to %s\n", out)
	return nil
}

// matchesAny reports whether filter selects at least one suite.
func matchesAny(filter string) bool {
	for _, s := range Suites() {
		if strings.Contains(s.Name, filter) {
			return true
		}
	}
	return false
}

func suiteNames() []string {
	var names []string
	for _, s := range Suites() {
		names = append(names, s.Name)
	}
	return names
}
