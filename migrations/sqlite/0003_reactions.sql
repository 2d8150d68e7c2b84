-- Reactions as they are now: one row per message, emoji and person (a person counts once, whatever
-- their number of tabs). Each toggle is also an entry of the room's log ('react' or 'unreact', see
-- 0002), which is what replays carry; this table is what pages and snapshots read.
CREATE TABLE reactions (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    emoji TEXT NOT NULL,
    person_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (room, seq, emoji, person_id)
) STRICT, WITHOUT ROWID;

-- Retention deletes a message's reactions with it.
CREATE TRIGGER reactions_go_with_their_message AFTER DELETE ON messages
BEGIN
    DELETE FROM reactions WHERE room = old.room AND seq = old.seq;
END;
