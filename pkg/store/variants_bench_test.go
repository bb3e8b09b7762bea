package store_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/events"
	"github.com/cordonhq/cordon/pkg/store"
)

// schemaVariant is a change of the usage schema, applied after the
// migrations, whose cost BenchmarkInsertUsageVariants and
// BenchmarkSchemaQueries measure (docs/schema.md keeps the figures).
type schemaVariant struct {
	name string
	sql  []string // {db} is the quoted database
	// insertMerge keeps the engine's merge of each inserted block, as
	// usage inserts did before they set optimize_on_insert = 0.
	insertMerge bool
}

// Statements shared by several variants. The store's migrations are the
// starting point; the variants of the schema before migration 0008 put its
// rollups back.
var (
	// before0008 drops the counters' materialized view and the views over
	// them, for migration 0004's statements (applyVariant) to put back the
	// rollups of uniqExact states.
	before0008 = []string{
		"DROP VIEW IF EXISTS {db}.token_usage_daily_counts_mv",
		"DROP VIEW IF EXISTS {db}.token_usage_daily",
		"DROP VIEW IF EXISTS {db}.holder_usage_daily",
		"migration 0004",
	}
	withFinal = []string{"CREATE OR REPLACE VIEW {db}.usage_events AS SELECT * FROM {db}.usage_events_raw FINAL"}
	noFinal   = []string{"CREATE OR REPLACE VIEW {db}.usage_events AS SELECT * FROM {db}.usage_events_raw"}
	noWindow  = []string{
		"ALTER TABLE {db}.usage_events_raw MODIFY SETTING non_replicated_deduplication_window = 0",
		"ALTER TABLE {db}.token_usage_daily_state MODIFY SETTING non_replicated_deduplication_window = 0",
		"ALTER TABLE {db}.holder_usage_daily_state MODIFY SETTING non_replicated_deduplication_window = 0",
	}
	noBloom = []string{"ALTER TABLE {db}.usage_events_raw DROP INDEX IF EXISTS source_ip_bf"}
	// noStatistics stops the engine building minmax and uniq statistics
	// of every column on each merge (chDB 26.5's auto_statistics_types);
	// noSubstreamMarks writes marks per column, not per substream, and one
	// file less a part. Measured, not kept (docs/schema.md).
	noStatistics = []string{
		"ALTER TABLE {db}.usage_events_raw MODIFY SETTING auto_statistics_types = ''",
		"ALTER TABLE {db}.token_usage_daily_counts MODIFY SETTING auto_statistics_types = ''",
	}
	noSubstreamMarks = []string{
		"ALTER TABLE {db}.usage_events_raw MODIFY SETTING write_marks_for_substreams_in_compact_parts = 0",
		"ALTER TABLE {db}.token_usage_daily_counts MODIFY SETTING write_marks_for_substreams_in_compact_parts = 0",
	}
	// holderFromToken replaces the holder rollup's materialized view by a
	// view over the token rollup's uniqExact states.
	holderFromToken = []string{
		"DROP VIEW IF EXISTS {db}.holder_usage_daily_mv",
		`CREATE OR REPLACE VIEW {db}.holder_usage_daily AS
SELECT day, tenant, holder,
    uniqExactMerge(requests) AS requests, uniqExactIfMerge(allows) AS allows, uniqExactIfMerge(denies) AS denies,
    uniqExact(token_id) AS distinct_tokens, uniqExactMerge(source_ips) AS distinct_ips, uniqExactIfMerge(scopes) AS distinct_scopes
FROM {db}.token_usage_daily_state
GROUP BY day, tenant, holder`,
	}
	// holderCounters gives the holder rollup counters of its own, fed by
	// its own materialized view, instead of 0008's view over the token
	// rollup.
	holderCounters = []string{
		`CREATE TABLE {db}.holder_usage_daily_counts (
    day Date, tenant LowCardinality(String), holder LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64), allows SimpleAggregateFunction(sum, UInt64), denies SimpleAggregateFunction(sum, UInt64),
    tokens AggregateFunction(uniqExact, String), source_ips AggregateFunction(uniqExact, String), scopes AggregateFunction(uniqExactIf, String, UInt8)
) ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(day) ORDER BY (tenant, holder, day)
SETTINGS non_replicated_deduplication_window = 10000`,
		`CREATE MATERIALIZED VIEW {db}.holder_usage_daily_counts_mv TO {db}.holder_usage_daily_counts AS
SELECT toDate(time) AS day, tenant, holder,
    count() AS requests, countIf(decision = 'allow') AS allows, countIf(decision = 'deny') AS denies,
    uniqExactState(token_id) AS tokens, uniqExactState(source_ip) AS source_ips, uniqExactIfState(toString(scope), scope != '') AS scopes
FROM {db}.usage_events_raw GROUP BY day, tenant, holder`,
		`CREATE OR REPLACE VIEW {db}.holder_usage_daily AS
SELECT day, tenant, holder, sum(requests) AS requests, sum(allows) AS allows, sum(denies) AS denies,
    uniqExactMerge(tokens) AS distinct_tokens, uniqExactMerge(source_ips) AS distinct_ips, uniqExactIfMerge(scopes) AS distinct_scopes
FROM {db}.holder_usage_daily_counts GROUP BY day, tenant, holder`,
	}
	noRollups = []string{"DROP VIEW IF EXISTS {db}.token_usage_daily_counts_mv"}
	// defaultMergeBase undoes migration 0010: the raw table merges with
	// the engine's default merge_selector_base (5).
	defaultMergeBase = []string{"ALTER TABLE {db}.usage_events_raw RESET SETTING merge_selector_base"}
	// rollupMergeBase gives the rollup the raw table's base of 20 too.
	rollupMergeBase = []string{"ALTER TABLE {db}.token_usage_daily_counts MODIFY SETTING merge_selector_base = 20"}
	// addressScopeRollup replaces 0008's token rollup by plain counters
	// keyed by address and scope too (no aggregate states), the distinct
	// counts computed by the views.
	addressScopeRollup = []string{
		"DROP VIEW IF EXISTS {db}.token_usage_daily_counts_mv",
		`CREATE TABLE {db}.token_usage_daily_by_address (
    day Date, tenant LowCardinality(String), token_id String, holder LowCardinality(String),
    source_ip String, scope LowCardinality(String), requests UInt64, allows UInt64, denies UInt64
) ENGINE = SummingMergeTree PARTITION BY toYYYYMM(day) ORDER BY (tenant, token_id, day, holder, source_ip, scope)
SETTINGS non_replicated_deduplication_window = 10000`,
		`CREATE MATERIALIZED VIEW {db}.token_usage_daily_by_address_mv TO {db}.token_usage_daily_by_address AS
SELECT toDate(time) AS day, tenant, token_id, holder, source_ip, scope,
    count() AS requests, countIf(decision = 'allow') AS allows, countIf(decision = 'deny') AS denies
FROM {db}.usage_events_raw GROUP BY day, tenant, token_id, holder, source_ip, scope`,
		`CREATE OR REPLACE VIEW {db}.token_usage_daily AS
SELECT day, tenant, token_id, holder, sum(requests) AS requests, sum(allows) AS allows, sum(denies) AS denies,
    uniqExact(source_ip) AS distinct_ips, uniqExactIf(toString(scope), scope != '') AS distinct_scopes
FROM {db}.token_usage_daily_by_address GROUP BY day, tenant, token_id, holder`,
		`CREATE OR REPLACE VIEW {db}.holder_usage_daily AS
SELECT day, tenant, holder, sum(requests) AS requests, sum(allows) AS allows, sum(denies) AS denies,
    uniqExact(token_id) AS distinct_tokens, uniqExact(source_ip) AS distinct_ips, uniqExactIf(toString(scope), scope != '') AS distinct_scopes
FROM {db}.token_usage_daily_by_address GROUP BY day, tenant, holder`,
	}
)

// cat concatenates statement lists.
func cat(lists ...[]string) []string { return slices.Concat(lists...) }

// schemaVariants are the variants measured. Each starts from the store's
// schema with every migration applied (0010's merge_selector_base
// included) and changes it; a variant named for an older migration puts
// back what later ones changed in the rollups and windows.
var schemaVariants = []schemaVariant{
	{"today (0006: no window, uniqExact rollups, FINAL)", cat(before0008, noWindow, withFinal), true},
	{"0007 (window)", cat(before0008, withFinal), true},
	{"0007 no bloom index", cat(before0008, noBloom, withFinal), true},
	{"0007 holder from token", cat(before0008, holderFromToken, withFinal), true},
	{"0008 with a holder counters MV", cat(holderCounters, withFinal), true},
	{"0008 merge on insert", withFinal, true},
	{"0008 (counters, holder from token, FINAL)", withFinal, false},
	{"0008 no statistics", cat(noStatistics, withFinal), false},
	{"0008 no statistics, no substream marks", cat(noStatistics, noSubstreamMarks, withFinal), false},
	{"0008 no bloom index", cat(noBloom, withFinal), false},
	{"0008 rollup by address and scope", cat(addressScopeRollup, withFinal), false},
	{"raw only (no rollups)", cat(noRollups, withFinal), false},
	{"before 0010 (merge_selector_base 5)", cat(defaultMergeBase, withFinal), false},
	{"0010 with the rollup at base 20", cat(rollupMergeBase, withFinal), false},
	{"before 0010, TokenInserts (no FINAL)", cat(defaultMergeBase, noFinal), false},
}

// applyVariant applies v to the store's database through its backend.
func applyVariant(tb testing.TB, b store.Backend, db string, v schemaVariant) {
	tb.Helper()
	for _, stmt := range v.sql {
		if stmt == "migration 0004" {
			ms, err := store.Migrations(db)
			if err != nil || ms[3].Version != 4 {
				tb.Fatalf("migration 0004: %v", err)
			}
			applyVariant(tb, b, db, schemaVariant{name: v.name, sql: ms[3].Statements})
			continue
		}
		if err := b.Exec(context.Background(), strings.ReplaceAll(stmt, "{db}", "`"+db+"`")); err != nil {
			tb.Fatalf("variant %s: %v\n%s", v.name, err, stmt)
		}
	}
}

// cpuTime is the CPU time of this process (every thread: Go's and the
// engine's), user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// envInt reads a positive integer from the environment, def when unset.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// insertGenerated inserts rows usage events, 20,000 (CORDON_BENCH_BATCH) per InsertUsageOnce
// (a token each; InsertUsage, without one, when CORDON_BENCH_INSERT=usage)
// for 20,000 tokens of 200 holders over the last 47 hours,
// and returns the wall and CPU time of the inserts alone (generating the
// events is not counted).
func insertGenerated(b *testing.B, s *store.Store, rows int, seed string) (wall, cpu time.Duration) {
	batch := envInt(b, "CORDON_BENCH_BATCH", 20_000)
	tokens := make([]string, 20_000)
	for i := range tokens {
		tokens[i] = newID()
	}
	holders := make([]string, 200)
	for i := range holders {
		holders[i] = fmt.Sprintf("svc-%03d", i)
	}
	start := time.Now().UTC().Add(-47 * time.Hour)
	withoutToken := os.Getenv("CORDON_BENCH_INSERT") == "usage"
	if v := os.Getenv("CORDON_BENCH_INSERT"); v != "" && v != "usage" && v != "once" {
		b.Fatalf("CORDON_BENCH_INSERT=%q: want once (InsertUsageOnce, the default) or usage (InsertUsage, no token)", v)
	}
	for i := 0; i < rows; i += batch {
		evs := genUsage(b, batch, tokens, holders, start).events
		w0, c0 := time.Now(), cpuTime()
		var err error
		if withoutToken {
			err = s.InsertUsage(b.Context(), evs)
		} else {
			err = s.InsertUsageOnce(b.Context(), fmt.Sprintf("bench:%s:%d", seed, i), evs)
		}
		if err != nil {
			b.Fatal(err)
		}
		wall += time.Since(w0)
		cpu += cpuTime() - c0
	}
	return wall, cpu
}

// BenchmarkInsertUsageVariants measures the insert cost of each schema
// variant on chDB, in each input format: rowbinary (the store's path on
// chDB, RowBinary through a file) and json (JSONCompactEachRow inline, the
// path of a backend without BinaryInserter), one after the other in the
// same run: CORDON_BENCH_ROWS rows (400,000 by default) a run, in inserts
// of 20,000 rows with a deduplication token each, one writer.
// wall-µs/row is elapsed time, cpu-µs/row the process's CPU time (the
// engine's threads included) during the inserts. Run it with
// -benchtime=1x:
//
//	go test ./pkg/store -run '^$' -bench InsertUsageVariants -benchtime=1x
func BenchmarkInsertUsageVariants(b *testing.B) {
	rows := envInt(b, "CORDON_BENCH_ROWS", 400_000)
	formats := []engine{{"rowbinary", engines()[0].open}, {"json", jsonEngine().open}}
	for _, v := range schemaVariants {
		b.Run(strings.ReplaceAll(v.name, " ", "_"), func(b *testing.B) {
			for _, f := range formats {
				b.Run(f.name, func(b *testing.B) {
					var wall, cpu time.Duration
					for i := 0; i < b.N; i++ {
						db := fmt.Sprintf("benchv%d", dbSeq.Add(1))
						s, be := openStore(b, f, db, store.Options{})
						applyVariant(b, be, db, v)
						s.SetUsageInsertMerge(v.insertMerge)
						w, c := insertGenerated(b, s, rows, db)
						wall, cpu = wall+w, cpu+c
						_ = be.Exec(context.Background(), "DROP DATABASE `"+db+"`")
					}
					n := float64(b.N * rows)
					b.ReportMetric(float64(wall.Microseconds())/n, "wall-µs/row")
					b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/row")
					b.ReportMetric(0, "ns/op")
				})
			}
		})
	}
}

// BenchmarkInsertUsageInterleaved measures the CPU per row of the RowBinary
// insert (the store's path on chDB) for the variants named in
// CORDON_BENCH_VARIANTS (names separated by ';'; by default the store's
// schema with and without the merge on insert, and the raw table alone),
// CORDON_BENCH_REPS times each (3 by default), one variant after the other
// in turn, so that a load that changes during the run weighs on each
// alike; it reports each variant's median. Rows and inserts are as for
// BenchmarkInsertUsageVariants (CORDON_BENCH_ROWS, 400,000 by default;
// CORDON_BENCH_BATCH rows an insert).
//
//	go test ./pkg/store -run '^$' -bench InsertUsageInterleaved -benchtime=1x
func BenchmarkInsertUsageInterleaved(b *testing.B) {
	rows := envInt(b, "CORDON_BENCH_ROWS", 400_000)
	reps := envInt(b, "CORDON_BENCH_REPS", 3)
	vs := pickVariants(b, []string{"0008 merge on insert", "0008 (counters, holder from token, FINAL)", "raw only (no rollups)"})
	cpu := make([][]float64, len(vs))
	for r := 0; r < reps; r++ {
		for i, v := range vs {
			db := fmt.Sprintf("benchi%d", dbSeq.Add(1))
			s, be := openStore(b, engines()[0], db, store.Options{})
			applyVariant(b, be, db, v)
			s.SetUsageInsertMerge(v.insertMerge)
			_, c := insertGenerated(b, s, rows, db)
			cpu[i] = append(cpu[i], float64(c.Microseconds())/float64(rows))
			_ = be.Exec(context.Background(), "DROP DATABASE `"+db+"`")
		}
	}
	for i, v := range vs {
		b.Run(strings.ReplaceAll(v.name, " ", "_"), func(b *testing.B) {
			xs := slices.Clone(cpu[i])
			slices.Sort(xs)
			b.Logf("cpu-µs/row of each run: %.2f", cpu[i])
			b.ReportMetric(xs[len(xs)/2], "median-cpu-µs/row")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// pickVariants returns the variants named in CORDON_BENCH_VARIANTS (names
// separated by ';', as they hold commas), def when it is unset.
func pickVariants(tb testing.TB, def []string) []schemaVariant {
	names := def
	if v := os.Getenv("CORDON_BENCH_VARIANTS"); v != "" {
		names = strings.Split(v, ";")
	}
	all := append(slices.Clone(schemaVariants), schemaVariant{name: "0008 TokenInserts (no FINAL)", sql: noFinal})
	out := make([]schemaVariant, 0, len(names))
	for _, name := range names {
		i := slices.IndexFunc(all, func(v schemaVariant) bool { return v.name == name })
		if i < 0 {
			tb.Fatalf("no variant %q", name)
		}
		out = append(out, all[i])
	}
	return out
}

// BenchmarkSchemaQueries measures the p50 of every docs/schema.md example
// query, and of the store's reports, on CORDON_BENCH_ROWS rows (2,000,000
// by default) for the variants named in CORDON_BENCH_VARIANTS (names
// separated by ';'; by default the baseline and the candidate). Each query runs 7 times after one warm-up.
//
//	go test ./pkg/store -run '^$' -bench SchemaQueries -benchtime=1x -v
func BenchmarkSchemaQueries(b *testing.B) {
	rows := envInt(b, "CORDON_BENCH_ROWS", 2_000_000)
	doc, err := os.ReadFile("../../docs/schema.md")
	if err != nil {
		b.Fatal(err)
	}
	var queries []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllSubmatch(doc, -1) {
		queries = append(queries, string(m[1]))
	}
	queries = append(queries,
		"SELECT count() FROM usage_events",
		"SELECT token_id, day, requests, allows, denies, distinct_ips, distinct_scopes FROM token_usage_daily WHERE day >= today() - 7 ORDER BY requests DESC LIMIT 20")
	chdb := engines()[0]
	for _, v := range pickVariants(b, []string{"0007 (window)", "0008 (counters, holder from token, FINAL)", "0008 TokenInserts (no FINAL)"}) {
		b.Run(strings.ReplaceAll(v.name, " ", "_"), func(b *testing.B) {
			db := fmt.Sprintf("benchq%d", dbSeq.Add(1))
			s, be := openStore(b, chdb, db, store.Options{MaxResultRows: -1, MaxResultBytes: -1, QueryTimeout: 10 * time.Minute})
			applyVariant(b, be, db, v)
			insertGenerated(b, s, rows, db)
			b.ResetTimer()
			for range b.N {
				for qi, q := range queries {
					var times []time.Duration
					for run := range 8 {
						t0 := time.Now()
						if _, err := s.Query(b.Context(), q); err != nil {
							b.Fatalf("query %d: %v\n%s", qi+1, err, q)
						}
						if run > 0 {
							times = append(times, time.Since(t0))
						}
					}
					slices.Sort(times)
					b.Logf("%s: query %d p50 %.1f ms (min %.1f, max %.1f)", v.name, qi+1,
						float64(times[len(times)/2].Microseconds())/1000, float64(times[0].Microseconds())/1000, float64(times[len(times)-1].Microseconds())/1000)
				}
			}
			b.StopTimer()
			_ = be.Exec(context.Background(), "DROP DATABASE `"+db+"`")
		})
	}
}

// TestSchemaVariants: every variant measured gives the rollups' answers
// when each insert carries its own token and a retry repeats it, and
// (counters included) two different inserts without a token whose rollup
// rows would be equal both count: a rollup's own deduplication window
// must not take the second for a copy of the first.
func TestSchemaVariants(t *testing.T) {
	chdb := engines()[0]
	variants := append(slices.Clone(schemaVariants), schemaVariant{name: "0008 TokenInserts (no FINAL)", sql: noFinal})
	for _, v := range variants {
		if v.name == "raw only (no rollups)" {
			continue
		}
		t.Run(strings.ReplaceAll(v.name, " ", "_"), func(t *testing.T) {
			db := fmt.Sprintf("t%d_variant", dbSeq.Add(1))
			s, be := openStore(t, chdb, db, store.Options{})
			applyVariant(t, be, db, v)
			set := genUsage(t, 3000, []string{newID(), newID(), newID()}, []string{"billing", "search"}, day0)
			evs := set.events
			for i := 0; i < len(evs); i += 1000 {
				for range 2 {
					if err := s.InsertUsageOnce(t.Context(), fmt.Sprintf("v:%d", i), evs[i:i+1000]); err != nil {
						t.Fatal(err)
					}
				}
			}
			twin := func() []events.Envelope {
				return []events.Envelope{usage(t, day0.Add(time.Hour), "twin", "twins", "orders:read", "10.9.9.9", "allow", "ok")}
			}
			a, b := twin(), twin()
			b[0].Time = a[0].Time.Add(time.Second)
			evs = append(append(evs, a...), b...)
			for _, batch := range [][]events.Envelope{a, b} {
				if err := s.InsertUsage(t.Context(), batch); err != nil {
					t.Fatal(err)
				}
			}
			checkRollups(t, s, evs)
			if n := count(t, s, "SELECT count() FROM usage_events"); n != uint64(len(evs)) {
				t.Errorf("usage_events has %d rows, want %d", n, len(evs))
			}
		})
	}
}
