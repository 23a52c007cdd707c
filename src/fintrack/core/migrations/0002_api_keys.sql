-- API keys issued at run time (`POST /admin/keys`, `fintrack keys add`). Keys configured in
-- FINTRACK_API_KEYS still work; these come on top. Only the SHA-256 digest of a secret is
-- kept: the secret is shown once, when the key is created. A key's `name` is the client id
-- its transactions belong to, so two keys with one name (old and new) make a rotation.
CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    digest      text        NOT NULL UNIQUE CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL DEFAULT '',
    revoked_at  timestamptz
);
-- The api loads the active keys whenever the version counter in Redis moves.
CREATE INDEX api_keys_active ON api_keys (created_at) WHERE revoked_at IS NULL;
