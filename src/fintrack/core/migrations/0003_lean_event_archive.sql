-- The events archive keeps what a feed replays: the stream id, the kind, the transaction
-- and the event's JSON byte for byte. Who, what and why are in `transactions` and
-- `rule_hits`; a replay reads its filter values from the JSON, as the live feed does.
-- Copying the filter columns meant decoding every event in the worker: ~15 % of its CPU.
-- Expand first: workers of this release leave these columns to their (empty) defaults,
-- workers of the previous one still fill them during a rolling deploy, and a notifier of
-- the previous release replaying a new row reads empty values (a filtered feed skips the
-- row) instead of failing on NULL. A later release drops them.
ALTER TABLE security_events
    ALTER COLUMN user_id SET DEFAULT '',
    ALTER COLUMN status SET DEFAULT '',
    ALTER COLUMN severity SET DEFAULT '',
    ALTER COLUMN rules SET DEFAULT '{}';
COMMENT ON COLUMN security_events.user_id IS 'unused since migration 0003; to be dropped';
COMMENT ON COLUMN security_events.status IS 'unused since migration 0003; to be dropped';
COMMENT ON COLUMN security_events.severity IS 'unused since migration 0003; to be dropped';
COMMENT ON COLUMN security_events.rules IS 'unused since migration 0003; to be dropped';
