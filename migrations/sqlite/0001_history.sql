-- Rooms that have ever stored a message. `last_seq` is the highest sequence number the room has given,
-- kept here (not derived from `messages`) so that retention can delete old messages without a later
-- message ever reusing a number.
CREATE TABLE rooms (
    name TEXT PRIMARY KEY NOT NULL,
    last_seq INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Every accepted message. `seq` counts 1, 2, 3… per room with no gaps; `author_id` is the sender's
-- person id (its session), which scopes `client_id`, the sender's own id for idempotent resends.
CREATE TABLE messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    ts INTEGER NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room, seq)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX messages_by_client_id ON messages (room, author_id, client_id)
    WHERE client_id IS NOT NULL;

-- Age-based retention deletes by time.
CREATE INDEX messages_by_ts ON messages (ts);
