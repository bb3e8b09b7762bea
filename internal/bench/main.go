package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/store/chdbstore"
)

// Main runs the cordon-bench command with args (without the program name),
// writing progress and figures to stdout and errors to stderr, and returns
// the process exit status: 0 when every selected suite ran and met its
// targets; 1 when a suite failed, a target was missed or the results file
// could not be written — always after every selected suite ran and the
// results file was written, so a missed target is visible in both; 2 on a
// usage mistake; 3 without the chDB library. With --smoke every suite runs
// at tiny sizes and no target is judged: only a failed suite exits 1.
//
// The fault-tolerance suite re-executes the running binary as auditor and
// query children, so the binary's main must call faults.ChildMain before
// Main (cmd/cordon-bench does).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the results, with the machine they ran on, to this markdown `file` (make bench: BENCHMARKS.md)")
	only := fs.String("only", "", "run only the suites whose name contains this `text` (only the one named exactly so, if one is)")
	list := fs.Bool("list", false, "list the suites and exit")
	smoke := fs.Bool("smoke", false, "run every suite at tiny sizes to show it still runs, judging no target (make bench-smoke, CI); the figures mean nothing")
	cpuprofile := fs.String("cpuprofile", "", "write CPU profiles: the auditor suite one per measured stage, `prefix`.<stage>.pprof, and the scale-out suite one per auditor process in a directory prefix.scaleout-* (go tool pprof reads them)")
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
	defer removeSharedChDB()
	return run(ctx, Suites(), Env{Progress: stdout, Smoke: *smoke, CPUProfile: *cpuprofile}, *only, *out, stderr)
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

Usage: cordon-bench [--only TEXT] [--out FILE] [--smoke] [--cpuprofile PREFIX]

It exits 1 when a suite fails or a target is missed, after every suite ran
and the results file was written; --smoke judges no target.

Suites, in the order they run:
`)
	for _, s := range Suites() {
		fmt.Fprintf(w, "  %-20s %s\n", s.Name, s.Summary)
	}
	fmt.Fprint(w, "\nFlags:\n")
	fs.PrintDefaults()
}

// run runs the selected suites, writes the results file and returns the
// exit status (see Main).
func run(ctx context.Context, suites []Suite, env Env, only, out string, stderr io.Writer) int {
	fmt.Fprintf(env.Progress, "machine: %s\n", Machine())
	if env.Smoke {
		fmt.Fprintln(env.Progress, "smoke run: tiny sizes, no target judged, the figures mean nothing")
	}
	res := runSuites(ctx, suites, only, env)
	code := 0
	if out != "" {
		if err := writeResults(out, res, env.Smoke); err != nil {
			fmt.Fprintf(stderr, "cordon-bench: %v\n", err)
			code = 1
		} else {
			fmt.Fprintf(env.Progress, "results written to %s\n", out)
		}
	}
	var failed, missed []string
	for _, r := range res {
		if r.Err != nil {
			failed = append(failed, r.Err.Error())
		}
		for _, f := range r.Figures {
			if f.Missed() {
				missed = append(missed, fmt.Sprintf("%s: %s = %s %s (target %s)", r.Suite, f.Name, formatValue(f.Value), f.Unit, f.Target))
			}
		}
	}
	for _, m := range missed {
		fmt.Fprintf(stderr, "cordon-bench: target missed: %s\n", m)
	}
	for _, f := range failed {
		fmt.Fprintf(stderr, "cordon-bench: %s\n", f)
	}
	if len(failed) > 0 || len(missed) > 0 {
		fmt.Fprintf(stderr, "cordon-bench: %d suite(s) failed, %d target(s) missed\n", len(failed), len(missed))
		code = 1
	}
	return code
}

// writeResults writes the results file.
func writeResults(out string, res []Result, smoke bool) error {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := WriteMarkdown(f, res, time.Now(), smoke); err != nil {
		f.Close()
		return fmt.Errorf("results %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("results %s: %w", out, err)
	}
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
