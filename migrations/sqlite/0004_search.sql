-- Full-text search of the history (issue 12): an FTS5 index over the text of every message that is
-- still there, kept in step with `messages` by triggers, so whatever stores, edits, deletes or prunes a
-- message changes what search finds in the same transaction.
--
-- Only messages are indexed (`kind = 'message'`), and only while not deleted: an edit or delete entry
-- (whose `text` is the new text) is never a result, an edited message is found by its new text only,
-- and a deleted one (its text emptied) not at all.
--
-- `messages` is a WITHOUT ROWID table, and FTS5 keys its rows by an integer: `message_search_ids` gives
-- each indexed message one. The index keeps no copy of the text: it is an external-content table over
-- the view `message_search_content`, which reads the text from `messages` through that id (both lookups
-- by primary key), for highlight() and for rebuilds.
CREATE TABLE message_search_ids (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    UNIQUE (room, seq)
) STRICT;

CREATE VIEW message_search_content AS
    SELECT i.id AS id, m.text AS text
    FROM message_search_ids AS i JOIN messages AS m ON m.room = i.room AND m.seq = i.seq;

-- unicode61: words are runs of letters and digits, compared without case and diacritics.
CREATE VIRTUAL TABLE message_search USING fts5(
    text,
    content = 'message_search_content',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- An external-content index is told what to forget with the values it indexed: the 'delete' command
-- with the old text.
CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN new.kind = 'message' AND new.deleted = 0
BEGIN
    INSERT INTO message_search_ids (room, seq) VALUES (new.room, new.seq);
    INSERT INTO message_search (rowid, text)
        SELECT id, new.text FROM message_search_ids WHERE room = new.room AND seq = new.seq;
END;

CREATE TRIGGER message_search_update AFTER UPDATE OF text, kind, deleted ON messages
BEGIN
    INSERT INTO message_search (message_search, rowid, text)
        SELECT 'delete', id, old.text FROM message_search_ids WHERE room = old.room AND seq = old.seq;
    DELETE FROM message_search_ids WHERE room = old.room AND seq = old.seq;
    INSERT INTO message_search_ids (room, seq)
        SELECT new.room, new.seq WHERE new.kind = 'message' AND new.deleted = 0;
    INSERT INTO message_search (rowid, text)
        SELECT id, new.text FROM message_search_ids WHERE room = new.room AND seq = new.seq;
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages
BEGIN
    INSERT INTO message_search (message_search, rowid, text)
        SELECT 'delete', id, old.text FROM message_search_ids WHERE room = old.room AND seq = old.seq;
    DELETE FROM message_search_ids WHERE room = old.room AND seq = old.seq;
END;

-- The history stored before this migration: every message still there gets its id (oldest first),
-- and the index is built from them.
INSERT INTO message_search_ids (room, seq)
    SELECT room, seq FROM messages WHERE kind = 'message' AND deleted = 0 ORDER BY ts, room, seq;
INSERT INTO message_search (message_search) VALUES ('rebuild');
