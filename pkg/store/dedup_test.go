package store_test

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// aggregateUsage computes what the rollups must say about evs, each event
// counted once.
func aggregateUsage(evs []events.Envelope) (perToken, perHolder map[[2]string]*agg) {
	perToken, perHolder = map[[2]string]*agg{}, map[[2]string]*agg{}
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.ID.String()] {
			continue
		}
		seen[e.ID.String()] = true
		p := e.Data.(*events.UsageDecided)
		d := e.Time.UTC().Format("2006-01-02")
		for _, a := range []*agg{get(perToken, [2]string{p.TokenID, d}), get(perHolder, [2]string{p.Holder, d})} {
			a.requests++ // the rollups count events
			if p.Decision == events.DecisionAllow {
				a.allows++
			} else {
				a.denies++
			}
			a.ips[p.SourceIP] = true
			if p.Scope != "" {
				a.scopes[p.Scope] = true
			}
			a.tokens[p.TokenID] = true
		}
	}
	return perToken, perHolder
}

// checkRollups compares token_usage_daily and holder_usage_daily with what
// evs make them.
func checkRollups(t *testing.T, s *store.Store, evs []events.Envelope) {
	t.Helper()
	perToken, perHolder := aggregateUsage(evs)
	for _, v := range []struct {
		query string
		want  map[[2]string]*agg
		extra bool
	}{
		{"SELECT token_id, toString(day), requests, allows, denies, distinct_ips, distinct_scopes FROM token_usage_daily ORDER BY token_id, day", perToken, false},
		{"SELECT holder, toString(day), requests, allows, denies, distinct_ips, distinct_scopes, distinct_tokens FROM holder_usage_daily ORDER BY holder, day", perHolder, true},
	} {
		res := queryRows(t, s, v.query)
		if len(res.Rows) != len(v.want) {
			t.Errorf("%s: %d rows, want %d", v.query, len(res.Rows), len(v.want))
		}
		for _, r := range res.Rows {
			w := v.want[[2]string{r[0].(string), r[1].(string)}]
			if w == nil {
				t.Errorf("%s: unexpected row %v", v.query, r)
				continue
			}
			got := fmt.Sprint(r[2:])
			exp := []any{w.requests, w.allows, w.denies, uint64(len(w.ips)), uint64(len(w.scopes))}
			if v.extra {
				exp = append(exp, uint64(len(w.tokens)))
			}
			if got != fmt.Sprint(exp) {
				t.Errorf("%s: row %v: got %s, want %v", v.query, r[:2], got, exp)
			}
		}
	}
}

// TestInsertUsageOnce: an insert that repeats a deduplication token is
// dropped, whatever its rows, raw table and rollups alike; a plain insert
// and an insert with another token are not.
//
// On chDB the usage rows travel in RowBinary (chdbstore is a
// BinaryInserter); chdb-json runs the same cases through the JSON path.
func TestInsertUsageOnce(t *testing.T) {
	forEachEngine(t, testInsertUsageOnce)
	t.Run("chdb-json", func(t *testing.T) {
		testInsertUsageOnce(t, jsonEngine(), fmt.Sprintf("t%d_usage_once_json", dbSeq.Add(1)))
	})
}

func testInsertUsageOnce(t *testing.T, e engine, db string) {
	ctx := t.Context()
	s, b := openStore(t, e, db, store.Options{})
	set := genUsage(t, 4000, []string{newID(), newID(), newID()}, []string{"billing", "search"}, day0)
	evs := set.events
	raw := func() uint64 { return backendCount(t, b, "SELECT count() FROM usage_events_raw") }

	// The same token and rows, three times (a retry after a lost
	// reply, and a replay after a takeover): one copy.
	for range 3 {
		if err := s.InsertUsageOnce(ctx, "usage:p0:1-1000", evs[:1000]); err != nil {
			t.Fatal(err)
		}
	}
	if n := raw(); n != 1000 {
		t.Fatalf("usage_events_raw holds %d rows after 3 inserts of 1000 rows with one token, want 1000", n)
	}
	checkRollups(t, s, evs[:1000])

	// The same token, different rows: the first insert is kept, the
	// second dropped silently (why a caller must resend exactly the
	// same rows).
	if err := s.InsertUsageOnce(ctx, "usage:p0:1001-2000", evs[1000:2000]); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertUsageOnce(ctx, "usage:p0:1001-2000", evs[2000:3000]); err != nil {
		t.Fatal(err)
	}
	if n := raw(); n != 2000 {
		t.Fatalf("usage_events_raw holds %d rows, want 2000", n)
	}
	if n := backendCount(t, b, "SELECT count() FROM usage_events_raw WHERE event_id IN ("+idList(evs[2000:3000])+")"); n != 0 {
		t.Fatalf("%d rows of the second insert with a repeated token were written, want 0", n)
	}
	checkRollups(t, s, evs[:2000])

	// Another token: written, even over rows already there.
	if err := s.InsertUsageOnce(ctx, "usage:p1:1-3000", evs[2000:3000]); err != nil {
		t.Fatal(err)
	}
	if n := raw(); n != 3000 {
		t.Fatalf("usage_events_raw holds %d rows, want 3000", n)
	}
	checkRollups(t, s, evs[:3000])

	// Today's InsertUsage, unchanged, next to token inserts.
	if err := s.InsertUsage(ctx, evs[3000:]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountUsage(ctx); err != nil || n != uint64(len(evs)) {
		t.Fatalf("CountUsage = %d, %v; want %d", n, err, len(evs))
	}
	checkRollups(t, s, evs)
	if n := count(t, s, "SELECT count() FROM usage_events"); n != uint64(len(evs)) {
		t.Fatalf("usage_events has %d rows, want %d", n, len(evs))
	}
}

// idList is the event ids of evs as a SQL list of UUIDs.
func idList(evs []events.Envelope) string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = "toUUID('" + e.ID.String() + "')"
	}
	return strings.Join(ids, ",")
}

// TestInsertUsageOnceRefuses: a malformed token or batch fails with a clear
// error before anything is written, through the store and through each
// backend directly; the error never carries a long token whole.
func TestInsertUsageOnceRefuses(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, b := openStore(t, e, db, store.Options{})
		evs := genUsage(t, 10, []string{newID()}, []string{"billing"}, day0).events
		long := strings.Repeat("a", 10<<10)
		cases := []struct{ name, token string }{
			{"empty", ""},
			{"quote", "usage:p0:1-2' ; DROP TABLE usage_events_raw; --"},
			{"double quote", `usage"p0`},
			{"backquote", "usage`p0"},
			{"backslash", `usage\p0`},
			{"newline", "usage:p0\nFORMAT CSV"},
			{"NUL", "usage:p0\x00"},
			{"tab", "usage:\tp0"},
			{"DEL", "usage:p0\x7f"},
			{"not ASCII", "usage:p0:é"},
			{"10 KB", long},
			{"257 bytes", strings.Repeat("b", 257)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := s.InsertUsageOnce(ctx, tc.token, evs)
				if !errors.Is(err, store.ErrInvalidDedupToken) {
					t.Fatalf("store: got %v, want ErrInvalidDedupToken", err)
				}
				if len(err.Error()) > 300 {
					t.Errorf("store: error of %d bytes quotes the token whole", len(err.Error()))
				}
				if tc.token == "" {
					return // an empty token is no token to a backend
				}
				err = b.Insert(ctx, "usage_events_raw", []string{"event_id", "token_id"}, []byte(`["`+newID()+`","x"]`+"\n"), store.InsertOptions{DedupToken: tc.token})
				if !errors.Is(err, store.ErrInvalidDedupToken) {
					t.Fatalf("backend: got %v, want ErrInvalidDedupToken", err)
				}
			})
		}
		if n := backendCount(t, b, "SELECT count() FROM usage_events_raw WHERE token_id != ''"); n != 0 {
			t.Fatalf("%d rows written by refused inserts", n)
		}
		if n := backendCount(t, b, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'usage_events_raw'"); n != 1 {
			t.Fatal("usage_events_raw is gone")
		}
		good := []string{"a", strings.Repeat("z", store.MaxDedupTokenLen), "usage:p63:18446744073709551615-18446744073709551615", "x y!#$%&()*+,-./;<=>?@[]^_{|}~"}
		more := genUsage(t, len(good), []string{newID()}, []string{"billing"}, day0).events
		for i, tok := range good {
			if err := store.ValidateDedupToken(tok); err != nil {
				t.Errorf("ValidateDedupToken(%q): %v", tok, err)
			}
			if err := s.InsertUsageOnce(ctx, tok, more[i:i+1]); err != nil {
				t.Errorf("InsertUsageOnce with token %q: %v", tok, err)
			}
		}

		// An event that is not usage: refused before anything is written.
		bad := append(append([]events.Envelope{}, evs[1:]...), mustEnvelope(t, day0, &events.TokenExpired{TokenID: newID(), Tenant: "acme", Holder: "billing", Expiry: day0}))
		if err := s.InsertUsageOnce(ctx, "usage:p0:bad", bad); !errors.Is(err, store.ErrUnsupportedEvent) {
			t.Fatalf("a ledger event in a usage batch: got %v, want ErrUnsupportedEvent", err)
		}
		// And the token was not used up by the refused batch.
		if err := s.InsertUsageOnce(ctx, "usage:p0:bad", evs[1:]); err != nil {
			t.Fatal(err)
		}
		if n, err := s.CountUsage(ctx); err != nil || n != uint64(len(evs)-1+len(more)) {
			t.Fatalf("CountUsage = %d, %v; want %d", n, err, len(evs)-1+len(more))
		}
		// No token, no rows: nothing to do, still an error for a bad token.
		if err := s.InsertUsageOnce(ctx, "usage:p0:none", nil); err != nil {
			t.Fatal(err)
		}
		if err := s.InsertUsageOnce(ctx, "bad'", nil); !errors.Is(err, store.ErrInvalidDedupToken) {
			t.Fatalf("bad token, no rows: %v", err)
		}
	})
}

// TestDedupWindowMigration: migration 0007 gives a database written by an
// older build the deduplication window, keeping its rows; before it, a
// repeated token was not deduplicated (which is what makes the test of the
// window meaningful).
func TestDedupWindowMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := context.Background()
		b := e.open(t, db)
		migrateBefore(t, b, db, 7)
		evs := genUsage(t, 200, []string{newID()}, []string{"billing"}, day0).events
		cols := []string{"event_id", "time", "token_id", "tenant", "holder", "decision"}
		row := func(e events.Envelope) []byte {
			p := e.Data.(*events.UsageDecided)
			return fmt.Appendf(nil, `["%s","%s","%s","%s","%s","%s"]`+"\n", e.ID, e.Time.UTC().Format("2006-01-02 15:04:05.000000"), p.TokenID, p.Tenant, p.Holder, p.Decision)
		}
		for range 2 {
			if err := b.Insert(ctx, "usage_events_raw", cols, row(evs[0]), store.InsertOptions{DedupToken: "old:1"}); err != nil {
				t.Fatal(err)
			}
		}
		if n := backendCount(t, b, "SELECT count() FROM usage_events_raw"); n != 2 {
			t.Fatalf("before 0007, a repeated token wrote %d rows, want 2 (no window)", n)
		}
		s, err := store.Open(ctx, b, store.Options{})
		if err != nil {
			t.Fatalf("open the old database: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		for _, table := range []string{"usage_events_raw", "anomalies_raw"} {
			if n := backendCount(t, b, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '"+table+"' AND engine_full LIKE '%non_replicated_deduplication_window = 10000%'"); n != 1 {
				t.Errorf("%s has no deduplication window after migrating", table)
			}
		}
		// The old copies are merged, so that the count holds whether
		// usage_events reads FINAL or not (Options.TokenInserts).
		if err := b.Exec(ctx, "OPTIMIZE TABLE `"+db+"`.usage_events_raw FINAL"); err != nil {
			t.Fatal(err)
		}
		if n, err := s.CountUsage(ctx); err != nil || n != 1 {
			t.Fatalf("CountUsage after migrating = %d, %v; want the old event once", n, err)
		}
		for range 2 {
			if err := s.InsertUsageOnce(ctx, "new:1", evs[1:]); err != nil {
				t.Fatal(err)
			}
		}
		if n := backendCount(t, b, "SELECT count() FROM usage_events_raw"); n != uint64(len(evs)) {
			t.Fatalf("after 0007, usage_events_raw holds %d rows, want %d", n, len(evs))
		}
		if n, err := s.CountUsage(ctx); err != nil || n != uint64(len(evs)) {
			t.Fatalf("CountUsage = %d, %v; want %d", n, err, len(evs))
		}
	})
}

// TestInsertUsageOnceAllocs: a token costs no allocation per row: the
// allocations of InsertUsageOnce grow with the batch no faster than
// InsertUsage's, and neither grows per row at all (the row buffer is
// pooled).
func TestInsertUsageOnceAllocs(t *testing.T) {
	s, _ := openStore(t, engines()[0], fmt.Sprintf("t%d_allocs", dbSeq.Add(1)), store.Options{})
	evs := genUsage(t, 2000, []string{newID(), newID()}, []string{"billing"}, day0).events
	tokens := make([]string, 100)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("allocs:%d", i)
	}
	ctx := t.Context()
	var seq int
	allocs := func(once bool, n int) float64 {
		return testing.AllocsPerRun(5, func() {
			seq++
			var err error
			if once {
				err = s.InsertUsageOnce(ctx, tokens[seq], evs[:n])
			} else {
				err = s.InsertUsage(ctx, evs[:n])
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// No collection while measuring: it would empty the buffer pool, and
	// refilling it allocates whatever the call.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, once := range []bool{false, true} {
		allocs(once, 2000) // warm the buffer pool
	}
	plainSmall, plainBig := allocs(false, 200), allocs(false, 2000)
	onceSmall, onceBig := allocs(true, 200), allocs(true, 2000)
	t.Logf("allocations per call: InsertUsage %v (200 rows) %v (2000 rows); InsertUsageOnce %v, %v", plainSmall, plainBig, onceSmall, onceBig)
	if perRow := (onceBig - onceSmall) / 1800; perRow > 0.01 {
		t.Errorf("InsertUsageOnce allocates %.3f times per row", perRow)
	}
	if onceBig > plainBig+2 { // a call may allocate once or twice more in the engine binding
		t.Errorf("InsertUsageOnce allocates %v times for 2000 rows, InsertUsage %v", onceBig, plainBig)
	}
}

// TestCounterRollupsMigration: migration 0008 carries the rollups of a
// database written before it (uniqExact states) into the counters, once:
// the answers are the same after migrating, after more inserts, and after
// the migration's statements run again.
func TestCounterRollupsMigration(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := context.Background()
		b := e.open(t, db)
		migrateBefore(t, b, db, 8)
		evs := genUsage(t, 3000, []string{newID(), newID(), newID()}, []string{"billing", "search"}, day0).events
		cols := []string{"event_id", "time", "token_id", "tenant", "holder", "source_ip", "scope", "decision", "reason"}
		var rows []byte
		for _, e := range evs[:2000] {
			p := e.Data.(*events.UsageDecided)
			rows = fmt.Appendf(rows, `["%s","%s","%s","%s","%s","%s","%s","%s","%s"]`+"\n", e.ID, e.Time.UTC().Format("2006-01-02 15:04:05.000000"),
				p.TokenID, p.Tenant, p.Holder, p.SourceIP, p.Scope, p.Decision, p.Reason)
		}
		// Written twice, as the old auditor could: the sets absorb it.
		for range 2 {
			if err := b.Insert(ctx, "usage_events_raw", cols, rows, store.InsertOptions{}); err != nil {
				t.Fatal(err)
			}
			rows = append(rows[:0:0], rows...) // another block for the hash: not dropped as a copy
			rows = append(rows, fmt.Appendf(nil, `["%s","%s","%s","%s","%s","%s","%s","%s","%s"]`+"\n", evs[0].ID, evs[0].Time.UTC().Format("2006-01-02 15:04:05.000000"),
				evs[0].Data.(*events.UsageDecided).TokenID, "acme", evs[0].Data.(*events.UsageDecided).Holder, evs[0].Data.(*events.UsageDecided).SourceIP,
				evs[0].Data.(*events.UsageDecided).Scope, evs[0].Data.(*events.UsageDecided).Decision, "x")...)
		}
		s, err := store.Open(ctx, b, store.Options{})
		if err != nil {
			t.Fatalf("open the old database: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		checkRollups(t, s, evs[:2000])
		if err := s.InsertUsageOnce(ctx, "after:1", evs[2000:]); err != nil {
			t.Fatal(err)
		}
		checkRollups(t, s, evs)
		ms, err := store.Migrations(db)
		if err != nil {
			t.Fatal(err)
		}
		if ms[7].Version != 8 {
			t.Fatalf("migration 8 is %s", ms[7].Name)
		}
		for _, stmt := range ms[7].Statements {
			if err := b.Exec(ctx, stmt); err != nil {
				t.Fatalf("re-running 0008: %v", err)
			}
		}
		checkRollups(t, s, evs)
	})
}

// TestInsertAnomaliesOnce: anomalies written with a token: a retry, even
// with other rows, is dropped; a bad token or a usage event is refused
// before anything is written.
func TestInsertAnomaliesOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := t.Context()
		s, b := openStore(t, e, db, store.Options{})
		var an []events.Envelope
		for i := range 20 {
			at := day0.Add(time.Duration(i) * time.Minute)
			an = append(an, mustEnvelope(t, at, &events.AnomalyDetected{
				AnomalyID: newID(), Detector: "new_ip", Severity: events.SeverityHigh, TokenID: newID(), Tenant: "acme",
				Holder: "billing", EventID: newID(), EventTime: at, SourceIP: "192.0.2.1",
				Evidence: events.Evidence{Seen: "192.0.2.1", Baseline: "10.0.0.0/8"},
			}))
		}
		for _, batch := range [][]events.Envelope{an[:10], an[:10], an[10:]} {
			if err := s.InsertAnomaliesOnce(ctx, "anomalies:p0:1", batch); err != nil {
				t.Fatal(err)
			}
		}
		if n := backendCount(t, b, "SELECT count() FROM anomalies_raw"); n != 10 {
			t.Fatalf("anomalies_raw holds %d rows, want the first 10", n)
		}
		if err := s.InsertAnomaliesOnce(ctx, "bad\n", an[10:]); !errors.Is(err, store.ErrInvalidDedupToken) {
			t.Fatalf("bad token: %v", err)
		}
		use := genUsage(t, 1, []string{newID()}, []string{"billing"}, day0).events
		if err := s.InsertAnomaliesOnce(ctx, "anomalies:p0:2", append(append([]events.Envelope{}, an[10:]...), use...)); !errors.Is(err, store.ErrUnsupportedEvent) {
			t.Fatalf("a usage event among anomalies: %v", err)
		}
		if err := s.InsertAnomaliesOnce(ctx, "anomalies:p0:2", an[10:]); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT count() FROM anomalies"); n != 20 {
			t.Fatalf("anomalies has %d rows, want 20", n)
		}
	})
}

// TestTokenInsertsView: Options.TokenInserts makes usage_events read
// without FINAL (a copy written without a token shows until merged), and
// opening without it puts FINAL back; an unchanged option changes nothing.
func TestTokenInsertsView(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine, db string) {
		ctx := context.Background()
		b := e.open(t, db)
		var logs strings.Builder
		open := func(tokenInserts bool) *store.Store {
			t.Helper()
			logs.Reset()
			s, err := store.Open(ctx, b, store.Options{TokenInserts: tokenInserts, Logger: zerolog.New(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			return s // closing it would close b: the test's cleanup does
		}
		s := open(true)
		evs := genUsage(t, 100, []string{newID()}, []string{"billing"}, day0).events
		for _, batch := range [][]events.Envelope{evs, evs[:10]} { // a redelivery without a token
			if err := s.InsertUsage(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(t, s, "SELECT count() FROM usage_events"); n != 110 {
			t.Fatalf("without FINAL, usage_events has %d rows, want the 110 written", n)
		}
		s = open(true)
		if strings.Contains(logs.String(), "usage_events view") {
			t.Errorf("the same option changed the view: %s", logs.String())
		}
		s = open(false)
		if !strings.Contains(logs.String(), "changed the usage_events view") {
			t.Errorf("the view change was not logged: %s", logs.String())
		}
		if n := count(t, s, "SELECT count() FROM usage_events"); n != 100 {
			t.Fatalf("with FINAL, usage_events has %d rows, want 100", n)
		}
		s = open(true)
		if err := b.Exec(ctx, "OPTIMIZE TABLE `"+db+"`.usage_events_raw FINAL"); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, "SELECT count() FROM usage_events"); n != 100 {
			t.Fatalf("without FINAL after the merge, usage_events has %d rows, want 100", n)
		}
		_ = b.Close()
	})
}
