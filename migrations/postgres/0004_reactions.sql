-- As migrations/sqlite/0003_reactions.sql: reactions as they are now, one row per message, emoji and
-- person; retention deletes them with their message.
CREATE TABLE reactions (
    room TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    emoji TEXT NOT NULL,
    person_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (room, seq, emoji, person_id),
    FOREIGN KEY (room, seq) REFERENCES messages (room, seq) ON DELETE CASCADE
);
