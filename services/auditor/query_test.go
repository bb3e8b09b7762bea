package auditor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/adminauth"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
	"github.com/cordonhq/cordon/pkg/token"
	"github.com/cordonhq/cordon/services/auditor"
)

// queryEnv is a running query service on real NATS and chDB, with an
// issuer key in the keys bucket to mint callers' tokens with.
type queryEnv struct {
	env    *natstest.Env
	store  *store.Store
	signer token.Signer
	srv    *auditor.QueryServer
}

func startQueryEnv(t *testing.T, db string, o auditor.QueryOptions) *queryEnv {
	t.Helper()
	ctx := context.Background()
	q := &queryEnv{env: natstest.Run(t), store: openStore(t, db)}
	var err error
	if q.signer, err = token.GenerateSigner(time.Now()); err != nil {
		t.Fatal(err)
	}
	q.env.PublishKey(t, q.signer)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	auth, err := auditor.StartAdminAuth(sctx, q.env.JS, q.env.Anchors(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	o.NC, o.Store, o.Auth, o.Log = q.env.NC, q.store, auth, zerolog.New(zerolog.NewTestWriter(t))
	if q.srv, err = auditor.NewQueryServer(o); err != nil {
		t.Fatal(err)
	}
	if err := q.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.srv.Close() })
	return q
}

// mint returns a token of tenant, with scopes and audience, valid now,
// recorded on the ledger as the issuer records the tokens it mints.
func (q *queryEnv) mint(t *testing.T, tenant string, scopes, audience []string, mod ...func(*token.Claims)) (id, tok string) {
	t.Helper()
	c, tok := q.forge(t, tenant, scopes, audience, mod...)
	e, err := events.New("issuer/test", time.Unix(c.IssuedAt, 0), &events.TokenIssued{TokenID: c.ID, Tenant: c.Tenant, Holder: c.Holder,
		KeyID: q.signer.KeyID, Claims: adminauth.LedgerClaims(c), Actor: "issuer:test", BreakGlass: c.BreakGlass})
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.env.JS.Publish(context.Background(), events.Subject(e), b); err != nil {
		t.Fatal(err)
	}
	return c.ID, tok
}

// forge mints a token with the issuer's key without recording it: what an
// attacker holding the key can do.
func (q *queryEnv) forge(t *testing.T, tenant string, scopes, audience []string, mod ...func(*token.Claims)) (token.Claims, string) {
	t.Helper()
	now := time.Now()
	c := token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: tenant, Holder: "admin", Scopes: scopes, Audience: audience,
		IssuedAt: now.Unix(), NotBefore: now.Add(-time.Minute).Unix(), Expiry: now.Add(time.Hour).Unix()}
	for _, m := range mod {
		m(&c)
	}
	tok, err := q.signer.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return c, tok
}

func (q *queryEnv) admin(t *testing.T) string {
	_, tok := q.mint(t, "cordon", []string{"cordon:read", "cordon:issue"}, []string{"cordon"})
	return tok
}

func (q *queryEnv) client(tok string) *auditor.Client {
	return &auditor.Client{NC: q.env.NC, Token: tok}
}

func TestQueryAuthorization(t *testing.T) {
	q := startQueryEnv(t, "query_auth", auditor.QueryOptions{Status: func() auditor.Stats { return auditor.Stats{Usage: 7} }})
	ctx := context.Background()
	revokedID, revoked := q.mint(t, "cordon", []string{"cordon:read"}, []string{"cordon"})
	kv, err := q.env.JS.KeyValue(ctx, events.BucketDenylist)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(events.DenyRecord{Kind: events.RevokeToken, TokenID: revokedID, Reason: "test", Actor: "t",
		RevokedAt: time.Now().UTC(), Expiry: time.Now().Add(time.Hour).UTC()})
	if _, err := kv.Put(ctx, events.DenyKeyToken(revokedID), rec); err != nil {
		t.Fatal(err)
	}
	_, wrongScope := q.mint(t, "cordon", []string{"cordon:issue", "cordon:revoke"}, []string{"cordon"})
	_, wrongAudience := q.mint(t, "cordon", []string{"cordon:read"}, []string{"billing"})
	_, wrongTenant := q.mint(t, "acme", []string{"cordon:read"}, []string{"cordon"})
	_, expired := q.mint(t, "cordon", []string{"cordon:read"}, []string{"cordon"}, func(c *token.Claims) {
		c.NotBefore, c.Expiry = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	})
	other, _ := token.GenerateSigner(time.Now())
	foreign, _ := other.Mint(token.Claims{ID: uuid.Must(uuid.NewV7()).String(), Tenant: "cordon", Holder: "admin", Scopes: []string{"cordon:read"},
		Audience: []string{"cordon"}, NotBefore: time.Now().Unix() - 60, Expiry: time.Now().Add(time.Hour).Unix()})

	cases := []struct {
		name, token string
		want        error
	}{
		{"no token", "", auditor.ErrUnauthenticated},
		{"garbage", "not-a-token", auditor.ErrUnauthenticated},
		{"unknown signing key", foreign, auditor.ErrUnauthenticated},
		{"expired", expired, auditor.ErrUnauthenticated},
		{"wrong scope", wrongScope, auditor.ErrForbidden},
		{"wrong audience", wrongAudience, auditor.ErrForbidden},
		{"not an admin tenant", wrongTenant, auditor.ErrForbidden},
		{"admin", q.admin(t), nil},
	}
	// The denylist entry reaches the enforcer through its watch.
	natstest.WaitFor(t, 5*time.Second, func() error {
		_, err := q.client(revoked).SQL(ctx, "SELECT 1")
		if !errors.Is(err, auditor.ErrUnauthenticated) {
			return fmt.Errorf("revoked token: %v", err)
		}
		return nil
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := q.client(c.token)
			_, errSQL := cl.SQL(ctx, "SELECT 1 AS one")
			_, _, errAn := cl.Anomalies(ctx, time.Time{}, 10)
			_, errRep := cl.Report(ctx, "nope")
			_, errSt := cl.Status(ctx)
			for name, err := range map[string]error{"sql": errSQL, "anomalies": errAn, "status": errSt} {
				if c.want == nil && err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if c.want != nil && !errors.Is(err, c.want) {
					t.Errorf("%s: error %v, want %v", name, err, c.want)
				}
			}
			if c.want == nil && !errors.Is(errRep, store.ErrNotFound) {
				t.Errorf("report of an unknown token: %v, want not found", errRep)
			}
			if c.want != nil && !errors.Is(errRep, c.want) {
				t.Errorf("report: %v, want %v", errRep, c.want)
			}
			if c.token != "" && c.want != nil && strings.Contains(fmt.Sprint(errSQL), c.token) {
				t.Errorf("the error quotes the token: %v", errSQL)
			}
		})
	}
	st, err := q.client(q.admin(t)).Status(ctx)
	if err != nil || st.Usage != 7 {
		t.Errorf("status = %+v, %v", st, err)
	}
}

func TestQueryReadOnlyAndResults(t *testing.T) {
	q := startQueryEnv(t, "query_results", auditor.QueryOptions{})
	ctx := context.Background()
	var evs []events.Envelope
	for i := 0; i < 300; i++ {
		u := &events.UsageDecided{TokenID: fmt.Sprintf("tok-%d", i%3), Tenant: "acme", Holder: "billing", KeyID: "k1", Enforcer: "edge-1",
			Service: "orders", SourceIP: fmt.Sprintf("10.0.0.%d", i%5), Method: "GET", Route: "/orders/{id}", Scope: "orders:read",
			Decision: events.DecisionAllow, Reason: "ok", LatencyNS: int64(i)}
		if i%10 == 0 {
			u.Decision, u.Reason = events.DecisionDeny, "scope_missing"
		}
		e, err := events.New("test", base.Add(time.Duration(i)*time.Minute), u)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if err := q.store.InsertUsage(ctx, evs); err != nil {
		t.Fatal(err)
	}
	cl := q.client(q.admin(t))

	t.Run("writes refused", func(t *testing.T) {
		for _, stmt := range []string{
			"DROP TABLE usage_events_raw",
			"INSERT INTO usage_events_raw (token_id) VALUES ('x')",
			"ALTER TABLE usage_events_raw DELETE WHERE 1",
			"SELECT 1; DROP TABLE usage_events_raw",
			"SELECT * FROM usage_events INTO OUTFILE '/tmp/x'",
		} {
			if _, err := cl.SQL(ctx, stmt); !errors.Is(err, store.ErrNotReadOnly) {
				t.Errorf("%q: %v, want not read-only", stmt, err)
			}
		}
		// Refused by the store's gate on the engine's parse (issue 8: the
		// file() function read any file, readonly=1 does not stop it).
		for _, stmt := range []string{
			"SELECT * FROM file('/etc/passwd', 'LineAsString')",
			"SELECT file('/etc/passwd')",
			"SELECT $$;$$; DROP TABLE usage_events_raw",
			"SELECT count() FROM usage_events SETTINGS readonly = 0",
			"SELECT * FROM system.users",
		} {
			_, err := cl.SQL(ctx, stmt)
			if !errors.Is(err, store.ErrNotReadOnly) || !strings.Contains(err.Error(), string(auditor.CodeNotReadOnly)) {
				t.Errorf("%q: %v, want not_read_only", stmt, err)
			}
		}
		if n, _ := q.store.CountUsage(ctx); n != 300 {
			t.Errorf("rows = %d after refused writes, want 300", n)
		}
	})

	t.Run("limits", func(t *testing.T) {
		_, err := cl.SQL(ctx, fmt.Sprintf("SELECT arrayJoin(range(%d)) AS n", store.DefaultMaxResultRows+1))
		if !errors.Is(err, store.ErrQueryLimit) || !strings.Contains(err.Error(), string(auditor.CodeQueryLimit)) {
			t.Errorf("too many rows: %v, want query_limit", err)
		}
	})

	t.Run("same result as the store", func(t *testing.T) {
		for _, stmt := range []string{
			"SELECT token_id, count() AS n, countIf(decision = 'deny') AS denied, min(time) AS first, max(latency_ns) FROM usage_events GROUP BY token_id ORDER BY token_id",
			`SELECT toDate('2026-01-02') AS d, toDateTime64('2026-12-31 23:59:59.25', 6, 'UTC') AS frac,
			        toDateTime64('2262-04-01 00:00:00.000000123', 9, 'UTC') AS far, toDateTime64('2299-12-31 23:59:59.5', 3, 'UTC') AS farther, [toDate('2026-03-01'), toDate('2026-03-02')] AS dates,
			        map('a', toDateTime('2026-01-02 03:04:05', 'UTC')) AS m, tuple(1, 'x') AS t, CAST((7, 'q') AS Tuple(n UInt8, s String)) AS nt,
			        toUInt64(18446744073709551615) AS umax, toInt64(-9223372036854775808) AS imin, nan AS not_a_number, 1e300 * 10 AS inf,
			        0.1 + 0.2 AS f, NULL AS nothing, toNullable(toDate('2026-05-05')) AS nd, toDecimal64(-12.345, 3) AS dec,
			        toUUID('01a21da2-389f-7a21-89d0-61b7381e2e20') AS u, toIPv4('10.1.2.3') AS ip, 'quote " \\ ünï' AS s, true AS b,
			        CAST('allow' AS Enum8('allow' = 1, 'deny' = 2)) AS e, [[1, 2], [3]] AS nested, toLowCardinality('lc') AS lc`,
			// SHOW TABLES is refused since issue 8; its equivalent:
			"SELECT * FROM usage_events LIMIT 0",
		} {
			want, err := q.store.Query(ctx, stmt)
			if err != nil {
				t.Fatalf("%q on the store: %v", stmt, err)
			}
			got, err := cl.SQL(ctx, stmt)
			if err != nil {
				t.Fatalf("%q through the auditor: %v", stmt, err)
			}
			if got.Truncated || got.TotalRows != len(want.Rows) {
				t.Errorf("%q: truncated %v, total %d, want %d rows", stmt, got.Truncated, got.TotalRows, len(want.Rows))
			}
			if !reflect.DeepEqual(got.Result, want) {
				t.Errorf("%q:\n got  %#v\n want %#v", stmt, got.Result, want)
			}
		}
	})

	t.Run("empty query", func(t *testing.T) {
		if _, err := cl.SQL(ctx, "   "); err == nil || !strings.Contains(err.Error(), auditor.CodeBadRequest) {
			t.Errorf("empty query: %v", err)
		}
	})
}

func TestQueryTruncatesToMessageSize(t *testing.T) {
	q := startQueryEnv(t, "query_trunc", auditor.QueryOptions{MaxReply: 4096})
	res, err := q.client(q.admin(t)).SQL(context.Background(), "SELECT number, toString(number) AS s FROM (SELECT arrayJoin(range(5000)) AS number)")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated || res.TotalRows != 5000 || len(res.Rows) == 0 || len(res.Rows) >= 5000 {
		t.Fatalf("truncated %v, %d of %d rows", res.Truncated, len(res.Rows), res.TotalRows)
	}
	for i, r := range res.Rows {
		if r[0] != uint64(i) || r[1] != fmt.Sprint(i) {
			t.Fatalf("row %d = %v", i, r)
		}
	}
}

func TestQueryAnomaliesAndReport(t *testing.T) {
	q := startQueryEnv(t, "query_reports", auditor.QueryOptions{})
	ctx := context.Background()
	tok := uuid.Must(uuid.NewV7()).String()
	issued, err := events.New("issuer", base, &events.TokenIssued{TokenID: tok, Tenant: "acme", Holder: "billing", KeyID: "k1", Actor: "cordon/admin:x",
		Claims: events.TokenClaims{Scopes: []string{"invoices:read", "invoices:write"}, Audience: []string{"invoices"}, Expiry: base.Add(24 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.store.InsertLedger(ctx, []events.Envelope{issued}); err != nil {
		t.Fatal(err)
	}
	var uses, anomalies []events.Envelope
	for i := 0; i < 20; i++ {
		u := &events.UsageDecided{TokenID: tok, Tenant: "acme", Holder: "billing", KeyID: "k1", Enforcer: "edge-1", Service: "invoices",
			SourceIP: "10.0.0.1", Method: "GET", Route: "/invoices/{id}", Scope: "invoices:read", Decision: events.DecisionAllow, Reason: "ok"}
		if i >= 15 {
			u.Scope, u.Decision, u.Reason = "admin:write", events.DecisionDeny, "scope_missing"
		}
		e, _ := events.New("test", base.Add(time.Duration(i)*time.Hour), u)
		uses = append(uses, e)
	}
	for i, det := range []string{"new_network", "scope_probing"} {
		an := &events.AnomalyDetected{AnomalyID: uuid.Must(uuid.NewV7()).String(), Detector: det, Severity: "high", TokenID: tok, Tenant: "acme",
			Holder: "billing", EventID: uses[15+i].ID.String(), EventTime: uses[15+i].Time, SourceIP: "10.0.0.1",
			Evidence: events.Evidence{Seen: "seen " + det, Baseline: "baseline"}}
		e, _ := events.New("auditor", uses[15+i].Time, an)
		anomalies = append(anomalies, e)
	}
	if err := q.store.InsertUsage(ctx, uses); err != nil {
		t.Fatal(err)
	}
	if err := q.store.InsertAnomalies(ctx, anomalies); err != nil {
		t.Fatal(err)
	}
	cl := q.client(q.admin(t))
	as, truncated, err := cl.Anomalies(ctx, uses[16].Time, 0)
	if err != nil || truncated {
		t.Fatal(err, truncated)
	}
	if len(as) != 1 || as[0].Detector != "scope_probing" || as[0].Evidence.Seen != "seen scope_probing" {
		t.Fatalf("anomalies since the second = %+v", as)
	}
	all, _, err := cl.Anomalies(ctx, time.Time{}, 0)
	if err != nil || len(all) != 2 {
		t.Fatalf("all anomalies = %d, %v", len(all), err)
	}
	rep, err := cl.Report(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	want, err := q.store.TokenReport(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(rep)
	if string(wj) != string(gj) {
		t.Errorf("report through the auditor differs:\n got  %s\n want %s", gj, wj)
	}
	if rep.Requests != 20 || rep.Denied != 5 || len(rep.Anomalies) != 2 || rep.Grant == nil || len(rep.UngrantedScopes) != 1 {
		t.Errorf("report = %+v", rep)
	}
}

func TestClientWithoutAuditor(t *testing.T) {
	env := natstest.Run(t)
	_, err := (&auditor.Client{NC: env.NC, Token: "x"}).SQL(context.Background(), "SELECT 1")
	if !errors.Is(err, auditor.ErrNoAuditor) || !strings.Contains(err.Error(), "cordon.cmd.sql") {
		t.Fatalf("error %v, want no auditor on cordon.cmd.sql", err)
	}
}

// TestEncodeResultRoundTrip: what EncodeResult writes, store's decoder
// reads back as the same values, for types and values chDB did not give
// the test above (times before 1970, nested maps of times, named tuples).
func TestEncodeResultRoundTrip(t *testing.T) {
	in := &store.Result{
		Columns: []store.Column{
			{Name: "t", Type: "DateTime64(6, 'UTC')"}, {Name: "old", Type: "Nullable(DateTime64(9, 'UTC'))"}, {Name: "d", Type: "Date32"},
			{Name: "m", Type: "Map(String, Array(DateTime('UTC')))"}, {Name: "nt", Type: "Tuple(a Date, `b c` LowCardinality(String))"},
			{Name: "u", Type: "Tuple(UInt8, Float64)"}, {Name: "n", Type: "Nullable(String)"},
		},
		Rows: [][]any{
			{time.Date(1969, 12, 31, 23, 59, 59, 250_000_000, time.UTC), time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(1950, 5, 6, 0, 0, 0, 0, time.UTC),
				map[string]any{"x": []any{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, "y": []any{}}, map[string]any{"a": time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), "b c": "z"},
				[]any{uint64(255), 1.5e300}, nil},
			{time.Unix(0, 0).UTC(), nil, time.Date(2299, 12, 31, 0, 0, 0, 0, time.UTC), map[string]any{}, map[string]any{"a": time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), "b c": ""},
				[]any{uint64(0), -0.5}, "\"quoted\" ✓"},
		},
	}
	enc, n, err := auditor.EncodeResult(in, 0)
	if err != nil || n != 2 {
		t.Fatal(n, err)
	}
	out, err := store.DecodeJSONCompact(enc)
	if err != nil {
		t.Fatalf("decode %s: %v", enc, err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip:\n got  %#v\n want %#v\n via %s", out, in, enc)
	}
	if _, n, _ := auditor.EncodeResult(in, len(`{"meta":[]}`)+300); n != 0 {
		t.Errorf("rows within a tiny bound = %d, want 0", n)
	}
}
