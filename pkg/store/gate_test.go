package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/internal/natstest"
	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// backendCount runs one of the test's own queries on the backend, past the
// analyst gate (system tables, other databases), and returns a number.
func backendCount(t testing.TB, b store.Backend, q string) uint64 {
	t.Helper()
	out, err := b.Query(context.Background(), q, []store.Setting{{Name: "output_format_json_quote_64bit_integers", Value: 0}})
	if err != nil {
		t.Fatalf("backend query %q: %v", q, err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil || len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		t.Fatalf("backend query %q: %v %v", q, res, err)
	}
	v, ok := res.Rows[0][0].(uint64)
	if !ok {
		t.Fatalf("backend query %q: got %T %v", q, res.Rows[0][0], res.Rows[0][0])
	}
	return v
}

// backendRows runs one of the test's own queries on the backend, past the
// analyst gate.
func backendRows(t testing.TB, b store.Backend, q string) *store.Result {
	t.Helper()
	out, err := b.Query(context.Background(), q, nil)
	if err != nil {
		t.Fatalf("backend query %q: %v", q, err)
	}
	res, err := store.DecodeJSONCompact(out)
	if err != nil {
		t.Fatalf("backend query %q: %v", q, err)
	}
	return res
}

// tableExists asks the engine, past the gate, whether db.table exists.
func tableExists(t testing.TB, b store.Backend, db, table string) bool {
	t.Helper()
	return backendCount(t, b, fmt.Sprintf("SELECT count() FROM system.tables WHERE database = '%s' AND name = '%s'", db, table)) == 1
}

// TestQueryGateAttacks runs every escape of issue 8 (findings 1, 2 and 4)
// against the real engine. Each must be refused with a reason naming what
// was refused, and its side effect must not have happened: no file read
// back, no file written, no table dropped, created or written.
func TestQueryGateAttacks(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, b := openStore(t, e, db, store.Options{})
		if err := s.InsertUsage(ctx, []events.Envelope{usage(t, day0, "tok", "h", "orders:read", "10.0.0.1", "allow", "ok")}); err != nil {
			t.Fatal(err)
		}
		// Another store's database in the same engine: analysts of this
		// store must not read it.
		other, _ := openStore(t, e, db+"_other", store.Options{})
		if err := other.InsertUsage(ctx, []events.Envelope{usage(t, day0, "other", "h", "", "10.0.0.9", "allow", "ok")}); err != nil {
			t.Fatal(err)
		}

		dir := t.TempDir()
		const secret = "-----BEGIN PRIVATE KEY----- cordon-test-secret-7f3a"
		keyFile := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out.txt")

		attacks := []struct {
			name, q, want string
		}{
			// Finding 1: the file() function and its friends.
			{"file function", "SELECT file('" + keyFile + "')", "function file is not allowed"},
			{"file function in a subquery", "SELECT count() FROM usage_events WHERE token_id IN (SELECT file('" + keyFile + "'))", "function file is not allowed"},
			{"file function in a CTE", "WITH k AS (SELECT file('" + keyFile + "') AS pem) SELECT pem FROM k", "function file is not allowed"},
			{"file function quoted", "SELECT `file`('" + keyFile + "')", "function file is not allowed"},
			{"file function upper case", "SELECT FILE('" + keyFile + "')", "function FILE is not allowed"},
			{"file function in a lambda", "SELECT arrayMap(p -> file(p), ['" + keyFile + "'])", "function file is not allowed"},
			{"file function as a window", "SELECT file('" + keyFile + "') OVER ()", "function file is not allowed"},
			{"file function in ORDER BY", "SELECT 1 FROM usage_events ORDER BY file('" + keyFile + "')", "function file is not allowed"},
			// Table functions.
			{"file table function", "SELECT * FROM file('" + keyFile + "', 'LineAsString')", "table function file()"},
			{"url table function", "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')", "table function url()"},
			{"numbers table function", "SELECT * FROM numbers(10)", "table function numbers()"},
			{"remote table function", "SELECT * FROM remote('127.0.0.1', system.one)", "table function remote()"},
			{"table function in a join", "SELECT * FROM usage_events AS u JOIN file('" + keyFile + "', 'LineAsString') AS f ON 1", "table function file()"},
			{"table function in IN", "SELECT 1 FROM usage_events WHERE token_id IN file('" + keyFile + "', 'LineAsString')", "right side of in"},
			{"table function in a nested IN", "SELECT 1 FROM usage_events WHERE token_id IN (SELECT line FROM file('" + keyFile + "', 'LineAsString'))", "table function file()"},
			{"view table function", "SELECT * FROM view(SELECT 1)", "table function view()"},
			// Finding 2: output files, other statements, hidden text.
			{"into outfile", "SELECT 'x' INTO OUTFILE '" + out + "'", "INTO OUTFILE"},
			{"into outfile with format", "SELECT 'pwned' INTO OUTFILE '" + out + "' FORMAT TSVRaw", "INTO OUTFILE"},
			{"into outfile truncate", "SELECT 'pwned' INTO OUTFILE '" + out + "' TRUNCATE", "INTO OUTFILE"},
			{"format clause", "SELECT 1 FORMAT CSV", "FORMAT"},
			{"two statements, drop", "SELECT 1; DROP TABLE usage_events_raw", "one SELECT statement"},
			{"two statements, create", "SELECT 1; CREATE TABLE evil (a UInt8) ENGINE = Memory", "one SELECT statement"},
			{"two statements, insert", "SELECT 1; INSERT INTO usage_events_raw (token_id) VALUES ('forged')", "one SELECT statement"},
			{"two statements, file", "SELECT 1; SELECT * FROM file('" + keyFile + "', 'LineAsString')", "one SELECT statement"},
			{"dollar string hides a semicolon", "SELECT $$;$$; DROP TABLE usage_events_raw", "one SELECT statement"},
			{"dollar string hides outfile", "SELECT $$a$$ AS s INTO OUTFILE '" + out + "' FORMAT TSVRaw", "INTO OUTFILE"},
			{"tagged dollar string", "SELECT $tag$ ' $tag$; DROP TABLE usage_events_raw", "one SELECT statement"},
			{"dollar string then create", "SELECT $$x$$; CREATE TABLE evil (a UInt8) ENGINE = Memory", "one SELECT statement"},
			{"unicode single quotes hide a semicolon", "SELECT ‘;’; DROP TABLE usage_events_raw", "one SELECT statement"},
			{"unicode double quotes", "SELECT 1 AS “x”; DROP TABLE usage_events_raw", "one SELECT statement"},
			{"unicode quotes hide outfile", "SELECT ‘it’ INTO OUTFILE '" + out + "' FORMAT TSVRaw", "INTO OUTFILE"},
			{"unicode quote then insert", "SELECT ‘a’ ; INSERT INTO usage_events_raw (token_id) VALUES ('forged')", "one SELECT statement"},
			{"comment hides a semicolon", "SELECT 1 /* ; */; DROP TABLE usage_events_raw", "one SELECT statement"},
			{"trailing comment", "SELECT 1; -- ; DROP TABLE usage_events_raw\nDROP TABLE usage_events_raw", "one SELECT statement"},
			// Statements other than SELECT.
			{"drop", "DROP TABLE usage_events_raw", "DROP statements are not allowed"},
			{"insert", "INSERT INTO usage_events_raw (token_id) VALUES ('forged')", "INSERT statements are not allowed"},
			{"create", "CREATE TABLE evil (a UInt8) ENGINE = Memory", "CREATE statements are not allowed"},
			{"alter", "ALTER TABLE usage_events_raw DELETE WHERE 1", "ALTER statements are not allowed"},
			{"truncate", "TRUNCATE TABLE usage_events_raw", "TRUNCATE statements are not allowed"},
			{"optimize", "OPTIMIZE TABLE usage_events_raw FINAL", "OPTIMIZE statements are not allowed"},
			{"set", "SET readonly = 0", "SET statements are not allowed"},
			{"system", "SYSTEM SHUTDOWN", "SYSTEM statements are not allowed"},
			{"show", "SHOW TABLES", "SHOW is not accepted"},
			{"describe", "DESCRIBE TABLE usage_events", "DESCRIBE is not accepted"},
			{"explain", "EXPLAIN SELECT 1", "EXPLAIN is not accepted"},
			// Finding 4: the caller's own settings.
			{"settings readonly 0", "SELECT count() FROM usage_events SETTINGS readonly = 0", "SETTINGS clause is not allowed"},
			{"settings no time limit", "SELECT count() FROM usage_events SETTINGS max_execution_time = 0", "SETTINGS clause is not allowed"},
			{"settings in a subquery", "SELECT (SELECT 1 SETTINGS readonly = 0)", "SETTINGS clause is not allowed"},
			{"settings after union", "SELECT 1 UNION ALL SELECT 2 SETTINGS max_memory_usage = 0", "SETTINGS clause is not allowed"},
			// Tables outside Cordon's.
			{"in system.users", "SELECT 1 FROM usage_events WHERE holder IN system.users", "table system.users is not a Cordon table"},
			{"in (system.users)", "SELECT 1 FROM usage_events WHERE holder IN (system.users)", "table system.users is not a Cordon table"},
			{"not in system table", "SELECT 1 FROM usage_events WHERE holder NOT IN system.tables", "table system.tables is not a Cordon table"},
			{"global in system table", "SELECT 1 FROM usage_events WHERE holder GLOBAL IN system.databases", "table system.databases is not a Cordon table"},
			{"system.users", "SELECT * FROM system.users", "table system.users is not a Cordon table"},
			{"system.tables", "SELECT name FROM system.tables", "table system.tables is not a Cordon table"},
			{"system.processes", "SELECT query FROM system.processes", "table system.processes is not a Cordon table"},
			{"system.query_log", "SELECT query FROM system.query_log", "table system.query_log is not a Cordon table"},
			{"system.numbers endless", "SELECT count() FROM system.numbers", "table system.numbers is not a Cordon table"},
			{"system.one", "SELECT * FROM system.one", "table system.one is not a Cordon table"},
			{"information schema", "SELECT * FROM information_schema.tables", "table information_schema.tables is not a Cordon table"},
			{"another store's database", "SELECT count() FROM " + db + "_other.usage_events", "is not a Cordon table"},
			{"another database in a join", "SELECT count() FROM usage_events AS a JOIN " + db + "_other.usage_events AS b ON 1", "is not a Cordon table"},
			{"unknown unqualified table", "SELECT * FROM users", "table users is not a Cordon table"},
			{"alias of a system table used as a table", "WITH system.users AS t SELECT * FROM t", "table t is not a Cordon table"},
			{"system table in a CTE", "WITH t AS (SELECT * FROM system.users) SELECT * FROM t", "table system.users is not a Cordon table"},
			{"system table in a scalar subquery", "SELECT (SELECT count() FROM system.tables)", "table system.tables is not a Cordon table"},
			// Functions that reach outside the rows.
			{"dictGet", "SELECT dictGet('d', 'a', toUInt64(1))", "function dictGet is not allowed"},
			{"joinGet", "SELECT joinGet('usage_events', 'holder', 'x')", "function joinGet is not allowed"},
			{"getSetting", "SELECT getSetting('readonly')", "function getSetting is not allowed"},
			{"sleep", "SELECT sleepEachRow(3) FROM usage_events", "function sleepEachRow is not allowed"},
			{"throwIf", "SELECT throwIf(1)", "function throwIf is not allowed"},
			{"hostName", "SELECT hostName()", "function hostName is not allowed"},
			{"currentUser", "SELECT currentUser()", "function currentUser is not allowed"},
			{"hasColumnInTable", "SELECT hasColumnInTable('system', 'users', 'name')", "function hasColumnInTable is not allowed"},
			{"url function in a column", "SELECT * FROM usage_events WHERE holder = (SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString'))", "table function url()"},
			// Parts of the tree the gate cannot see into.
			{"named window", "SELECT count() OVER w FROM usage_events WINDOW w AS (PARTITION BY holder)", "named WINDOW"},
			{"apply transformer", "SELECT * APPLY (toString) FROM usage_events", "APPLY"},
			{"query parameter", "SELECT {p:String}", "query parameters"},
			{"IN of an expression", "SELECT 1 FROM usage_events WHERE latency_ns IN (1 + 1)", "right side of in"},
			{"IN of a column", "SELECT 1 FROM token_ledger WHERE 'x' IN scopes", "use has(scopes, value)"},
			// Names that would forge lines of the engine's syntax tree.
			{"newline in an alias", "SELECT 1 AS `a\n   TableIdentifier system.users`", "quoted identifier"},
			{"newline in a column", "SELECT `x\n    Function file` FROM usage_events", "quoted identifier"},
			{"children count in an alias", "SELECT 1 AS `x) (children 3`", "quoted identifier"},
			{"double-quoted odd name", "SELECT 1 AS \"a\nb\"", "quoted identifier"},
			// Bytes.
			{"empty", "", "empty"},
			{"blank", "  \n\t ", "empty"},
			{"comment only", "-- nothing", "one SELECT statement"},
			{"NUL byte", "SELECT 1\x00; DROP TABLE usage_events_raw", "NUL"},
			{"not UTF-8", "SELECT '\xff'", "UTF-8"},
			{"too long", "SELECT '" + strings.Repeat("a", store.MaxQueryBytes) + "'", "bytes"},
			{"unterminated", "SELECT 'unterminated", "one SELECT statement"},
		}
		for _, a := range attacks {
			t.Run(a.name, func(t *testing.T) {
				res, err := s.Query(ctx, a.q)
				if !errors.Is(err, store.ErrNotReadOnly) {
					t.Fatalf("Query(%q) = %v, %v; want a refusal", a.q, res, err)
				}
				if !strings.Contains(err.Error(), a.want) {
					t.Errorf("Query(%q): error %q does not say %q", a.q, err, a.want)
				}
				if strings.Contains(err.Error(), "cordon-test-secret") {
					t.Errorf("the refusal shows the secret file's content: %v", err)
				}
			})
		}

		// The side effects did not happen.
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("INTO OUTFILE wrote %s (stat: %v)", out, err)
		}
		for _, table := range []string{"usage_events_raw", "usage_events"} {
			if !tableExists(t, b, db, table) {
				t.Errorf("table %s was dropped", table)
			}
		}
		if tableExists(t, b, db, "evil") {
			t.Error("table evil was created")
		}
		if n := count(t, s, "SELECT count() FROM usage_events_raw"); n != 1 {
			t.Errorf("usage_events_raw has %d rows after the attacks, want 1", n)
		}
		if n := count(t, s, "SELECT count() FROM usage_events_raw WHERE token_id = 'forged'"); n != 0 {
			t.Errorf("a forged row was inserted")
		}
	})
}

// TestQueryGateAccepts: what analysts legitimately write still works, on
// every engine: the README's and docs/schema.md's queries (docs_test.go
// runs the latter) and the usual shapes.
func TestQueryGateAccepts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, _ := openStore(t, e, db, store.Options{})
		tok := newID()
		evs := []events.Envelope{
			usage(t, day0, tok, "billing", "orders:read", "10.0.0.1", "allow", "ok"),
			usage(t, day0.Add(time.Minute), tok, "billing", "orders:write", "10.0.0.2", "deny", "scope_missing"),
			usage(t, day0.Add(2*time.Minute), newID(), "search", "users:read", "198.51.100.7", "deny", "source_network"),
			issued(t, day0.Add(-time.Hour), tok, "billing", []string{"orders:read", "orders:write"}),
		}
		if err := s.Insert(ctx, evs); err != nil {
			t.Fatal(err)
		}
		queries := []string{
			// README.
			"SELECT holder, reason, count() FROM usage_events WHERE decision = 'deny' GROUP BY ALL ORDER BY 3 DESC",
			"SELECT count() FROM usage_events",
			"select 1;  ",
			"SELECT COUNT(*) AS n, Sum(latency_ns), MAX(time) FROM usage_events",
			"SELECT holder, countIf(decision = 'deny') AS denied, uniqExact(source_ip), quantile(0.9)(latency_ns) FROM usage_events GROUP BY holder ORDER BY denied DESC",
			"SELECT sum(latency_ns) FILTER (WHERE decision = 'allow'), count(DISTINCT holder) FROM usage_events",
			"SELECT toStartOfInterval(time, INTERVAL 5 MINUTE) AS bucket, count() FROM usage_events GROUP BY bucket ORDER BY bucket",
			"SELECT toStartOfHour(time) AS h, date_trunc('day', time) AS d, toDate(time) - 1 FROM usage_events",
			"SELECT u.holder, l.scopes FROM usage_events AS u INNER JOIN token_ledger AS l ON l.token_id = u.token_id WHERE l.type = 'issued'",
			"SELECT u.token_id FROM usage_events AS u LEFT ANTI JOIN (SELECT token_id FROM token_ledger) AS l USING (token_id)",
			"WITH denied AS (SELECT token_id, count() AS n FROM usage_events WHERE decision = 'deny' GROUP BY token_id) SELECT * FROM denied ORDER BY n DESC",
			"WITH 10 AS lim SELECT holder FROM usage_events LIMIT lim",
			"SELECT holder, time, row_number() OVER (PARTITION BY holder ORDER BY time) AS rn, lagInFrame(time) OVER (PARTITION BY holder ORDER BY time ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM usage_events",
			"SELECT count() FROM usage_events WHERE token_id IN (SELECT token_id FROM token_ledger WHERE type = 'issued')",
			"SELECT count() FROM usage_events WHERE holder IN ('billing', 'search') AND decision NOT IN ('allow')",
			"SELECT count() FROM usage_events WHERE (holder, scope) IN (('billing', 'orders:read'))",
			"SELECT token_id, arrayJoin(scopes) AS scope FROM token_ledger",
			"SELECT arrayMap(s -> upper(s), scopes), arrayFilter(s -> s LIKE 'orders:%', scopes), length(scopes) FROM token_ledger",
			"SELECT source_ip, isIPAddressInRange(source_ip, '10.0.0.0/8') AS internal, IPv4StringToNumOrNull(source_ip) FROM usage_events",
			"SELECT JSONExtractString(windows, 'zone'), toString(exp), ifNull(toString(grace_until), '-') FROM token_ledger",
			"SELECT holder FROM usage_events UNION ALL SELECT holder FROM token_ledger",
			"SELECT holder FROM usage_events EXCEPT SELECT holder FROM token_ledger",
			"SELECT holder FROM usage_events INTERSECT SELECT holder FROM token_ledger",
			"SELECT * EXCEPT (user_agent) FROM usage_events LIMIT 1",
			"SELECT * FROM usage_events ORDER BY time DESC LIMIT 1 BY holder",
			"SELECT count() FROM " + db + ".usage_events",
			"SELECT count() FROM `" + db + "`.`usage_events` AS `u`",
			"SELECT multiIf(decision = 'deny', 'bad', 'good'), CASE WHEN latency_ns > 1000 THEN 'slow' ELSE 'fast' END FROM usage_events",
			"SELECT (SELECT count() FROM token_ledger) AS issued, EXISTS (SELECT 1 FROM anomalies) AS any_anomaly",
			"SELECT day, sum(requests) FROM token_usage_daily GROUP BY day",
			"SELECT holder, sumMap([scope], [1]) FROM usage_events GROUP BY holder",
			"SELECT uniqExactIf(token_id, decision = 'deny'), avgOrNull(latency_ns), groupArrayDistinct(holder) FROM usage_events",
			"SELECT formatDateTime(time, '%F %T'), toUnixTimestamp(time), now() - INTERVAL 1 DAY > time FROM usage_events",
			"SELECT cityHash64(token_id), sipHash64(holder), hex(MD5(holder)), toUInt64OrNull('12') FROM usage_events",
			"SELECT 'a;b' AS semicolon, $$it's$$ AS dollar, ‘unicode’ AS quoted FROM usage_events",
			"SELECT holder AS settings FROM usage_events",
		}
		for _, q := range queries {
			t.Run(q, func(t *testing.T) {
				if _, err := s.Query(ctx, q); err != nil {
					t.Errorf("Query(%q): %v", q, err)
				}
			})
		}
	})
}

// TestQueryLimits: the engine cancels an analyst query that passes the gate
// but runs too long or needs too much memory, and says which limit it hit.
func TestQueryLimits(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, b := openStore(t, e, db, store.Options{QueryTimeout: 2 * time.Second, MaxQueryMemory: 64 << 20, MaxResultRows: 50})
		t.Run("endless query", func(t *testing.T) {
			// Three cross-joined arrays of 100,000 numbers: 10^15 rows.
			q := `SELECT sum(a * b * c) FROM (SELECT arrayJoin(range(100000)) AS a) AS x
			      CROSS JOIN (SELECT arrayJoin(range(100000)) AS b) AS y
			      CROSS JOIN (SELECT arrayJoin(range(100000)) AS c) AS z`
			_, err := s.Query(ctx, q)
			if !errors.Is(err, store.ErrQueryLimit) || !strings.Contains(err.Error(), "longer than 2s") {
				t.Fatalf("endless query: err = %v, want the 2s time limit", err)
			}
			// Ingestion goes on once the engine stopped it.
			if err := s.InsertUsage(ctx, []events.Envelope{usage(t, day0, "after", "h", "", "10.0.0.1", "allow", "ok")}); err != nil {
				t.Fatal(err)
			}
		})
		t.Run("memory", func(t *testing.T) {
			q := "SELECT groupArray(range(100)) FROM (SELECT arrayJoin(range(2000000)) AS n)"
			_, err := s.Query(ctx, q)
			if !errors.Is(err, store.ErrQueryLimit) || !strings.Contains(err.Error(), "memory") {
				t.Fatalf("memory hog: err = %v, want the memory limit", err)
			}
		})
		t.Run("result rows", func(t *testing.T) {
			for _, q := range []string{
				"SELECT n FROM (SELECT arrayJoin(range(1000)) AS n)",
				// The engine's max_result_rows misses a SELECT without FROM.
				"SELECT arrayJoin(range(1000)) AS n",
				"SELECT arrayJoin(range(30)) AS n UNION ALL SELECT arrayJoin(range(30))",
				"SELECT arrayJoin(range(1000000)) AS n ORDER BY n",
			} {
				if _, err := s.Query(ctx, q); !errors.Is(err, store.ErrQueryLimit) || !strings.Contains(err.Error(), "LIMIT") {
					t.Errorf("%s: err = %v, want the result limit", q, err)
				}
			}
			for _, q := range []string{"SELECT arrayJoin(range(50)) AS n", "SELECT n FROM (SELECT arrayJoin(range(50)) AS n) ORDER BY n"} {
				if res, err := s.Query(ctx, q); err != nil || len(res.Rows) != 50 {
					t.Errorf("%s: %v, %v", q, res, err)
				}
			}
			union := "SELECT 1" + strings.Repeat(" UNION ALL SELECT 1", 40)
			if _, err := s.Query(ctx, union); !errors.Is(err, store.ErrNotReadOnly) || !strings.Contains(err.Error(), "UNION of 41") {
				t.Errorf("UNION of 41 SELECTs: %v", err)
			}
		})
		if n := backendCount(t, b, "SELECT count() FROM "+db+".usage_events_raw"); n != 1 {
			t.Errorf("usage_events_raw has %d rows, want 1", n)
		}
	})
}

// TestQueryOptionsValidation: limits are always bounded; a time limit under
// a second is refused rather than rounded into something unexpected.
func TestQueryOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    store.Options
		want string
	}{
		{"timeout under a second", store.Options{QueryTimeout: 500 * time.Millisecond}, "query timeout"},
		{"negative timeout", store.Options{QueryTimeout: -time.Second}, "query timeout"},
		{"timeout over an hour", store.Options{QueryTimeout: 2 * time.Hour}, "query timeout"},
		{"tiny memory", store.Options{MaxQueryMemory: 1 << 20}, "memory"},
		{"negative rows", store.Options{MaxResultRows: -2}, "result rows"},
		{"negative bytes", store.Options{MaxResultBytes: -2}, "result bytes"},
		{"negative threads", store.Options{QueryThreads: -1}, "threads"},
		{"negative concurrency", store.Options{MaxConcurrentQueries: -1}, "concurrent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.o.QuerySettings(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("QuerySettings(%+v) = %v, want an error about %s", tc.o, err, tc.want)
			}
		})
	}
	settings, err := store.Options{QueryTimeout: 1500 * time.Millisecond}.QuerySettings()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, st := range settings {
		got[st.Name] = st.Value
	}
	if got["max_execution_time"] != 2 || got["readonly"] != 1 || settings[len(settings)-1].Name != "readonly" ||
		got["max_memory_usage"] != uint64(store.DefaultMaxQueryMemory) || got["max_result_rows"] != store.DefaultMaxResultRows {
		t.Errorf("settings = %v", settings)
	}
}

// TestQueryCancelReturnsAtOnce: a caller that gives up gets its answer at
// once although chDB cannot interrupt the statement, which keeps its turn
// until the engine stops it; Close waits for it rather than closing the
// engine under it.
func TestQueryCancelReturnsAtOnce(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, engines()[0], fmt.Sprintf("t%d_cancel", dbSeq.Add(1)), store.Options{QueryTimeout: 6 * time.Second})
	qctx, cancel := context.WithCancel(ctx)
	endless := `SELECT sum(a * b) FROM (SELECT arrayJoin(range(10000000)) AS a) AS x CROSS JOIN (SELECT arrayJoin(range(10000000)) AS b) AS y`
	var wg sync.WaitGroup
	var qerr error
	var stillRunning int
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, qerr = s.Query(qctx, endless)
		stillRunning = s.AnalystQueriesInFlight()
	}()
	natstest.WaitFor(t, 30*time.Second, func() error {
		if s.AnalystQueriesInFlight() != 1 {
			return errors.New("the query has not started")
		}
		return nil
	})
	cancel()
	wg.Wait()
	if !errors.Is(qerr, context.Canceled) {
		t.Fatalf("cancelled query: err = %v, want context.Canceled", qerr)
	}
	if stillRunning != 1 {
		t.Errorf("Query returned when the engine had finished (%d in flight): it did not return at once", stillRunning)
	}
	// A second analyst waits for the turn, bounded by its own context.
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if _, err := s.Query(short, "SELECT 1"); !errors.Is(err, context.Canceled) {
		t.Errorf("second query with a cancelled context: %v", err)
	}
	// A third waits with no deadline at all: Close sends it away, and
	// waits for the statement still on the engine.
	waiting := make(chan error, 1)
	go func() {
		_, err := s.Query(ctx, "SELECT 1")
		waiting <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, store.ErrClosed) {
		t.Errorf("query waiting for a turn when the store closed: %v, want ErrClosed", err)
	}
	if n := s.AnalystQueriesInFlight(); n != 0 {
		t.Errorf("Close returned with %d analyst queries on the engine", n)
	}
	if _, err := s.Query(ctx, "SELECT 1"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("query after Close: %v", err)
	}
}

// TestQueryDoesNotStallIngestion: inserts issued while an analyst query
// runs all land, and the analyst query is stopped at its limit (chDB runs
// one statement at a time, so they wait for it; the limit bounds the wait).
func TestQueryDoesNotStallIngestion(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, engines()[0], fmt.Sprintf("t%d_ingest", dbSeq.Add(1)), store.Options{QueryTimeout: 2 * time.Second})
	endless := `SELECT sum(a * b) FROM (SELECT arrayJoin(range(10000000)) AS a) AS x CROSS JOIN (SELECT arrayJoin(range(10000000)) AS b) AS y`
	var wg sync.WaitGroup
	var qerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, qerr = s.Query(ctx, endless)
	}()
	natstest.WaitFor(t, 30*time.Second, func() error {
		if s.AnalystQueriesInFlight() != 1 {
			return errors.New("the query has not started")
		}
		return nil
	})
	set := genUsage(t, 400, []string{newID(), newID()}, []string{"billing"}, day0)
	for i := 0; i < len(set.events); i += 100 {
		if err := s.InsertUsage(ctx, set.events[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if !errors.Is(qerr, store.ErrQueryLimit) {
		t.Errorf("endless query: %v, want the time limit", qerr)
	}
	if n, err := s.CountUsage(ctx); err != nil || n != 400 {
		t.Errorf("CountUsage = %d, %v; want 400", n, err)
	}
}

// TestGateTreeDecides: the text checks on the normalised query only explain
// refusals better; the walk of the engine's syntax tree refuses each of
// these on its own.
func TestGateTreeDecides(t *testing.T) {
	ctx := t.Context()
	s, _ := openStore(t, engines()[0], fmt.Sprintf("t%d_tree", dbSeq.Add(1)), store.Options{})
	for _, q := range []string{
		"SELECT 1 INTO OUTFILE '/tmp/cordon-tree-test'",
		"SELECT 1 INTO OUTFILE '/tmp/cordon-tree-test' FORMAT TSVRaw",
		"SELECT 1 FORMAT CSV",
		"SELECT 1 SETTINGS readonly = 0",
		"SHOW TABLES",
		"DESCRIBE TABLE usage_events",
		"EXPLAIN SELECT 1",
		"SELECT * FROM system.users",
		"SELECT file('/etc/passwd')",
		"SELECT * FROM numbers(3)",
	} {
		n, err := s.Normalize(ctx, q)
		if err != nil {
			t.Fatalf("normalise %q: %v", q, err)
		}
		if err := s.RecheckAST(ctx, n); !errors.Is(err, store.ErrNotReadOnly) {
			t.Errorf("tree of %q (%q): %v, want a refusal", q, n, err)
		}
	}
	if _, err := os.Stat("/tmp/cordon-tree-test"); !errors.Is(err, os.ErrNotExist) {
		t.Error("EXPLAIN AST of INTO OUTFILE wrote the file")
	}
}

// TestParseASTDumpStrict: the reader of the engine's syntax tree takes only
// well-formed dumps, so that lines forged through a name (were one to get
// past the quoted-identifier check) cannot pass for nodes.
func TestParseASTDumpStrict(t *testing.T) {
	good := []string{
		"SelectWithUnionQuery (children 1)",
		" ExpressionList (children 1)",
		"  SelectQuery (children 2)",
		"   ExpressionList (children 2)",
		"    Function count (alias c) (children 1)",
		"     ExpressionList",
		"    Literal 'a (children 3)' (alias s)",
		"   TablesInSelectQuery (children 1)",
		"    TablesInSelectQueryElement (children 1)",
		"     TableExpression (children 1)",
		"      TableIdentifier cordon.usage_events (alias u)",
	}
	root, err := store.ParseASTDump(good)
	if err != nil {
		t.Fatalf("well-formed dump: %v", err)
	}
	if root.Kind() != "SelectWithUnionQuery" || len(root.Children()) != 1 {
		t.Fatalf("root = %s with %d children", root.Kind(), len(root.Children()))
	}
	replace := func(i int, lines ...string) []string {
		out := append([]string(nil), good[:i]...)
		out = append(out, lines...)
		return append(out, good[i+1:]...)
	}
	for name, dump := range map[string][]string{
		"empty":                    nil,
		"a line split by a name":   replace(4, "    Function count (alias c", "x) (children 1)"),
		"forged extra child":       replace(6, "    Literal 'a'", "    TableIdentifier system.users"),
		"too few children":         good[:len(good)-1],
		"second root":              append(append([]string(nil), good...), "SelectWithUnionQuery"),
		"indentation jump":         replace(5, "       ExpressionList"),
		"control character":        replace(6, "    Literal 'a'\x01"),
		"name with a space":        replace(10, "      TableIdentifier weird db.t"),
		"alias with a parenthesis": replace(10, "      TableIdentifier t (alias x) (y)"),
		"text after a bare kind":   replace(1, " ExpressionList forged (children 1)"),
		"unknown kind form":        replace(1, " Expression-List (children 1)"),
		"zero children announced":  replace(5, "     ExpressionList (children 0)"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := store.ParseASTDump(dump); !errors.Is(err, store.ErrNotReadOnly) {
				t.Errorf("dump %q read as valid (%v)", dump, err)
			}
		})
	}
}
