-- The events archive keeps what a feed replays: the stream id, the kind, the transaction
-- and the event's JSON byte for byte. Who, what and why are in `transactions` and
-- `rule_hits`; a replay reads its filter values from the JSON, as the live feed does.
-- Copying the filter columns meant decoding every event in the worker: ~15 % of its CPU.
-- Expand first: workers of this release leave these columns NULL, workers of the previous
-- one still fill them during a rolling deploy; a later release drops them.
ALTER TABLE security_events
    ALTER COLUMN user_id DROP NOT NULL,
    ALTER COLUMN status DROP NOT NULL,
    ALTER COLUMN severity DROP NOT NULL,
    ALTER COLUMN rules DROP NOT NULL;
COMMENT ON COLUMN security_events.user_id IS 'unused since migration 0003; to be dropped';
COMMENT ON COLUMN security_events.status IS 'unused since migration 0003; to be dropped';
COMMENT ON COLUMN security_events.severity IS 'unused since migration 0003; to be dropped';
COMMENT ON COLUMN security_events.rules IS 'unused since migration 0003; to be dropped';
