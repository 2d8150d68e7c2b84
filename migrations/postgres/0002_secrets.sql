-- Secrets every node must share, by name. `session_key`: the 32-byte key session tokens are signed
-- with, created by the first node to start (`INSERT … ON CONFLICT DO NOTHING`, then read back, so two
-- nodes starting at once agree) and replaced by `--rotate-session-key`. (On SQLite, one node's own
-- store, the key stays in the data directory.)
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
