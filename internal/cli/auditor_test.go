//go:build !nochdb

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/simulate"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/store/chdbstore"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

// chdbPath is the one chDB data path of this test binary (chDB holds one
// per process); tests are told apart by database name.
var (
	chdbPath string
	dbSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cli-chdb-")
	if err != nil {
		panic(err)
	}
	chdbPath = dir
	// Private pipelines (replay, eval) share the path too.
	pipelineBackend = func(ctx context.Context) (store.Backend, error) {
		return chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: fmt.Sprintf("cli_pipeline_%d", dbSeq.Add(1))})
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const policyHead = "version: 1\nholders:\n  - tenant: acme\n    holder: billing-api\n    scopes: [invoices:read]\n    audiences: [payments]\n    max_ttl: 24h\n"

func TestAuditorFlags(t *testing.T) {
	good := writeFile(t, "good.yaml", policyHead+"detectors:\n  cooldown: 30m\n  odd_hours:\n    enabled: false\n  scope_probing:\n    min_distinct: 4\n")
	unknown := writeFile(t, "unknown.yaml", policyHead+"detectors:\n  scope_probing:\n    window: 5m\n    denied_scopes: 5\n")
	outOfRange := writeFile(t, "range.yaml", policyHead+"detectors:\n  cooldown: 1h\n  scope_probing:\n    window: 5m\n    min_distinct: 1\n")
	wrongType := writeFile(t, "type.yaml", policyHead+"detectors:\n  cooldown: soon\n")
	twice := writeFile(t, "twice.yaml", policyHead+"detectors:\n  cooldown: 1h\n  cooldown: 2h\n")
	cases := []struct {
		name    string
		args    []string
		usage   bool
		wantOut string
		wantErr string
	}{
		{name: "defaults", args: []string{"--check-config"},
			wantOut: "detectors from default thresholds: new_network, odd_hours, scope_probing, use_after_revoke, volume_spike, multi_network, new_client, issuance_mismatch, new_action, resource_sweep, forging_burst, risk_score; store chdb at .cordon/chdb, database cordon, retention forever"},
		{name: "policy detectors", args: []string{"--check-config", "--policy", good, "--retention-days", "30"},
			wantOut: "new_network, scope_probing, use_after_revoke, volume_spike, multi_network, new_client, issuance_mismatch, new_action, resource_sweep, forging_burst, risk_score; store chdb"},
		{name: "clickhouse", args: []string{"--check-config", "--store", "clickhouse", "--clickhouse-addr", "ch.internal:8443", "--clickhouse-tls",
			"--clickhouse-database", "audit"}, wantOut: "store clickhouse at ch.internal:8443, database audit"},
		{name: "unknown field", args: []string{"--check-config", "--policy", unknown},
			wantErr: "unknown.yaml:11: detectors.scope_probing: unknown field \"denied_scopes\""},
		{name: "out of range", args: []string{"--check-config", "--policy", outOfRange},
			wantErr: "range.yaml:12: detectors: invalid detector config: scope_probing.min_distinct"},
		{name: "wrong type", args: []string{"--check-config", "--policy", wrongType}, wantErr: "line 9"},
		{name: "set twice", args: []string{"--check-config", "--policy", twice}, wantErr: "twice.yaml:10: detectors: field \"cooldown\" is set twice"},
		{name: "missing policy", args: []string{"--check-config", "--policy", "/nonexistent/policy.yaml"}, wantErr: "nonexistent"},
		{name: "bad store", args: []string{"--store", "postgres"}, usage: true, wantErr: "--store \"postgres\""},
		{name: "bad addr", args: []string{"--store", "clickhouse", "--clickhouse-addr", "ch"}, usage: true, wantErr: "--clickhouse-addr"},
		{name: "bad database", args: []string{"--clickhouse-database", "a-b"}, usage: true, wantErr: "--clickhouse-database"},
		{name: "negative retention", args: []string{"--retention-days", "-1"}, usage: true, wantErr: "--retention-days"},
		{name: "replicas", args: []string{"--replicas", "0"}, usage: true, wantErr: "--replicas"},
		{name: "writers", args: []string{"--writers", "99"}, usage: true, wantErr: "--writers"},
		{name: "batch wait", args: []string{"--batch-wait", "0s"}, usage: true, wantErr: "--batch-wait"},
		{name: "metrics", args: []string{"--metrics-listen", "nope"}, usage: true, wantErr: "--metrics-listen"},
		{name: "analyst limits", args: []string{"--check-config", "--sql-timeout", "30s", "--sql-max-rows", "500", "--sql-max-memory-mb", "256"},
			wantOut: "analyst queries: 30s, 256 MiB, 500 rows"},
		{name: "analyst user", args: []string{"--check-config", "--store", "clickhouse", "--clickhouse-user", "cordon",
			"--clickhouse-analyst-user", "cordon_analyst"}, wantOut: "store clickhouse"},
		{name: "analyst user is the writer", args: []string{"--store", "clickhouse", "--clickhouse-user", "cordon",
			"--clickhouse-analyst-user", "cordon"}, usage: true, wantErr: "separate, read-only user"},
		{name: "analyst user without a server", args: []string{"--clickhouse-analyst-user", "ro"}, usage: true, wantErr: "--clickhouse-analyst-user"},
		{name: "sql timeout under a second", args: []string{"--sql-timeout", "500ms"}, usage: true, wantErr: "query timeout"},
		{name: "sql timeout unbounded", args: []string{"--sql-timeout", "0s"}, usage: true, wantErr: "--sql-timeout"},
		{name: "sql rows", args: []string{"--sql-max-rows", "0"}, usage: true, wantErr: "--sql-max-rows"},
		{name: "unknown flag", args: []string{"--chdb", "x"}, usage: true, wantErr: "flag provided but not defined"},
		{name: "argument", args: []string{"now"}, usage: true, wantErr: "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, out, _ := testEnv()
			err := runAuditor(context.Background(), env, tc.args)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out.String(), tc.wantOut) {
					t.Fatalf("output %q lacks %q", out.String(), tc.wantOut)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Fatalf("usage error = %v, want %v (%v)", errors.Is(err, errUsage), tc.usage, err)
			}
		})
	}
}

// analystEnv runs what `cordon auditor` runs for analysts — a store on
// chDB and the query service behind an enforcer — on an embedded NATS, and
// writes an admin token file.
type analystEnv struct {
	nats, tokenFile string
	store           *store.Store
	tokenID         string
}

func startAnalystEnv(t *testing.T) *analystEnv {
	t.Helper()
	ctx := context.Background()
	env := natstest.Run(t)
	b, err := chdbstore.Open(ctx, chdbstore.Options{Path: chdbPath, Database: fmt.Sprintf("cli_analyst_%d", dbSeq.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, b, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	env.PublishKey(t, signer)
	auth, err := auditor.StartAdminAuth(ctx, env.JS, env.Anchors(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	qs, err := auditor.NewQueryServer(auditor.QueryOptions{NC: env.NC, Store: st, Auth: auth, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := qs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qs.Close() })
	a := &analystEnv{nats: env.Server.ClientURL(), store: st, tokenID: uuid.Must(uuid.NewV7()).String()}
	now := time.Now()
	claims := token.Claims{ID: a.tokenID, Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"}, Audience: []string{"cordon"},
		IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
	tok, err := signer.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	// The analyst API knows admin tokens from the ledger, as the issuer
	// records them.
	recordIssued(t, env.JS, signer.KeyID, claims)
	a.tokenFile = writeFile(t, "admin.token", tok+"\n")
	return a
}

func (a *analystEnv) args(extra ...string) []string {
	return append([]string{"--nats", a.nats, "--token-file", a.tokenFile}, extra...)
}

// seed writes a token's ledger entry, usage and an anomaly.
func (a *analystEnv) seed(t *testing.T, tok string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	issued, _ := events.New("issuer", at, &events.TokenIssued{TokenID: tok, Tenant: "acme", Holder: "billing", KeyID: "k1", Actor: "cordon/admin:x",
		Claims: events.TokenClaims{Scopes: []string{"invoices:read", "invoices:write"}, Audience: []string{"invoices"}, Networks: []string{"10.0.0.0/8"},
			Windows: []events.Window{{Days: []string{"mon", "tue"}, Start: "08:00", End: "18:00", Zone: "Europe/Paris"}}, Expiry: at.Add(90 * 24 * time.Hour)},
		Requested: &events.IssuanceContext{SourceIP: "10.20.1.7", Client: "Boto3/1"}})
	if err := a.store.InsertLedger(ctx, []events.Envelope{issued}); err != nil {
		t.Fatal(err)
	}
	var uses []events.Envelope
	for i := 0; i < 12; i++ {
		u := &events.UsageDecided{TokenID: tok, Tenant: "acme", Holder: "billing", KeyID: "k1", Enforcer: "edge-1", Service: "invoices",
			SourceIP: "10.0.0.1", Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", Decision: events.DecisionAllow, Reason: "ok",
			Resource: fmt.Sprint(40 + i%3), Client: "curl/8"}
		if i >= 9 {
			u.SourceIP, u.Scope, u.Decision, u.Reason = "203.0.113.9", "admin:write", events.DecisionDeny, "scope_missing"
		}
		e, _ := events.New("test", at.Add(time.Duration(i)*time.Hour), u)
		uses = append(uses, e)
	}
	if err := a.store.InsertUsage(ctx, uses); err != nil {
		t.Fatal(err)
	}
	an, _ := events.New("auditor", uses[9].Time, &events.AnomalyDetected{AnomalyID: uuid.Must(uuid.NewV7()).String(), Detector: "new_network",
		Severity: "medium", TokenID: tok, Tenant: "acme", Holder: "billing", EventID: uses[9].ID.String(), EventTime: uses[9].Time,
		SourceIP: "203.0.113.9", Evidence: events.Evidence{Seen: "203.0.113.0/24", Baseline: "10.0.0.0/24"}})
	if err := a.store.InsertAnomalies(ctx, []events.Envelope{an}); err != nil {
		t.Fatal(err)
	}
}

func TestAnalystCommands(t *testing.T) {
	a := startAnalystEnv(t)
	tok := uuid.Must(uuid.NewV7()).String()
	at := time.Now().UTC().Add(-20 * time.Hour).Truncate(time.Second)
	a.seed(t, tok, at)
	ctx := context.Background()
	run := func(t *testing.T, fn func(context.Context, *Env, []string) error, args ...string) (string, string, error) {
		t.Helper()
		env, out, errb := testEnv()
		err := fn(ctx, env, args)
		return out.String(), errb.String(), err
	}

	t.Run("sql csv, flags after the query", func(t *testing.T) {
		out, _, err := run(t, runSQL, append([]string{"SELECT decision, count() AS n FROM usage_events WHERE token_id = '" + tok + "' GROUP BY decision ORDER BY decision", "-o", "csv"}, a.args()...)...)
		if err != nil {
			t.Fatal(err)
		}
		if out != "decision,n\nallow,9\ndeny,3\n" {
			t.Fatalf("csv = %q", out)
		}
	})
	t.Run("sql json", func(t *testing.T) {
		out, _, err := run(t, runSQL, a.args("-o", "json", "SELECT count() AS n, max(time) AS last FROM usage_events")...)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Columns []store.Column `json:"columns"`
			Rows    [][]any        `json:"rows"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Rows) != 1 || got.Rows[0][0] != 12.0 || got.Columns[1].Type != "DateTime64(6, 'UTC')" {
			t.Fatalf("json = %s (%v)", out, err)
		}
	})
	t.Run("sql table", func(t *testing.T) {
		out, _, err := run(t, runSQL, a.args("SELECT", "scope,", "count()", "AS", "n", "FROM", "usage_events", "GROUP", "BY", "scope", "ORDER", "BY", "scope")...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "admin:write") || !strings.Contains(out, "(2 rows)") {
			t.Fatalf("table = %q", out)
		}
	})
	t.Run("sql refuses writes before sending", func(t *testing.T) {
		_, _, err := run(t, runSQL, a.args("DROP TABLE usage_events_raw")...)
		if !errors.Is(err, store.ErrNotReadOnly) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("sql bad format", func(t *testing.T) {
		_, _, err := run(t, runSQL, a.args("-o", "xml", "SELECT 1")...)
		if !errors.Is(err, errUsage) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("anomalies", func(t *testing.T) {
		out, _, err := run(t, runAnomalies, a.args("--since", "2d")...)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"DETECTOR", "new_network", tok, "acme/billing", "203.0.113.0/24", "(1 anomalies)"} {
			if !strings.Contains(out, want) {
				t.Errorf("table lacks %q:\n%s", want, out)
			}
		}
		out, _, err = run(t, runAnomalies, a.args("--since", "1h", "-o", "json")...)
		if err != nil || strings.TrimSpace(out) != "[]" {
			t.Errorf("anomalies of the last hour = %q, %v; want none", out, err)
		}
	})
	t.Run("report", func(t *testing.T) {
		out, _, err := run(t, runReport, append([]string{"token", tok}, a.args()...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"token " + tok, "acme/billing", "status: active", "scopes      invoices:read, invoices:write",
			"networks    10.0.0.0/8", "window      mon,tue 08:00-18:00 Europe/Paris", "12 requests: 9 allowed, 3 denied",
			"203.0.113.9", "granted, never used: invoices:write", "asked for, not granted: admin:write", "scope_missing",
			"ANOMALIES (1)", "new_network", "baseline: 10.0.0.0/24", "requested   from 10.20.1.7 with Boto3/1",
			"clients", "curl/8", "GET /invoices/{id}: 3 distinct in 12 requests"} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q:\n%s", want, out)
			}
		}
		out, _, err = run(t, runReport, append([]string{"token", tok, "-o", "json"}, a.args()...)...)
		var rep store.Report
		if err != nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Requests != 12 {
			t.Errorf("json report: %v %+v", err, rep)
		}
		_, _, err = run(t, runReport, append([]string{"token", uuid.NewString()}, a.args()...)...)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown token: %v", err)
		}
		_, _, err = run(t, runReport, a.args("holder", "x")...)
		if !errors.Is(err, errUsage) {
			t.Errorf("report holder: %v", err)
		}
	})
	t.Run("missing token file", func(t *testing.T) {
		_, _, err := run(t, runSQL, "--nats", a.nats, "--token-file", "/nonexistent/admin.token", "SELECT 1")
		if err == nil || !strings.Contains(err.Error(), "--token-file") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("refused token", func(t *testing.T) {
		bad := writeFile(t, "bad.token", "cdn_not_a_token\n")
		_, _, err := run(t, runAnomalies, "--nats", a.nats, "--token-file", bad)
		if !errors.Is(err, auditor.ErrUnauthenticated) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestAnalystCommandsWithoutAuditor(t *testing.T) {
	env := natstest.Run(t)
	tf := writeFile(t, "admin.token", "x\n")
	e, _, _ := testEnv()
	err := runSQL(context.Background(), e, []string{"--nats", env.Server.ClientURL(), "--token-file", tf, "SELECT 1"})
	if err == nil || !strings.Contains(err.Error(), "no auditor answered on cordon.cmd.sql: is `cordon up`") {
		t.Fatalf("err = %v", err)
	}
	err = runAnomalies(context.Background(), e, []string{"--nats", "nats://127.0.0.1:1", "--token-file", tf})
	if err == nil || !strings.Contains(err.Error(), "connect to NATS at nats://127.0.0.1:1") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"1h", now.Add(-time.Hour), false},
		{"7d", now.Add(-7 * 24 * time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"2026-11-01T00:00:00Z", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), false},
		{"all", time.Time{}, false},
		{"yesterday", time.Time{}, true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := parseSince(c.in, now)
			if (err != nil) != c.err || !got.Equal(c.want) {
				t.Fatalf("parseSince(%q) = %v, %v", c.in, got, err)
			}
		})
	}
}

func TestSimulateReplayEval(t *testing.T) {
	dir := t.TempDir()
	small := []string{"--days", "7", "--holders", "12", "--events", "15000", "--attacks-per-kind", "1", "--seed", "3"}
	env, out, _ := testEnv()
	if err := runSimulate(context.Background(), env, append([]string{"--out", dir}, small...)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "labelled attacks (") || !strings.Contains(out.String(), "1 leaked_replay") {
		t.Errorf("simulate output: %s", out.String())
	}
	f, err := os.Open(filepath.Join(dir, simulateLabels))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := simulate.ReadLabels(f)
	f.Close()
	if err != nil || len(labels.Attacks) != len(simulate.DefaultScenario().Attacks) || labels.Scenario.Seed != 3 {
		t.Fatalf("labels: %d attacks, seed %d, %v", len(labels.Attacks), labels.Scenario.Seed, err)
	}

	// A bad line in the middle: reported with its number, skipped.
	data, err := os.ReadFile(filepath.Join(dir, simulateEvents))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitN(data, []byte("\n"), 3)
	withBad := filepath.Join(dir, "with-bad.jsonl")
	if err := os.WriteFile(withBad, bytes.Join([][]byte{lines[0], lines[1], []byte(`{"broken":`), lines[2]}, []byte("\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	env, out, _ = testEnv()
	if err := runReplay(context.Background(), env, []string{withBad, "--no-progress"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TIME", "DETECTOR", "SEVERITY", "BASELINE", "bad lines:         1", "line 3: malformed event", "anomalies:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("replay output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "no anomalies") {
		t.Errorf("replay of a scenario with attacks found nothing:\n%s", out.String())
	}

	env, out, errb := testEnv()
	if err := runReplay(context.Background(), env, []string{filepath.Join(dir, simulateEvents), "-o", "json"}); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Usage     int `json:"usage"`
		Bad       int `json:"bad"`
		Anomalies []struct {
			Detector string `json:"detector"`
			TokenID  string `json:"token_id"`
		} `json:"anomalies"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Usage == 0 || res.Bad != 0 || len(res.Anomalies) == 0 {
		t.Fatalf("json replay: %v %+v\n%s", err, res, out.String())
	}
	if !strings.Contains(errb.String(), "replaying") {
		t.Errorf("no progress bar on stderr: %q", errb.String())
	}

	// `cordon eval` is tested in eval_test.go.
}

func TestReplayFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no file", nil, "want one FILE.jsonl"},
		{"two files", []string{"a.jsonl", "b.jsonl"}, "want one FILE.jsonl"},
		{"bad format", []string{"a.jsonl", "-o", "csv"}, "-o \"csv\""},
		{"policy with nats", []string{"a.jsonl", "--nats", "nats://127.0.0.1:1", "--policy", "p.yaml"}, "--policy applies to the private pipeline"},
		{"bad wait", []string{"a.jsonl", "--wait", "0s"}, "--wait"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, _, _ := testEnv()
			err := runReplay(context.Background(), env, c.args)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want usage error %q", err, c.wantErr)
			}
		})
	}
	env, _, _ := testEnv()
	if err := runReplay(context.Background(), env, []string{"/nonexistent.jsonl"}); err == nil || errors.Is(err, errUsage) {
		t.Fatalf("missing file: %v", err)
	}
	for _, args := range [][]string{{"--holders", "0", "--out", "x"}, {"--days", "1", "--out", "x"}, {"--days", "7"}} {
		env, _, _ := testEnv()
		if err := runSimulate(context.Background(), env, args); !errors.Is(err, errUsage) {
			t.Errorf("simulate %v: %v, want usage error", args, err)
		}
	}
}

// TestAuditorCommand runs `cordon auditor` on an embedded NATS server: it
// writes published usage to ClickHouse and answers `cordon sql` and
// `cordon anomalies` with the issuer's admin token.
func TestAuditorCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nenv := natstest.Run(t)
	signer, err := token.GenerateSigner(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nenv.PublishKey(t, signer)
	now := time.Now()
	claims := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"},
		Audience: []string{"cordon"}, IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
	admin, _ := signer.Mint(claims)
	recordIssued(t, nenv.JS, signer.KeyID, claims)
	tf := writeFile(t, "admin.token", admin)
	url := nenv.Server.ClientURL()

	aenv, _, logs := testEnv()
	done := make(chan error, 1)
	go func() {
		done <- runAuditor(ctx, aenv, []string{"--nats", url, "--chdb-path", chdbPath, "--clickhouse-database", fmt.Sprintf("cli_auditor_%d", dbSeq.Add(1)),
			"--state", t.TempDir(), "--batch-wait", "20ms", "--trust-anchor", nenv.Anchor.Public().String()})
	}()
	for i := 0; i < 5; i++ {
		e, _ := events.New("enforcer/edge-1", now.Add(time.Duration(i)*time.Second), &events.UsageDecided{TokenID: "tok-1", Tenant: "acme",
			Holder: "billing", Enforcer: "edge-1", Service: "invoices", SourceIP: "10.0.0.1", Method: "GET", Route: "/invoices", Scope: "invoices:list",
			Decision: events.DecisionAllow, Reason: "ok"})
		b, _ := events.Encode(e)
		if _, err := nenv.JS.Publish(ctx, events.Subject(e), b); err != nil {
			t.Fatal(err)
		}
	}
	natstest.WaitFor(t, 20*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("auditor stopped: %v\n%s", err, logs.String())
		default:
		}
		env, out, _ := testEnv()
		if err := runSQL(ctx, env, []string{"--nats", url, "--token-file", tf, "-o", "csv", "SELECT count() AS n FROM usage_events"}); err != nil {
			return err
		}
		if out.String() != "n\n5\n" {
			return fmt.Errorf("count = %q", out.String())
		}
		return nil
	})
	env, out, _ := testEnv()
	if err := runAnomalies(ctx, env, []string{"--nats", url, "--token-file", tf, "--since", "all"}); err != nil || !strings.Contains(out.String(), "no anomalies") {
		t.Fatalf("anomalies: %v %q", err, out.String())
	}

	// Replay into the running system: its auditor analyses the events.
	dir := t.TempDir()
	env, _, _ = testEnv()
	if err := runSimulate(ctx, env, []string{"--out", dir, "--days", "7", "--holders", "12", "--events", "15000", "--attacks-per-kind", "1"}); err != nil {
		t.Fatal(err)
	}
	env, out, _ = testEnv()
	if err := runReplay(ctx, env, []string{filepath.Join(dir, simulateEvents), "--nats", url, "--token-file", tf, "--no-progress"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "DETECTOR") || !strings.Contains(out.String(), "bad lines:         0") || strings.Contains(out.String(), "no anomalies") {
		t.Fatalf("replay into the running system:\n%s", out.String())
	}
	env, out, _ = testEnv()
	if err := runAnomalies(ctx, env, []string{"--nats", url, "--token-file", tf, "--since", "all", "-o", "csv"}); err != nil ||
		strings.Count(out.String(), "\n") < 2 {
		t.Fatalf("anomalies after the replay: %v %q", err, out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("auditor: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("auditor did not stop")
	}
	if strings.Contains(logs.String(), admin) {
		t.Fatal("the admin token was logged")
	}
}
