-- usage_events reads usage_events_raw without FINAL (issue 12).
--
-- Every usage insert carries its own deduplication token
-- (Store.InsertUsageOnce, migration 0007), so an event is stored once and
-- FINAL, which merges the parts at every read, only slows analysts down
-- (measured in docs/schema.md, "Schema variants": several times over on
-- 2 million rows). The table stays a ReplacingMergeTree, so a copy written
-- by an older auditor, or by a caller that writes one event under two
-- tokens, still collapses when its parts merge, but it is seen twice until
-- then. anomalies and token_ledger keep FINAL: they are small, and their
-- writers do not use tokens.
CREATE OR REPLACE VIEW {db}.usage_events AS
SELECT * FROM {db}.usage_events_raw;
