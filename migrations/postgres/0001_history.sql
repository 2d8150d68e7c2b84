-- The history schema of migrations/sqlite/0001_history.sql, on PostgreSQL. Names are `COLLATE "C"`:
-- ordered and compared byte by byte, as SQLite does, whatever the database's locale.

-- Rooms that have ever stored a message. `last_seq` is the highest sequence number the room has given,
-- kept here (not derived from `messages`) so that retention can delete old messages without a later
-- message ever reusing a number. A room's row is also its writers' lock: every transaction that stores
-- messages in a room updates this row first, so writers on several nodes take turns per room.
CREATE TABLE rooms (
    name TEXT COLLATE "C" PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every accepted message. `seq` counts 1, 2, 3… per room with no gaps; `author_id` is the sender's
-- person id (its session), which scopes `client_id`, the sender's own id for idempotent resends.
CREATE TABLE messages (
    room TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    author_id BIGINT NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    ts BIGINT NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room, seq)
);

CREATE UNIQUE INDEX messages_by_client_id ON messages (room, author_id, client_id)
    WHERE client_id IS NOT NULL;

-- Age-based retention deletes by time.
CREATE INDEX messages_by_ts ON messages (ts);
