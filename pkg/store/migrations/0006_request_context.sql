-- The context of a request and of an issuance (issue 9).
--
-- usage_events: resource is the concrete resource the request named (the
-- values of the matched route's path parameters joined by '/', "42" for
-- GET /invoices/{id} on /invoices/42, see events.UsageDecided.Resource), client
-- the caller's user agent normalised to family and major version
-- ("curl/8", "Chrome/124"), device the lowercase hex SHA-256 thumbprint of
-- the TLS client certificate the request presented. All three are empty
-- when unknown, and on the rows written before these columns existed.
ALTER TABLE {db}.usage_events_raw
    ADD COLUMN IF NOT EXISTS resource String DEFAULT '' AFTER count,
    ADD COLUMN IF NOT EXISTS client LowCardinality(String) DEFAULT '' AFTER resource,
    ADD COLUMN IF NOT EXISTS device String DEFAULT '' AFTER client;

-- A view's columns are fixed when it is created: create it again.
CREATE OR REPLACE VIEW {db}.usage_events AS
SELECT * FROM {db}.usage_events_raw FINAL;

-- token_ledger: where an issued token was requested from
-- (events.TokenIssued.Requested): the address of the API call and its
-- normalised client. Empty for other event types, for tokens issued by a
-- NATS command (whose sender the issuer cannot see) and for rows written
-- before these columns existed.
ALTER TABLE {db}.token_ledger_raw
    ADD COLUMN IF NOT EXISTS requested_ip String DEFAULT '' AFTER anomaly_id,
    ADD COLUMN IF NOT EXISTS requested_client LowCardinality(String) DEFAULT '' AFTER requested_ip;

CREATE OR REPLACE VIEW {db}.token_ledger AS
SELECT * FROM {db}.token_ledger_raw FINAL;
