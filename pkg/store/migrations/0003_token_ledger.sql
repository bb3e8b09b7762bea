-- The token ledger: issued, rotated, revoked and expired events, one row
-- each. Columns a type does not carry are empty ('' / [] / NULL / 0).
-- Ledger events are few, so partitions are monthly rather than daily (daily
-- partitions would only make many tiny parts). The view token_ledger reads
-- FINAL so a re-delivered event appears once.
CREATE TABLE IF NOT EXISTS {db}.token_ledger_raw
(
    event_id     UUID,
    time         DateTime64(6, 'UTC'),
    type         Enum8('issued' = 1, 'rotated' = 2, 'revoked' = 3, 'expired' = 4),
    token_id     String,
    tenant       LowCardinality(String),
    holder       LowCardinality(String),
    kid          LowCardinality(String),
    scopes       Array(LowCardinality(String)),
    audience     Array(LowCardinality(String)),
    networks     Array(String),
    environment  LowCardinality(String),
    windows      String,
    device       String,
    nbf          Nullable(DateTime64(6, 'UTC')),
    exp          Nullable(DateTime64(6, 'UTC')),
    grace_until  Nullable(DateTime64(6, 'UTC')),
    actor        LowCardinality(String),
    reason       String,
    kind         LowCardinality(String),
    successor_id String,
    rotated_from String,
    break_glass  Bool,
    anomaly_id   String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, token_id, time, event_id);

CREATE VIEW IF NOT EXISTS {db}.token_ledger AS
SELECT * FROM {db}.token_ledger_raw FINAL;
