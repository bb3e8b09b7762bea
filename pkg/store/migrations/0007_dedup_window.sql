-- Exactly-once inserts by deduplication token (issue 12).
--
-- The auditor writes each group of usage rows with one INSERT carrying an
-- insert_deduplication_token that names the group ('usage:p3:1200-1450'),
-- and replays a group it is unsure of with exactly the same rows and token.
-- ClickHouse remembers the tokens of the table's last
-- non_replicated_deduplication_window inserts and drops a later insert
-- carrying one of them, whatever its rows. The default window, 0, turns
-- this off.
--
-- The materialized views still run on a dropped block: each target table
-- de-duplicates it on its own, by a token derived from the insert's, only
-- if it has a window too (measured on chDB 26.5: without one, a repeated
-- token with other rows reached the rollups). So the rollup state tables
-- get the same window.
--
-- 10,000 inserts is hours of inserts of 20,000 rows at the target rate,
-- far more than a takeover replays. An insert without a token is
-- de-duplicated by the hash of its rows instead, which can only drop an
-- exact copy of a recent insert (the same events again).
--
-- anomalies_raw gets the same window for the same use by the auditor.
--
-- On a ClickHouse server with replicated tables (Replicated*MergeTree),
-- this setting is ignored: the window there is replicated_deduplication_window
-- (kept in Keeper), which must be at least as large:
--   ALTER TABLE cordon.usage_events_raw MODIFY SETTING replicated_deduplication_window = 10000
-- (see docs/schema.md). MODIFY SETTING is idempotent: applying it again
-- changes nothing.
ALTER TABLE {db}.usage_events_raw MODIFY SETTING non_replicated_deduplication_window = 10000;

ALTER TABLE {db}.anomalies_raw MODIFY SETTING non_replicated_deduplication_window = 10000;

ALTER TABLE {db}.token_usage_daily_state MODIFY SETTING non_replicated_deduplication_window = 10000;

ALTER TABLE {db}.holder_usage_daily_state MODIFY SETTING non_replicated_deduplication_window = 10000;
