-- Usage events that stand for several decisions (events.UsageDecided.Count).
-- An enforcer folds the denials that name no token (no token, an unreadable
-- one, a throttled source) from one source into one event per short
-- interval, so a flood of token-less requests is a few rows, not one row a
-- request. count is how many decisions the row stands for: 1 for every
-- other row, the rows written before this column included. Count requests
-- with sum(count), events with count().
ALTER TABLE {db}.usage_events_raw ADD COLUMN IF NOT EXISTS count UInt32 DEFAULT 1 AFTER latency_ns;

-- A view's columns are fixed when it is created: create it again to show
-- the new column (atomic, and idempotent like IF NOT EXISTS).
CREATE OR REPLACE VIEW {db}.usage_events AS
SELECT * FROM {db}.usage_events_raw FINAL;
