-- As migrations/sqlite/0006_bans.sql: the operator's bans, of a person or a name, from a room or the
-- whole server.
CREATE TABLE bans (
    id BIGSERIAL PRIMARY KEY,
    person_id BIGINT,
    name_key TEXT COLLATE "C",
    name TEXT NOT NULL,
    room TEXT COLLATE "C",
    reason TEXT NOT NULL,
    ts BIGINT NOT NULL
);
