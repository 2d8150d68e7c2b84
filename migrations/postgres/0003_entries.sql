-- As migrations/sqlite/0002_entries.sql: edits and deletes are entries of a room's log with their own
-- `seq`; the message they change (`target`) is updated in the same transaction; a reply keeps the start
-- of what it answers.
ALTER TABLE messages
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'message',
    ADD COLUMN target BIGINT,
    ADD COLUMN reply_to BIGINT,
    ADD COLUMN reply_from TEXT,
    ADD COLUMN reply_text TEXT,
    ADD COLUMN edited BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX messages_by_reply ON messages (room, reply_to) WHERE reply_to IS NOT NULL;
