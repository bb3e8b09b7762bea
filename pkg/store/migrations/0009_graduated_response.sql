-- The graduated response (issue 13): token_ledger records each step taken
-- on a token between an alert and a revocation, events.TokenRestricted
-- (type 'restricted': a quarantine, a step-up, or a shadow step that only
-- says what a rule would have done) and events.TokenReleased (type
-- 'released': a restriction lifted by command before its end).
--
-- Adding values at the end of an Enum8 changes only the table's metadata:
-- no part is rewritten, and setting the same type again changes nothing.
ALTER TABLE {db}.token_ledger_raw
    MODIFY COLUMN type Enum8('issued' = 1, 'rotated' = 2, 'revoked' = 3, 'expired' = 4, 'restricted' = 5, 'released' = 6);

-- The columns of a step the table had no place for. The others are
-- reused with their meaning: kid, actor, reason and anomaly_id as for a
-- revocation, exp the token's expiry, scopes the scopes a quarantined
-- token keeps (its read scopes), networks the networks it may still come
-- from (CIDRs).
--
--   step   narrow, step_up or shadow for 'restricted', the step lifted
--          (narrow or step_up) for 'released'
--   would  for a shadow step, the step the rule would have taken
--          (narrow, step_up or revoke)
--   until  when a narrow or step-up restriction ends
--   rule   the response rule that chose an automatic step
--   risk   the risk score of the anomaly behind an automatic step
-- Empty ('', NULL, 0) for other event types and for rows written before
-- these columns existed.
ALTER TABLE {db}.token_ledger_raw
    ADD COLUMN IF NOT EXISTS step LowCardinality(String) DEFAULT '' AFTER requested_client,
    ADD COLUMN IF NOT EXISTS would LowCardinality(String) DEFAULT '' AFTER step,
    ADD COLUMN IF NOT EXISTS until Nullable(DateTime64(6, 'UTC')) AFTER would,
    ADD COLUMN IF NOT EXISTS rule String DEFAULT '' AFTER until,
    ADD COLUMN IF NOT EXISTS risk Float32 DEFAULT 0 AFTER rule;

-- A view's columns (and their types: the Enum8 above) are fixed when it
-- is created: create it again.
CREATE OR REPLACE VIEW {db}.token_ledger AS
SELECT * FROM {db}.token_ledger_raw FINAL;
