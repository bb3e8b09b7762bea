-- Daily rollups per token and per holder, kept up to date by materialized
-- views on every insert into usage_events_raw.
--
-- Exactly once: a materialized view sees every inserted block, duplicates
-- included, so the rollups store sets, not counters: requests, allows and
-- denies are uniqExact states over event_id, which absorb a re-inserted
-- event however it is batched. Read them through the views
-- token_usage_daily and holder_usage_daily, which merge the states.
CREATE TABLE IF NOT EXISTS {db}.token_usage_daily_state
(
    day        Date,
    tenant     LowCardinality(String),
    token_id   String,
    holder     LowCardinality(String),
    requests   AggregateFunction(uniqExact, UUID),
    allows     AggregateFunction(uniqExactIf, UUID, UInt8),
    denies     AggregateFunction(uniqExactIf, UUID, UInt8),
    source_ips AggregateFunction(uniqExact, String),
    scopes     AggregateFunction(uniqExactIf, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, token_id, day, holder);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.token_usage_daily_mv TO {db}.token_usage_daily_state AS
SELECT
    toDate(time) AS day,
    tenant,
    token_id,
    holder,
    uniqExactState(event_id) AS requests,
    uniqExactIfState(event_id, decision = 'allow') AS allows,
    uniqExactIfState(event_id, decision = 'deny') AS denies,
    uniqExactState(source_ip) AS source_ips,
    uniqExactIfState(toString(scope), scope != '') AS scopes
FROM {db}.usage_events_raw
GROUP BY day, tenant, token_id, holder;

CREATE VIEW IF NOT EXISTS {db}.token_usage_daily AS
SELECT
    day,
    tenant,
    token_id,
    holder,
    uniqExactMerge(requests) AS requests,
    uniqExactIfMerge(allows) AS allows,
    uniqExactIfMerge(denies) AS denies,
    uniqExactMerge(source_ips) AS distinct_ips,
    uniqExactIfMerge(scopes) AS distinct_scopes
FROM {db}.token_usage_daily_state
GROUP BY day, tenant, token_id, holder;

CREATE TABLE IF NOT EXISTS {db}.holder_usage_daily_state
(
    day        Date,
    tenant     LowCardinality(String),
    holder     LowCardinality(String),
    requests   AggregateFunction(uniqExact, UUID),
    allows     AggregateFunction(uniqExactIf, UUID, UInt8),
    denies     AggregateFunction(uniqExactIf, UUID, UInt8),
    tokens     AggregateFunction(uniqExact, String),
    source_ips AggregateFunction(uniqExact, String),
    scopes     AggregateFunction(uniqExactIf, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, holder, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.holder_usage_daily_mv TO {db}.holder_usage_daily_state AS
SELECT
    toDate(time) AS day,
    tenant,
    holder,
    uniqExactState(event_id) AS requests,
    uniqExactIfState(event_id, decision = 'allow') AS allows,
    uniqExactIfState(event_id, decision = 'deny') AS denies,
    uniqExactState(token_id) AS tokens,
    uniqExactState(source_ip) AS source_ips,
    uniqExactIfState(toString(scope), scope != '') AS scopes
FROM {db}.usage_events_raw
GROUP BY day, tenant, holder;

CREATE VIEW IF NOT EXISTS {db}.holder_usage_daily AS
SELECT
    day,
    tenant,
    holder,
    uniqExactMerge(requests) AS requests,
    uniqExactIfMerge(allows) AS allows,
    uniqExactIfMerge(denies) AS denies,
    uniqExactMerge(tokens) AS distinct_tokens,
    uniqExactMerge(source_ips) AS distinct_ips,
    uniqExactIfMerge(scopes) AS distinct_scopes
FROM {db}.holder_usage_daily_state
GROUP BY day, tenant, holder;
