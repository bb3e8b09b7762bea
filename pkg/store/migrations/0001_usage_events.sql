-- Usage events: one row per enforcement decision (events.UsageDecided).
--
-- Exactly once: the auditor may write the same event again after a crash,
-- in another batch. ReplacingMergeTree collapses rows with the same sorting
-- key, and every copy of an event has the same (tenant, token_id, time,
-- event_id), so the analyst-facing view usage_events reads FINAL and sees
-- each event once, whether or not the background merge has happened yet.
CREATE TABLE IF NOT EXISTS {db}.usage_events_raw
(
    event_id   UUID,
    time       DateTime64(6, 'UTC'),
    token_id   String,
    tenant     LowCardinality(String),
    holder     LowCardinality(String),
    kid        LowCardinality(String),
    enforcer   LowCardinality(String),
    service    LowCardinality(String),
    source_ip  String,
    user_agent LowCardinality(String),
    method     LowCardinality(String),
    route      LowCardinality(String),
    scope      LowCardinality(String),
    decision   Enum8('allow' = 1, 'deny' = 2),
    reason     LowCardinality(String),
    latency_ns UInt64,
    INDEX source_ip_bf source_ip TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (tenant, token_id, time, event_id);

CREATE VIEW IF NOT EXISTS {db}.usage_events AS
SELECT * FROM {db}.usage_events_raw FINAL;
