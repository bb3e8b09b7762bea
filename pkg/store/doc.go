// Package store is Cordon's analytical store: usage events, anomalies and the
// token ledger in ClickHouse, for analysts' SQL and for reports. The auditor
// writes to it; nothing on the request path reads it.
//
// # Two engines, one schema
//
// The store runs on a Backend: chdbstore (chDB, the ClickHouse engine as an
// in-process library, the embedded default) or chserver (a ClickHouse
// server, production). Both take the same SQL: the schema migrations and
// every query live here, and the store decodes results itself (backends
// return ClickHouse's JSONCompact output), so a query that works on one
// engine works on the other. The test suite runs on chDB, on the chserver
// backend through an HTTP shim over chDB, and on a real server when
// CLICKHOUSE_ADDR is set.
//
// # Schema
//
// Open applies the embedded migrations (migrations/NNNN_name.sql, recorded
// in the schema_migrations table; every statement is IF NOT EXISTS, so an
// interrupted migration is simply applied again), then sets each table's
// TTL from Options (retention is configuration, not schema, and is altered
// only when it differs). docs/schema.md describes every table and view with
// example queries. Analysts read the views:
//
//	usage_events        one row per enforcement decision
//	anomalies           one row per anomaly found by a detector
//	token_ledger        issued / rotated / revoked / expired, and the
//	                    graduated response's restricted / released, one
//	                    row each
//	token_usage_daily   per token and UTC day: requests, allows, denies,
//	                    distinct IPs, distinct scopes
//	holder_usage_daily  the same per holder, plus distinct tokens
//
// The *_raw tables and *_state tables behind them are implementation.
//
// # Exactly once
//
// The auditor acknowledges a JetStream message only after its batch is
// written, so after a crash it writes some events again, possibly batched
// differently. Writes are therefore idempotent rather than transactional:
//
//   - usage_events_raw, anomalies_raw and token_ledger_raw are
//     ReplacingMergeTree tables whose sorting key ends in the event's own
//     id; every copy of an event has the same key, so copies collapse
//     when parts merge (usage inserts skip the merge of the inserted
//     block, InsertOptions.NoInsertMerge: a copy within one insert waits
//     for a merge like a copy in another);
//   - the views read FINAL, so they show each event once even before
//     background merges run; with Options.TokenInserts (every usage insert
//     carries a deduplication token, below, so an event is stored once),
//     usage_events does not, and a copy written otherwise shows until its
//     parts merge;
//   - the daily rollups are counters fed by a materialized view (migration
//     0008), exact because usage inserts carry deduplication tokens (below):
//     an event written again under another token, or without one, is
//     counted again there, though the views show it once.
//
// The cost is explicit: FINAL reads merge at query time (several times
// slower on usage_events, docs/schema.md). The tests insert
// overlapping batches and retried groups, and check every count.
//
// InsertUsageOnce adds exactly-once inserts by deduplication token: the
// rows go in one INSERT with SETTINGS insert_deduplication_token, and
// ClickHouse drops a later insert with the same token, whatever its rows,
// in the raw table and in the rollups (migration 0007 gives each a window
// of the last 10,000 inserts; on a server with replicated tables, set
// replicated_deduplication_window instead). A caller that retries must
// resend exactly the same rows under the same token, within the window.
//
// # Reading
//
// Query runs an analyst's SQL. It is judged on the engine's own parse, not
// on its text (gate.go): the engine normalises it as one statement
// (formatQuerySingleLine, the caller's text travelling only inside a string
// literal), then its EXPLAIN AST is walked against allow-lists of node
// kinds, functions (gatefuncs.go) and tables: one SELECT or WITH over
// Cordon's tables and views, no table functions, no file() or url(), no
// SETTINGS, no INTO OUTFILE, no FORMAT. The engine's normalised text runs,
// never the caller's, with readonly=1 and the limits of Options (time,
// memory, result rows and bytes), which the engine enforces by cancelling
// the query. Analyst queries take turns (Options.MaxConcurrentQueries), and
// on chDB, which runs one statement at a time, wait for pending inserts so
// that ingestion has the engine first. Result holds typed cells (see Result)
// and writes itself as a table, CSV or JSON. Anomalies, TokenReport and
// CountUsage are the store's own reports.
//
// # Writing
//
// InsertUsage, InsertAnomalies and InsertLedger take decoded envelopes (the
// events package) and write them with one INSERT … FORMAT
// JSONCompactEachRow per call (split only beyond 16 MiB); usage rows go in
// RowBinary instead when the backend is a BinaryInserter (chDB, through a
// private file), about half the engine's CPU. A call costs a fixed ~2 ms on chDB, so
// callers batch: the auditor writes what it received since its last write.
// Insert routes a mixed batch by event type.
package store
