-- Counter rollups (issue 12): the daily rollups count rows instead of
-- keeping exact sets of event ids, and the holder rollup is read from the
-- token rollup instead of being kept apart.
--
-- Exact only because every usage insert carries its own deduplication
-- token (Store.InsertUsageOnce, migration 0007): a retried group is dropped
-- whole, rollups included, so an event is counted once. An event written
-- twice in two different inserts (two tokens, or none) is counted twice
-- here, while usage_events still shows it once: callers must not do that.
-- Measured (docs/schema.md, "Schema variants"): the uniqExact(event_id)
-- states cost about a quarter of the insert CPU, and the materialized
-- view of the holder rollup about 1 µs a row more.
--
-- Counters are SimpleAggregateFunction(sum) so that background merges add
-- them up. The distinct counts (IPs, scopes) stay exact sets, of the IPs
-- and scopes of a token, which are few. holder_usage_daily merges the
-- token rows of the day of a holder: its distinct IPs and scopes are the
-- union of the sets of its tokens, and its distinct tokens the number of
-- token rows, as exact as before.
--
-- The old state tables are left as they were, no longer fed: their rows
-- are copied into the new table once, before its materialized view exists
-- (the copy runs only while the new table is empty, so applying the
-- migration again copies nothing). Apply it with the auditors stopped: a
-- row inserted by another process between the copy and the creation of
-- the new view would be missing from the rollups (usage_events keeps it).
CREATE TABLE IF NOT EXISTS {db}.token_usage_daily_counts
(
    day        Date,
    tenant     LowCardinality(String),
    token_id   String,
    holder     LowCardinality(String),
    requests   SimpleAggregateFunction(sum, UInt64),
    allows     SimpleAggregateFunction(sum, UInt64),
    denies     SimpleAggregateFunction(sum, UInt64),
    source_ips AggregateFunction(uniqExact, String),
    scopes     AggregateFunction(uniqExactIf, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, token_id, day, holder)
SETTINGS non_replicated_deduplication_window = 10000;

DROP VIEW IF EXISTS {db}.token_usage_daily_mv;

DROP VIEW IF EXISTS {db}.holder_usage_daily_mv;

INSERT INTO {db}.token_usage_daily_counts
SELECT day, tenant, token_id, holder,
    uniqExactMerge(requests), uniqExactIfMerge(allows), uniqExactIfMerge(denies),
    uniqExactMergeState(source_ips), uniqExactIfMergeState(scopes)
FROM {db}.token_usage_daily_state
WHERE (SELECT count() FROM {db}.token_usage_daily_counts) = 0
GROUP BY day, tenant, token_id, holder;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.token_usage_daily_counts_mv TO {db}.token_usage_daily_counts AS
SELECT
    toDate(time) AS day,
    tenant,
    token_id,
    holder,
    count() AS requests,
    countIf(decision = 'allow') AS allows,
    countIf(decision = 'deny') AS denies,
    uniqExactState(source_ip) AS source_ips,
    uniqExactIfState(toString(scope), scope != '') AS scopes
FROM {db}.usage_events_raw
GROUP BY day, tenant, token_id, holder;

CREATE OR REPLACE VIEW {db}.token_usage_daily AS
SELECT
    day,
    tenant,
    token_id,
    holder,
    sum(requests) AS requests,
    sum(allows) AS allows,
    sum(denies) AS denies,
    uniqExactMerge(source_ips) AS distinct_ips,
    uniqExactIfMerge(scopes) AS distinct_scopes
FROM {db}.token_usage_daily_counts
GROUP BY day, tenant, token_id, holder;

CREATE OR REPLACE VIEW {db}.holder_usage_daily AS
SELECT
    day,
    tenant,
    holder,
    sum(requests) AS requests,
    sum(allows) AS allows,
    sum(denies) AS denies,
    uniqExact(token_id) AS distinct_tokens,
    uniqExactMerge(source_ips) AS distinct_ips,
    uniqExactIfMerge(scopes) AS distinct_scopes
FROM {db}.token_usage_daily_counts
GROUP BY day, tenant, holder;
