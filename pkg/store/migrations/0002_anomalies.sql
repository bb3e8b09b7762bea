-- Anomalies found by the auditor's detectors (events.AnomalyDetected).
-- time is when the anomaly was detected (the envelope time), event_id and
-- event_time name the usage event that triggered it. Re-deliveries of the
-- same anomaly collapse on (tenant, token_id, time, anomaly_id), and the view
-- anomalies reads FINAL.
CREATE TABLE IF NOT EXISTS {db}.anomalies_raw
(
    anomaly_id        String,
    time              DateTime64(6, 'UTC'),
    detector          LowCardinality(String),
    severity          Enum8('low' = 0, 'medium' = 1, 'high' = 2, 'critical' = 3),
    token_id          String,
    tenant            LowCardinality(String),
    holder            LowCardinality(String),
    event_id          String,
    event_time        DateTime64(6, 'UTC'),
    source_ip         String,
    evidence_seen     String,
    evidence_baseline String,
    evidence_details  Map(String, String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (tenant, token_id, time, anomaly_id);

CREATE VIEW IF NOT EXISTS {db}.anomalies AS
SELECT * FROM {db}.anomalies_raw FINAL;
