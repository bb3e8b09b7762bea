// Package cli implements the cordon command line: flag parsing into each
// service's options and dispatch to the packages that do the work. It stays
// thin so that every command can be run in-process by tests.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Env is what a command gets: its output streams and a logger.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	Log    zerolog.Logger
}

// command is one subcommand of cordon.
type command struct {
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

// errUsage marks an error that is a usage mistake (exit status 2).
var errUsage = errors.New("usage")

// exitNoChDBLibrary is the exit status of a command that needed the chDB
// library (ClickHouse in-process) and could not load it; the message names
// the install command (make chdb). Commands that do not open a chDB store
// never load it.
const exitNoChDBLibrary = 3

func commands() map[string]command {
	return map[string]command{
		"version":   {"print the version", runVersion},
		"auditor":   {"run the auditor: usage into ClickHouse, the anomaly detectors, the analyst API", runAuditor},
		"sql":       {"query the usage, anomaly and token tables with read-only SQL (a running system or a replay)", runSQL},
		"anomalies": {"list the recent anomalies of a running system", runAnomalies},
		"report":    {"report on a token: what it may do, what it did, its denials and anomalies", runReport},
		"simulate":  {"generate realistic usage with labelled attacks (usage.jsonl + labels.json)", runSimulate},
		"replay":    {"run recorded events through the detectors and print the anomalies they raise", runReplay},
		"eval":      {"score the detectors on simulated usage with labelled attacks (recall, false alarms)", runEval},
		"creds":     {"generate least-privilege NATS credentials per service (NKeys + nats-server auth.conf)", runCreds},
		"up":        {"run every service in one process (embedded NATS and ClickHouse); --demo runs the leak drill", runUp},
		"issuer":    {"run the token issuer (HTTP API, NATS commands)", runIssuer},
		"token":     {"issue, list, inspect and rotate tokens through the issuer's API", runToken},
		"key":       {"list, rotate and retire the issuer's signing keys", runKey},
		"anchor":    {"generate the trust anchor that endorses the issuer's signing keys", runAnchor},
		"enforce":   {"run an enforcing reverse proxy in front of an HTTP service", runEnforce},
		"revoker":   {"run the revoker (denylist, response policy, on-call alerts)", runRevoker},
		"revoke":    {"revoke tokens by id, holder, key, tenant or issue time (over NATS)", runRevoke},
	}
}

// Version is set at build time with -ldflags "-X …/internal/cli.Version=…".
var Version = "dev"

func runVersion(_ context.Context, env *Env, _ []string) error {
	_, err := fmt.Fprintln(env.Stdout, "cordon", Version)
	return err
}

// Main runs cordon with args (without the program name) and returns the
// process exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	env := &Env{Stdout: stdout, Stderr: stderr, Log: newLogger(stderr)}
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "cordon: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	err := c.run(ctx, env, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "cordon %s: %v\n", args[0], err)
		return 2
	case chdbLibraryMissing(err):
		fmt.Fprintf(stderr, "cordon %s: %v\n", args[0], err)
		return exitNoChDBLibrary
	default:
		fmt.Fprintf(stderr, "cordon %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "cordon — narrow API tokens, checked on every request, revoked everywhere when misused")
	fmt.Fprintln(w, "\nUsage: cordon <command> [flags]   (cordon <command> -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nTry it: cordon up --demo runs the whole system on this machine and replays a token leak.")
}

// newLogger returns a console logger on w, coloured only when w is a
// terminal; CORDON_LOG_FORMAT=json gives JSON and CORDON_LOG_LEVEL sets the
// level (default info).
func newLogger(w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(strings.ToLower(os.Getenv("CORDON_LOG_LEVEL")))
	if err != nil || os.Getenv("CORDON_LOG_LEVEL") == "" {
		level = zerolog.InfoLevel
	}
	var out io.Writer = w
	if os.Getenv("CORDON_LOG_FORMAT") != "json" {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// newFlags returns a flag set for a subcommand that writes help to env.
func newFlags(env *Env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("cordon "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: cordon %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, turning a flag error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
