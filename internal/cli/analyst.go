package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
	"github.com/cordonhq/cordon/services/issuer"
)

// clientFlags are the flags of the analyst commands, which talk to a
// running auditor over NATS (by default as the identity `cordon up` wrote
// into .cordon/creds) with an admin token.
type clientFlags struct {
	auditor.ClientFlags
	nf *natsFlags
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	c.nf = addNATSFlags(fs, adminIdentity)
	c.RegisterFlags(fs, issuer.DefaultAdminTokenFile)
}

// client reads the admin token and connects to NATS.
func (c *clientFlags) client(env *Env, name string) (*auditor.Client, func(), error) {
	tok, err := readAdminToken(env, c.TokenFile)
	if err != nil {
		return nil, nil, err
	}
	nc, err := c.nf.connect(name)
	if err != nil {
		return nil, nil, err
	}
	return &auditor.Client{NC: nc, Token: tok}, nc.Close, nil
}

// call connects as name and runs fn within --timeout; its error is
// explained.
func (c *clientFlags) call(ctx context.Context, env *Env, name string, fn func(context.Context, *auditor.Client) error) error {
	cl, closeNC, err := c.client(env, name)
	if err != nil {
		return err
	}
	defer closeNC()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	return c.Explain(fn(ctx, cl))
}

// runSQL is `cordon sql "SELECT …"`: a read-only query against the running
// system's store, through the auditor, or against the store a replay kept
// (--replay-dir), in this process.
func runSQL(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "sql", `sql "SELECT …" [-o table|csv|json] [--nats URL] [--token-file FILE] [--replay-dir DIR]   ("-" reads the query from stdin)`)
	var c clientFlags
	c.register(fs)
	format := outputFlag(fs, store.FormatTable, "table, csv or json")
	replayDir := fs.String("replay-dir", "", "query the store that cordon replay --dir `DIR` kept, instead of the running system (same read-only gate and limits)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	for _, conflict := range []string{"token-file", "nats-creds", "nats"} {
		if *replayDir != "" && flagGiven(fs, conflict) {
			return fmt.Errorf("%w: --replay-dir queries a replay's store in this process; --%s is for a running system: choose one", errUsage, conflict)
		}
	}
	if err := checkFormat(*format, store.FormatTable, store.FormatCSV, store.FormatJSON); err != nil {
		return err
	}
	q := strings.TrimSpace(strings.Join(pos, " "))
	if q == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read query: %w", err)
		}
		q = strings.TrimSpace(string(b))
	}
	if q == "" {
		return fmt.Errorf("%w: a query is required, e.g. cordon sql \"SELECT count() FROM usage_events\"", errUsage)
	}
	// The auditor judges the query on the engine's own parse; only what
	// needs no engine (size, bytes) is checked here, to fail fast.
	if err := store.Precheck(q); err != nil {
		return err
	}
	if *replayDir != "" {
		res, err := replay.Query(ctx, *replayDir, q, c.Timeout, func(note string) { fmt.Fprintf(env.Stderr, "cordon sql: note: %s\n", note) })
		if err != nil {
			return err
		}
		return res.Write(env.Stdout, *format)
	}
	return c.call(ctx, env, "cordon-sql", func(ctx context.Context, cl *auditor.Client) error {
		res, err := cl.SQL(ctx, q)
		if err != nil {
			return err
		}
		if err := res.Write(env.Stdout, *format); err != nil {
			return err
		}
		if res.Truncated {
			fmt.Fprintf(env.Stderr, "cordon sql: showing %d of %d rows (a reply is one NATS message); add a LIMIT or aggregate\n", len(res.Rows), res.TotalRows)
		}
		return nil
	})
}

// parseSince reads --since: a duration back from now (90m, 24h, 7d) or an
// RFC 3339 time; empty means everything.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" || s == "all" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := policy.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: --since %q: want a duration such as 1h or 7d, or an RFC 3339 time", errUsage, s)
	}
	return now.Add(-d), nil
}

// runAnomalies is `cordon anomalies --since 1h`.
func runAnomalies(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "anomalies", "anomalies [--since 1h|7d|RFC3339|all] [--limit N] [-o table|csv|json] [--nats URL] [--token-file FILE]")
	var c clientFlags
	c.register(fs)
	since := fs.String("since", "24h", "anomalies detected since this long ago (90m, 24h, 7d), since an RFC 3339 time, or all")
	limit := fs.Int("limit", store.DefaultAnomalyLimit, "most anomalies listed, newest first")
	format := outputFlag(fs, store.FormatTable, "table, csv or json")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if err := checkFormat(*format, store.FormatTable, store.FormatCSV, store.FormatJSON); err != nil {
		return err
	}
	if *limit < 1 {
		return fmt.Errorf("%w: --limit %d: want at least 1", errUsage, *limit)
	}
	from, err := parseSince(*since, time.Now())
	if err != nil {
		return err
	}
	return c.call(ctx, env, "cordon-anomalies", func(ctx context.Context, cl *auditor.Client) error {
		as, truncated, err := cl.Anomalies(ctx, from, *limit)
		if err != nil {
			return err
		}
		if err := store.WriteAnomalies(env.Stdout, as, *format); err != nil {
			return err
		}
		if truncated {
			fmt.Fprintf(env.Stderr, "cordon anomalies: the list was cut to %d to fit one NATS message; narrow --since or --limit\n", len(as))
		}
		return nil
	})
}

// runReport is `cordon report token ID`.
func runReport(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "report", "report token ID [-o text|json] [--nats URL] [--token-file FILE]")
	var c clientFlags
	c.register(fs)
	format := outputFlag(fs, "text", "text or json")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "token" {
		return fmt.Errorf("%w: want `cordon report token ID`", errUsage)
	}
	if err := checkFormat(*format, "text", store.FormatJSON); err != nil {
		return err
	}
	return c.call(ctx, env, "cordon-report", func(ctx context.Context, cl *auditor.Client) error {
		rep, err := cl.Report(ctx, pos[1])
		switch {
		case err != nil:
			return err
		case *format == store.FormatJSON:
			return writeIndented(env.Stdout, rep)
		}
		return rep.WriteText(env.Stdout, time.Now())
	})
}
