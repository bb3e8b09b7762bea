package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/internal/replay"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/services/auditor"
)

// clientFlags are the connection flags of the analyst commands, which talk
// to a running auditor over NATS, as the admin identity (by default the
// one `cordon up` wrote into .cordon/creds).
type clientFlags struct {
	nf        *natsFlags
	tokenFile string
	timeout   time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	c.nf = addNATSFlags(fs, adminIdentity)
	fs.StringVar(&c.tokenFile, "token-file", getenvDefault("CORDON_TOKEN_FILE", ".cordon/admin.token"),
		"file holding a Cordon admin token with scope cordon:read ($CORDON_TOKEN_FILE)")
	fs.DurationVar(&c.timeout, "timeout", 60*time.Second, "how long to wait for the auditor's reply")
}

// client reads the admin token and connects to NATS.
func (c *clientFlags) client(name string) (*auditor.Client, func(), error) {
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read admin token: %w (pass --token-file or set $CORDON_TOKEN_FILE; the issuer writes its bootstrap token to <data>/admin.token)", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, nil, fmt.Errorf("read admin token: %s is empty", c.tokenFile)
	}
	nc, err := c.nf.connect(name)
	if err != nil {
		return nil, nil, err
	}
	return &auditor.Client{NC: nc, Token: tok}, nc.Close, nil
}

// explain makes a client error actionable.
func explain(err error) error {
	switch {
	case errors.Is(err, auditor.ErrNoAuditor):
		return err
	case errors.Is(err, auditor.ErrUnauthenticated):
		return fmt.Errorf("%w\n(the admin token was refused: mint a fresh one with `cordon token issue` or point --token-file at the issuer's admin.token)", err)
	case errors.Is(err, auditor.ErrForbidden):
		return fmt.Errorf("%w\n(the analyst API needs a token of tenant cordon with audience cordon and scope %s)", err, auditor.ScopeRead)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w (raise --timeout for a long query)", err)
	}
	return err
}

// runSQL is `cordon sql "SELECT …"`: a read-only query against the running
// system's store, through the auditor, or against the store a replay kept
// (--replay-dir), in this process.
func runSQL(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "sql", `sql "SELECT …" [-o table|csv|json] [--nats URL] [--token-file FILE] [--replay-dir DIR]   ("-" reads the query from stdin)`)
	var c clientFlags
	c.register(fs)
	format := outputFlag(fs, store.FormatTable, "table, csv or json")
	replayDir := fs.String("replay-dir", "", "query the store that `cordon replay --dir DIR` kept, instead of the running system (same read-only gate and limits)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *replayDir != "" {
		var conflict string
		fs.Visit(func(fl *flag.Flag) {
			if fl.Name == "nats" || fl.Name == "token-file" || fl.Name == "nats-creds" {
				conflict = fl.Name
			}
		})
		if conflict != "" {
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
		return sqlReplayDir(ctx, env, *replayDir, q, *format, c.timeout)
	}
	cl, closeNC, err := c.client("cordon-sql")
	if err != nil {
		return err
	}
	defer closeNC()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := cl.SQL(ctx, q)
	if err != nil {
		return explain(err)
	}
	if err := res.Write(env.Stdout, *format); err != nil {
		return err
	}
	if res.Truncated {
		fmt.Fprintf(env.Stderr, "cordon sql: showing %d of %d rows (a reply is one NATS message); add a LIMIT or aggregate\n", len(res.Rows), res.TotalRows)
	}
	return nil
}

// sqlReplayDir runs an analyst's query on the chDB store of a replay
// directory, opened in this process (chDB holds one data path per process;
// the replay that wrote it has ended: the directory's lock says so), through
// the store's read-only gate and limits, as the auditor would run it.
func sqlReplayDir(ctx context.Context, env *Env, dir, q, format string, timeout time.Duration) error {
	d, err := replay.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("--replay-dir: %w", err)
	}
	defer d.Close()
	path, db, ok := d.Store()
	if !ok {
		return fmt.Errorf("--replay-dir: %s: the replay kept its store outside the directory", dir)
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("--replay-dir: %s holds no store yet (%s)", dir, d.Describe())
	}
	if last := d.Record.Last(); last != nil && (last.Finished.IsZero() || last.Error != "") {
		fmt.Fprintf(env.Stderr, "cordon sql: note: the store may be incomplete: %s\n", d.Describe())
	}
	if _, err := keepStdinFromChDB(); err != nil {
		return err
	}
	b, err := openChDB(ctx, path, db)
	if err != nil {
		return fmt.Errorf("--replay-dir: %w", err)
	}
	qt := min(max(timeout, time.Second), store.MaxQueryTimeout)
	s, err := store.Open(ctx, b, store.Options{QueryTimeout: qt})
	if err != nil {
		_ = b.Close()
		return fmt.Errorf("--replay-dir: %w", err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := s.Query(ctx, q)
	if err != nil {
		return err
	}
	return res.Write(env.Stdout, format)
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
	cl, closeNC, err := c.client("cordon-anomalies")
	if err != nil {
		return err
	}
	defer closeNC()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	as, truncated, err := cl.Anomalies(ctx, from, *limit)
	if err != nil {
		return explain(err)
	}
	if err := writeAnomalies(env.Stdout, as, *format); err != nil {
		return err
	}
	if truncated {
		fmt.Fprintf(env.Stderr, "cordon anomalies: the list was cut to %d to fit one NATS message; narrow --since or --limit\n", len(as))
	}
	return nil
}

// writeAnomalies writes anomalies as a table, CSV or JSON.
func writeAnomalies(w io.Writer, as []store.Anomaly, format string) error {
	switch format {
	case store.FormatJSON:
		if as == nil {
			as = []store.Anomaly{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(as)
	case store.FormatCSV:
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"detected", "event_time", "detector", "severity", "token_id", "tenant", "holder", "source_ip", "seen", "baseline", "anomaly_id", "event_id"})
		for _, a := range as {
			_ = cw.Write([]string{a.Time.UTC().Format(time.RFC3339Nano), a.EventTime.UTC().Format(time.RFC3339Nano), a.Detector, a.Severity,
				a.TokenID, a.Tenant, a.Holder, a.SourceIP, a.Evidence.Seen, a.Evidence.Baseline, a.AnomalyID, a.EventID})
		}
		cw.Flush()
		return cw.Error()
	}
	if len(as) == 0 {
		_, err := fmt.Fprintln(w, "no anomalies")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDETECTOR\tSEVERITY\tTOKEN\tHOLDER\tSOURCE IP\tSEEN\tBASELINE")
	for _, a := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\n", a.EventTime.UTC().Format(time.RFC3339), a.Detector, a.Severity, a.TokenID,
			a.Tenant, a.Holder, a.SourceIP, clipText(a.Evidence.Seen, 60), clipText(a.Evidence.Baseline, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "(%d anomalies)\n", len(as))
	return err
}

func clipText(s string, n int) string {
	s = strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
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
	cl, closeNC, err := c.client("cordon-report")
	if err != nil {
		return err
	}
	defer closeNC()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	rep, err := cl.Report(ctx, pos[1])
	if err != nil {
		return explain(err)
	}
	if *format == store.FormatJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return writeReport(env.Stdout, rep, time.Now())
}

// writeReport writes a token report for people: what the token may do,
// what it did, its denials and anomalies.
func writeReport(w io.Writer, r *store.Report, now time.Time) error {
	var b strings.Builder
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	list := func(s []string) string {
		if len(s) == 0 {
			return "any"
		}
		return strings.Join(s, ", ")
	}
	fmt.Fprintf(&b, "token %s  %s/%s  status: %s\n\n", r.TokenID, orDash(r.Tenant), orDash(r.Holder), r.Status)

	b.WriteString("MAY (the ledger)\n")
	if r.Grant == nil {
		b.WriteString("  no issue record: the token predates the ledger or was never issued by this Cordon\n")
	} else {
		g := r.Grant
		fmt.Fprintf(&b, "  issued      %s by %s (key %s)\n", ts(g.Time), orDash(g.Actor), orDash(g.KeyID))
		if g.RequestedIP != "" || g.RequestedClient != "" {
			fmt.Fprintf(&b, "  requested   from %s with %s\n", orDash(g.RequestedIP), orDash(g.RequestedClient))
		}
		fmt.Fprintf(&b, "  scopes      %s\n", list(g.Scopes))
		fmt.Fprintf(&b, "  audience    %s\n", list(g.Audience))
		fmt.Fprintf(&b, "  networks    %s\n", list(g.Networks))
		if g.Environment != "" {
			fmt.Fprintf(&b, "  environment %s\n", g.Environment)
		}
		for _, win := range g.Windows {
			fmt.Fprintf(&b, "  window      %s %s-%s %s\n", strings.Join(win.Days, ","), win.Start, win.End, win.Zone)
		}
		if g.Device != "" {
			fmt.Fprintf(&b, "  device      %s\n", g.Device)
		}
		valid := "valid " + ts(g.NotBefore) + " → " + ts(g.Expiry)
		if !g.Expiry.IsZero() && g.Expiry.After(now) {
			valid += fmt.Sprintf(" (expires in %s)", g.Expiry.Sub(now).Round(time.Minute))
		}
		fmt.Fprintf(&b, "  %s\n", valid)
		if g.RotatedFrom != "" {
			fmt.Fprintf(&b, "  rotated from %s\n", g.RotatedFrom)
		}
		if g.BreakGlass {
			b.WriteString("  break-glass token\n")
		}
	}
	for _, e := range r.Ledger {
		switch e.Type {
		case "rotated":
			fmt.Fprintf(&b, "  rotated     %s by %s → %s (grace until %s)\n", ts(e.Time), orDash(e.Actor), e.SuccessorID, ts(e.GraceUntil))
		case "revoked":
			fmt.Fprintf(&b, "  revoked     %s by %s: %s", ts(e.Time), orDash(e.Actor), orDash(e.Reason))
			if e.AnomalyID != "" {
				fmt.Fprintf(&b, " (anomaly %s)", e.AnomalyID)
			}
			b.WriteByte('\n')
		case "expired":
			fmt.Fprintf(&b, "  expired     %s\n", ts(e.Time))
		}
	}

	fmt.Fprintf(&b, "\nDID (usage)\n  %d requests: %d allowed, %d denied", r.Requests, r.Allowed, r.Denied)
	if r.Requests > 0 {
		fmt.Fprintf(&b, "; first %s, last %s", ts(r.FirstSeen), ts(r.LastSeen))
	}
	b.WriteByte('\n')
	counts := func(title string, cs []store.UsageCount) {
		if len(cs) == 0 {
			return
		}
		fmt.Fprintf(&b, "  %s\n", title)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, c := range cs {
			v := c.Value
			if v == "" {
				v = "(none)"
			}
			fmt.Fprintf(tw, "    %s\t%d requests\t%d allowed\t%d denied\t\n", v, c.Requests, c.Allowed, c.Denied)
		}
		_ = tw.Flush()
	}
	counts("scopes", r.Scopes)
	counts("services", r.Services)
	counts("source IPs", r.SourceIPs)
	if named(r.Clients) {
		counts("clients", r.Clients)
	}
	if named(r.Devices) {
		counts("devices (client certificate)", r.Devices)
	}
	if len(r.Resources) > 0 {
		b.WriteString("  resources by route\n")
		for _, rr := range r.Resources {
			fmt.Fprintf(&b, "    %s %s: %d distinct in %d requests\n", rr.Method, rr.Route, rr.Distinct, rr.Requests)
			shown := rr.Resources[:min(len(rr.Resources), reportResourcesShown)]
			tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
			for _, c := range shown {
				fmt.Fprintf(tw, "      %s\t%d requests\t%d allowed\t%d denied\t\n", c.Value, c.Requests, c.Allowed, c.Denied)
			}
			_ = tw.Flush()
			if more := rr.Distinct - uint64(len(shown)); more > 0 {
				fmt.Fprintf(&b, "      … and %d more (-o json lists the %d busiest)\n", more, len(rr.Resources))
			}
		}
	}
	if r.Requests > 0 {
		b.WriteString("  hours (UTC)\n")
		var peak uint64
		for _, n := range r.Hours {
			peak = max(peak, n)
		}
		for h, n := range r.Hours {
			if n == 0 {
				continue
			}
			bar := strings.Repeat("█", int((n*30+peak-1)/max(peak, 1)))
			fmt.Fprintf(&b, "    %02dh %-30s %d\n", h, bar, n)
		}
	}
	if r.Grant != nil {
		if len(r.UnusedScopes) > 0 {
			fmt.Fprintf(&b, "  granted, never used: %s  (narrow the grant?)\n", strings.Join(r.UnusedScopes, ", "))
		}
		if len(r.UngrantedScopes) > 0 {
			fmt.Fprintf(&b, "  asked for, not granted: %s\n", strings.Join(r.UngrantedScopes, ", "))
		}
	}

	fmt.Fprintf(&b, "\nDENIALS (%d)\n", r.Denied)
	if len(r.Denials) == 0 {
		b.WriteString("  none\n")
	}
	denials := append([]store.ReasonCount(nil), r.Denials...)
	sort.SliceStable(denials, func(i, j int) bool { return denials[i].Count > denials[j].Count })
	for _, d := range denials {
		fmt.Fprintf(&b, "  %-20s %d\n", d.Reason, d.Count)
	}

	fmt.Fprintf(&b, "\nANOMALIES (%d)\n", len(r.Anomalies))
	if len(r.Anomalies) == 0 {
		b.WriteString("  none\n")
	}
	for _, a := range r.Anomalies {
		fmt.Fprintf(&b, "  %s  %-16s %-8s from %s\n      seen:     %s\n      baseline: %s\n", ts(a.EventTime), a.Detector, a.Severity,
			orDash(a.SourceIP), a.Evidence.Seen, a.Evidence.Baseline)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// reportResourcesShown is how many resources per route the text report
// shows; the JSON report has them all.
const reportResourcesShown = 10

// named reports whether a count list has a value other than "" (requests
// that reported none).
func named(cs []store.UsageCount) bool {
	for _, c := range cs {
		if c.Value != "" {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
