-- Transactions with their final decision. One row per txn_id, written once by a worker.
CREATE TABLE transactions (
    txn_id          uuid        PRIMARY KEY,
    client_id       text        NOT NULL,
    user_id         text        NOT NULL,
    amount          numeric     NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    merchant_type   text        NOT NULL,
    source_ip       inet        NOT NULL,
    status          text        NOT NULL
                    CHECK (status IN ('APPROVED', 'FLAGGED', 'BLOCKED', 'FAILED')),
    risk_score      integer     NOT NULL,
    received_at     timestamptz NOT NULL,
    decided_at      timestamptz NOT NULL,
    failure_reason  text
);
-- History export and the dashboard filter by time, status and user.
CREATE INDEX transactions_received_at ON transactions (received_at);
CREATE INDEX transactions_user_received ON transactions (user_id, received_at);
CREATE INDEX transactions_status_received ON transactions (status, received_at)
    WHERE status <> 'APPROVED';

-- Why each decision was made: one row per rule that fired.
CREATE TABLE rule_hits (
    txn_id  uuid    NOT NULL REFERENCES transactions (txn_id) ON DELETE CASCADE,
    rule    text    NOT NULL,
    score   integer NOT NULL,
    reason  text    NOT NULL,
    PRIMARY KEY (txn_id, rule)
);

-- Every security event ever published, keyed by its events-stream entry id (ms, seq),
-- so SSE clients resume from PostgreSQL with the same ids once Redis has trimmed them.
CREATE TABLE security_events (
    id_ms     bigint      NOT NULL,
    id_seq    bigint      NOT NULL,
    kind      text        NOT NULL,
    txn_id    uuid        NOT NULL,
    user_id   text        NOT NULL,
    status    text        NOT NULL,
    severity  text        NOT NULL,
    rules     text[]      NOT NULL,
    data      text        NOT NULL,  -- the exact JSON sent as the SSE data: line
    PRIMARY KEY (id_ms, id_seq)
);
CREATE INDEX security_events_txn ON security_events (txn_id);

-- Blocked source addresses and ranges. Workers reload it when the version in Redis moves.
CREATE TABLE ip_blocklist (
    network   cidr        PRIMARY KEY,
    reason    text        NOT NULL DEFAULT '',
    added_by  text        NOT NULL DEFAULT '',
    added_at  timestamptz NOT NULL DEFAULT now()
);

-- Who did what: every admin action and every failed authentication.
CREATE TABLE audit_log (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,
    action    text        NOT NULL,
    target    text        NOT NULL DEFAULT '',
    remote    text        NOT NULL DEFAULT '',
    outcome   text        NOT NULL
);
