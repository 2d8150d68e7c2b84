-- Full-text search of the history (issue 12), as migrations/sqlite/0004_search.sql does it on SQLite:
-- only messages (`kind = 'message'`) that are not deleted are found, an edited one by its new text.
--
-- An expression index rather than a stored column: PostgreSQL keeps it in step with every insert,
-- update and delete itself (no trigger), building it indexes the history already stored (an upgrade
-- finds everything), and the table is not rewritten. Queries must say exactly
-- `to_tsvector('simple', text)` and the same `WHERE` for it to be used. 'simple': words are lower-cased,
-- never stemmed and no word is dropped as a stop word, whatever language people write in.
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', text))
    WHERE kind = 'message' AND NOT deleted;
