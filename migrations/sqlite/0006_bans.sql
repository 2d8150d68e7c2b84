-- Bans the operator set through the admin API (issue 12): of a person (their session's person id) or
-- of a name (its `name_key`), from one room or (`room` NULL) from the whole server.
CREATE TABLE bans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id INTEGER,
    name_key TEXT,
    name TEXT NOT NULL,
    room TEXT,
    reason TEXT NOT NULL,
    ts INTEGER NOT NULL
) STRICT;
