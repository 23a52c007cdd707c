-- The events archive keeps what a feed replays: the stream id, the kind, the transaction
-- and the event's JSON byte for byte. Who, what and why are in `transactions` and
-- `rule_hits`; a replay reads its filter values from the JSON, as the live feed does.
-- Copying the filter columns meant decoding every event in the worker: ~15 % of its CPU.
ALTER TABLE security_events
    DROP COLUMN user_id,
    DROP COLUMN status,
    DROP COLUMN severity,
    DROP COLUMN rules;
