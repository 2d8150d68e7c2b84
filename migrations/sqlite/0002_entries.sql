-- A room's log holds changes as well as messages (issue 12): an edit or a delete is an entry of its own,
-- with its own `seq`, so a client catching up with `after` replays it in order. The message it changes
-- (`target`) is updated in the same transaction, so history pages give messages as they are now.
-- `kind`: 'message', 'edit' or 'delete'. A reply keeps the start of what it answers (`reply_*`),
-- emptied if that message is deleted.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
ALTER TABLE messages ADD COLUMN target INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN reply_from TEXT;
ALTER TABLE messages ADD COLUMN reply_text TEXT;
ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;

-- A delete empties the quotes of the message it deletes.
CREATE INDEX messages_by_reply ON messages (room, reply_to) WHERE reply_to IS NOT NULL;
