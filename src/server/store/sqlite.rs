//! The store on SQLite: one node's history in an embedded file (`<data-dir>/chat.db` by default).
//!
//! - **Durability**: WAL journal with `synchronous = FULL`: a commit returns once the WAL is on disk, so
//!   a `kill -9` (or a power cut) loses nothing that was acknowledged.
//! - **Writers**: only the history writer (`append`) and retention (`prune`) write, and they take turns
//!   (see `SqliteStore::write_turn`).
//! - **Migrations**: `migrations/sqlite/`. They lived in `migrations/` until PostgreSQL got a set of its
//!   own; moving a file changes nothing sqlx checks (the version and the SQL's checksum, embedded here by
//!   hand), which `tests.rs` checks against a database laid out before the move.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Connection;

use super::search::FoundRow;
use super::{
    clamp, entry_columns, kind_name, message, EmbeddedMigrations, MigrationList, Named, NewMessage,
    PageWithin, PersonId, Plan, PruneReport, Pruned, Refusal, Row, SearchWithin, Stored,
};
use super::{Ban, BanRow};
use crate::protocol::{ChatMessage, EntryKind, MAX_REACTION_KINDS, MAX_UNREAD};

/// The schema, oldest first.
pub(super) const MIGRATIONS: MigrationList = &[
    (
        1,
        "history",
        include_str!("../../../migrations/sqlite/0001_history.sql"),
    ),
    (
        2,
        "entries",
        include_str!("../../../migrations/sqlite/0002_entries.sql"),
    ),
    (
        3,
        "reactions",
        include_str!("../../../migrations/sqlite/0003_reactions.sql"),
    ),
    (
        4,
        "search",
        include_str!("../../../migrations/sqlite/0004_search.sql"),
    ),
    (
        5,
        "read_positions",
        include_str!("../../../migrations/sqlite/0005_read_positions.sql"),
    ),
    (
        6,
        "bans",
        include_str!("../../../migrations/sqlite/0006_bans.sql"),
    ),
];

#[derive(Clone, Debug)]
pub(super) struct SqliteStore {
    pool: SqlitePool,
    /// How `pool` connects: retention opens its own connection with them.
    options: SqliteConnectOptions,
    /// Held by whoever writes, for a whole transaction: the history writer (`append`), one retention
    /// batch (`prune`), or one of the small writes beside them (read positions, bans): every write. SQLite allows one writer at a time anyway; taking turns here first does two
    /// things its own lock cannot. The writer's transaction begins deferred (a read, then writes): had
    /// retention committed between that read and the first write, SQLite would refuse the upgrade at once
    /// (`SQLITE_BUSY`, a stale snapshot; the busy timeout does not apply) and the whole batch would be
    /// refused. And a writer kept waiting by SQLite sleeps in growing steps (up to 100 ms) before it
    /// retries, where a tokio `Mutex` is fair (first come, first served) and hands the turn over the
    /// moment a batch commits: the writer and retention alternate, a batch each.
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating it and `dir` if needed) `dir/chat.db`.
    pub(super) async fn open_dir(dir: &Path) -> anyhow::Result<SqliteStore> {
        std::fs::create_dir_all(dir)?;
        Self::open(SqliteConnectOptions::from_str("sqlite:")?.filename(dir.join("chat.db"))).await
    }

    /// Opens (creating it if needed) the file a `sqlite:` URL names.
    pub(super) async fn open_url(url: &str) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?;
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        Self::open(options).await
    }

    async fn open(options: SqliteConnectOptions) -> anyhow::Result<SqliteStore> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // A few connections: WAL lets readers (history pages, joins) run beside the one writer.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        Migrator::new(EmbeddedMigrations(MIGRATIONS))
            .await?
            .run(&pool)
            .await?;
        Ok(SqliteStore {
            pool,
            options,
            write_turn: Arc::default(),
        })
    }

    /// The one connection pool (tests reach past the interface with it).
    #[cfg(test)]
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn append<M: Borrow<NewMessage>>(
        &self,
        batch: &[M],
    ) -> Result<Vec<Stored>, sqlx::Error> {
        let _turn = self.write_turn.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut outcome = Vec::with_capacity(batch.len());
        for new in batch.iter().map(Borrow::borrow) {
            if let Some(client_id) = &new.client_id {
                let earlier: Option<(i64,)> = sqlx::query_as(
                    "SELECT seq FROM messages WHERE room = ? AND author_id = ? AND client_id = ?",
                )
                .bind(&new.room)
                .bind(new.author_id as i64)
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((seq,)) = earlier {
                    outcome.push(Stored::Duplicate { seq: seq as u64 });
                    continue;
                }
            }
            // An entry naming a message (a reply, an edit, a delete) is checked against the message
            // as committed, and as the batch's earlier entries left it (same transaction).
            let named = match new.target {
                Some(target) => sqlx::query_as::<_, (i64, String, String, bool)>(
                    "SELECT author_id, author, text, deleted FROM messages \
                     WHERE room = ? AND seq = ? AND kind = 'message'",
                )
                .bind(&new.room)
                .bind(clamp(target))
                .fetch_optional(&mut *tx)
                .await?
                .map(|(author_id, from, text, deleted)| Named {
                    author_id: author_id as PersonId,
                    from,
                    text,
                    deleted,
                }),
                None => None,
            };
            let quote = match Named::check(named.as_ref(), new) {
                Ok(quote) => quote,
                Err(refusal) => {
                    outcome.push(Stored::Refused(refusal));
                    continue;
                }
            };
            // A reaction toggles: the entry says which way it went.
            let mut kind = new.kind;
            if let (EntryKind::React, Some(target)) = (new.kind, new.target) {
                match toggle_reaction(&mut tx, new, clamp(target)).await? {
                    Ok(toggled) => kind = toggled,
                    Err(refusal) => {
                        outcome.push(Stored::Refused(refusal));
                        continue;
                    }
                }
            }
            let (seq,): (i64,) = sqlx::query_as(
                "INSERT INTO rooms (name, last_seq, created_at) VALUES (?, 1, ?) \
                 ON CONFLICT (name) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
            )
            .bind(&new.room)
            .bind(new.ts as i64)
            .fetch_one(&mut *tx)
            .await?;
            let mut stored = new.stored_as(seq as u64, quote);
            stored.kind = kind;
            sqlx::query(
                "INSERT INTO messages (room, seq, author_id, author, text, ts, client_id, kind, \
                   target, reply_to, reply_from, reply_text) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.room)
            .bind(seq)
            .bind(new.author_id as i64)
            .bind(&new.author)
            .bind(&new.text)
            .bind(new.ts as i64)
            .bind(&new.client_id)
            .bind(kind_name(stored.kind))
            .bind(stored.target.map(clamp))
            .bind(stored.reply_to.as_ref().map(|q| clamp(q.seq)))
            .bind(stored.reply_to.as_ref().map(|q| q.from.as_str()))
            .bind(stored.reply_to.as_ref().map(|q| q.text.as_str()))
            .execute(&mut *tx)
            .await?;
            if let Some(target) = stored.target {
                change_message(&mut tx, &new.room, clamp(target), new.kind, &new.text).await?;
            }
            outcome.push(Stored::New(stored));
        }
        tx.commit().await?;
        Ok(outcome)
    }

    pub(super) async fn set_read(
        &self,
        person: i64,
        room: &str,
        seq: i64,
        ts: i64,
    ) -> Result<(), sqlx::Error> {
        // Every write takes the writers' turn (see `write_turn`).
        let _turn = self.write_turn.lock().await;
        sqlx::query(
            "INSERT INTO read_positions (person_id, room, seq, ts) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (person_id, room) DO UPDATE SET seq = MAX(seq, excluded.seq), \
               ts = excluded.ts",
        )
        .bind(person)
        .bind(room)
        .bind(seq)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A person's read positions, the rooms read last first, each with the messages after it
    /// (counted up to `MAX_UNREAD`).
    pub(super) async fn read_positions(
        &self,
        person: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.room, r.seq, (SELECT COUNT(*) FROM ( \
               SELECT 1 FROM messages m WHERE m.room = r.room AND m.seq > r.seq \
                 AND m.author_id <> r.person_id \
                 AND m.kind = 'message' AND m.deleted = 0 LIMIT ?3)) \
             FROM read_positions r WHERE r.person_id = ?1 ORDER BY r.ts DESC LIMIT ?2",
        )
        .bind(person)
        .bind(limit)
        .bind(MAX_UNREAD as i64)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn add_ban(&self, ban: &Ban) -> Result<i64, sqlx::Error> {
        // Every write takes the writers' turn (see `write_turn`).
        let _turn = self.write_turn.lock().await;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO bans (person_id, name_key, name, room, reason, ts) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(ban.person.map(|p| p as i64))
        .bind(&ban.name_key)
        .bind(&ban.name)
        .bind(&ban.room)
        .bind(&ban.reason)
        .bind(ban.ts as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub(super) async fn remove_ban(&self, id: i64) -> Result<bool, sqlx::Error> {
        // Every write takes the writers' turn (see `write_turn`).
        let _turn = self.write_turn.lock().await;
        let done = sqlx::query("DELETE FROM bans WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn bans(&self) -> Result<Vec<BanRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, person_id, name_key, name, room, reason, ts FROM bans ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// The person who last wrote as `name` (any case), if anyone did.
    pub(super) async fn last_author(&self, name: &str) -> Result<Option<i64>, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT author_id FROM messages WHERE lower(author) = lower(?) \
             ORDER BY ts DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// The reactions to `room`'s messages `first..=last`: (seq, emoji, name), in the order they came.
    pub(super) async fn reactions(
        &self,
        room: &str,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, emoji, name FROM reactions WHERE room = ? AND seq BETWEEN ? AND ? \
             ORDER BY seq, ts, person_id",
        )
        .bind(room)
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn after(
        &self,
        room: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM messages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(room)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    /// Newest first.
    pub(super) async fn before(
        &self,
        room: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM messages WHERE room = ? AND seq < ? AND kind = 'message' \
                  ORDER BY seq DESC LIMIT ?"
        ))
        .bind(room)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    /// One byte-bounded page (`before_within`, `after_within`): `sql` binds the room, the `seq` to
    /// start from, the limit, the bytes counted per message beside its text, and the budget.
    async fn page_within(
        &self,
        sql: &'static str,
        room: &str,
        page: PageWithin,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(sql)
            .bind(room)
            .bind(page.before)
            .bind(page.limit)
            .bind(page.per_message)
            .bind(page.max_bytes)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    /// Newest first.
    pub(super) async fn before_within(
        &self,
        room: &str,
        page: PageWithin,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        // Innermost: the `limit` newest before `before` (the index on (room, seq) walks them); then a
        // running total of their sizes, newest first; kept while it stays within the budget.
        self.page_within(
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM ( \
                   SELECT *, SUM(size) OVER (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) AS running \
                   FROM ( \
                     SELECT *, length(CAST(text AS BLOB)) + length(CAST(author AS BLOB)) \
                              + IFNULL(length(CAST(client_id AS BLOB)), 0) \
                              + IFNULL(length(CAST(reply_text AS BLOB)), 0) + ?4 AS size \
                     FROM messages WHERE room = ?1 AND seq < ?2 AND kind = 'message' ORDER BY seq DESC LIMIT ?3 \
                   ) \
                 ) WHERE running <= ?5 OR running = size ORDER BY seq DESC"
            ),
            room,
            page,
        )
        .await
    }

    pub(super) async fn after_within(
        &self,
        room: &str,
        page: PageWithin,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        // As `before_within`, the other way: the `limit` oldest after `after`, oldest first, while
        // their running total stays within the budget.
        self.page_within(
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM ( \
                   SELECT *, SUM(size) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running \
                   FROM ( \
                     SELECT *, length(CAST(text AS BLOB)) + length(CAST(author AS BLOB)) \
                              + IFNULL(length(CAST(client_id AS BLOB)), 0) \
                              + IFNULL(length(CAST(reply_text AS BLOB)), 0) + ?4 AS size \
                     FROM messages WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3 \
                   ) \
                 ) WHERE running <= ?5 OR running = size ORDER BY seq"
            ),
            room,
            page,
        )
        .await
    }

    /// Newest first. `query` is an FTS5 query (`SearchQuery::fts5`).
    pub(super) async fn search(
        &self,
        query: &str,
        page: SearchWithin<'_>,
    ) -> Result<Vec<FoundRow>, sqlx::Error> {
        // Innermost: the index's matches (each message's row through its id), the `limit` newest,
        // their text with the matches marked; then, as in `before_within`, kept while the running
        // total of their sizes stays within the budget, and how many there were before that.
        let (before_ts, before_room, before_seq) = page.before_parts();
        sqlx::query_as(
            "SELECT room, seq, author, text, ts, marked, fetched FROM ( \
               SELECT *, \
                 SUM(size) OVER (ORDER BY ts DESC, room DESC, seq DESC ROWS UNBOUNDED PRECEDING) \
                   AS running, \
                 COUNT(*) OVER () AS fetched \
               FROM ( \
                 SELECT m.room AS room, m.seq AS seq, m.author AS author, m.text AS text, m.ts AS ts, \
                   highlight(message_search, 0, char(2), char(3)) AS marked, \
                   length(CAST(m.text AS BLOB)) + length(CAST(m.author AS BLOB)) \
                     + length(CAST(m.room AS BLOB)) + ?7 AS size \
                 FROM message_search \
                 JOIN message_search_ids AS i ON i.id = message_search.rowid \
                 JOIN messages AS m ON m.room = i.room AND m.seq = i.seq \
                 WHERE message_search MATCH ?1 AND (?2 IS NULL OR i.room = ?2) \
                   AND (?3 IS NULL OR (m.ts, m.room, m.seq) < (?3, ?4, ?5)) \
                 ORDER BY m.ts DESC, m.room DESC, m.seq DESC LIMIT ?6 \
               ) \
             ) WHERE running <= ?8 OR running = size ORDER BY ts DESC, room DESC, seq DESC",
        )
        .bind(query)
        .bind(page.room)
        .bind(before_ts)
        .bind(before_room)
        .bind(before_seq)
        .bind(page.limit)
        .bind(page.per_hit)
        .bind(page.max_bytes)
        .fetch_all(&self.pool)
        .await
    }

    /// The oldest stored and the last given sequence numbers, if any.
    pub(super) async fn bounds(
        &self,
        room: &str,
    ) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
        sqlx::query_as(
            "SELECT (SELECT MIN(seq) FROM messages WHERE room = ?1), \
                    (SELECT last_seq FROM rooms WHERE name = ?1)",
        )
        .bind(room)
        .fetch_one(&self.pool)
        .await
    }

    pub(super) async fn rooms_by_messages(
        &self,
        skip: &[String],
        limit: i64,
        offset: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let skip = serde_json::to_string(skip).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query_as(
            "SELECT name, last_seq FROM rooms \
             WHERE name NOT IN (SELECT value FROM json_each(?1)) \
             ORDER BY last_seq DESC, name LIMIT ?2 OFFSET ?3",
        )
        .bind(skip)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn room_sizes(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let names = serde_json::to_string(names).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query_as(
            "SELECT name, last_seq FROM rooms WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    pub(super) async fn prune(
        &self,
        plan: Plan,
        mut on_room: impl FnMut(&str),
    ) -> Result<PruneReport, sqlx::Error> {
        let mut report = PruneReport::default();
        // This connection never checkpoints as it commits: a commit's automatic checkpoint would run
        // while it still holds the write turn (the writer waiting). It checkpoints after each batch
        // instead, having handed the turn back: a passive checkpoint runs beside the writer's
        // transactions, and keeps the deletes' pages from piling up in the WAL for one of the writer's
        // commits to checkpoint (on the acknowledgement path).
        let options = self.options.clone().pragma("wal_autocheckpoint", "0");
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let cuts = prune_plan(&mut conn, plan).await?;
        for (room, keep_from) in cuts {
            let mut deleted = 0;
            let swept = self
                .delete_oldest(
                    &mut conn,
                    &room,
                    keep_from,
                    plan.batch_rows,
                    &mut deleted,
                    &mut report,
                )
                .await;
            if deleted > 0 {
                // Even if a later batch failed: what the earlier ones deleted is gone.
                on_room(&room);
            }
            swept?;
            if deleted == 0 {
                continue;
            }
            let (oldest,): (Option<i64>,) =
                sqlx::query_as("SELECT MIN(seq) FROM messages WHERE room = ?")
                    .bind(&room)
                    .fetch_one(&mut conn)
                    .await?;
            report.rooms.push(Pruned {
                room,
                deleted,
                oldest_seq: oldest.unwrap_or(0) as u64,
            });
        }
        conn.close().await?;
        Ok(report)
    }

    /// Deletes `room`'s messages below `keep_from`, oldest first, at most `batch_rows` a transaction,
    /// each holding the write turn; counts them into `deleted` as they commit.
    async fn delete_oldest(
        &self,
        conn: &mut SqliteConnection,
        room: &str,
        keep_from: i64,
        batch_rows: i64,
        deleted: &mut u64,
        report: &mut PruneReport,
    ) -> Result<(), sqlx::Error> {
        loop {
            // The subquery finds the room's (batch_rows + 1)-th oldest message through the primary key
            // (room, seq); everything below it (and below `keep_from`) goes: an index range, oldest
            // first, never more than `batch_rows` rows whatever gaps the numbers have.
            let turn = self.write_turn.lock().await;
            let started = Instant::now();
            let rows = sqlx::query(
                "DELETE FROM messages WHERE room = ?1 AND seq < MIN(?2, COALESCE( \
                 (SELECT seq FROM messages WHERE room = ?1 ORDER BY seq LIMIT 1 OFFSET ?3), ?2))",
            )
            .bind(room)
            .bind(keep_from)
            .bind(batch_rows)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let took = started.elapsed();
            drop(turn);
            report.longest_batch = report.longest_batch.max(took);
            report.write_time += took;
            report.batches += 1;
            *deleted += rows;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *conn)
                .await?;
            if rows < batch_rows as u64 {
                return Ok(());
            }
        }
    }
}

/// The rooms that have messages `plan` no longer keeps, each with the first sequence number it keeps,
/// by name. Reads only (no write lock), each through an index: the count rule probes each room's oldest
/// message by primary key; the age rule reads only the old part of `messages_by_ts`.
async fn prune_plan(
    conn: &mut SqliteConnection,
    plan: Plan,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let mut cuts = Vec::new();
    if plan.max_messages > 0 {
        cuts.extend(
            sqlx::query_as(
                "SELECT name, last_seq - ?1 + 1 FROM rooms WHERE last_seq > ?1 \
                 AND (SELECT MIN(seq) FROM messages WHERE room = name) <= last_seq - ?1",
            )
            .bind(plan.max_messages)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    if let Some(cutoff) = plan.cutoff_ms {
        // `INDEXED BY`: without statistics, SQLite would rather scan the whole table in room order for
        // the GROUP BY than the old entries of the ts index.
        cuts.extend(
            sqlx::query_as(
                "SELECT room, MAX(seq) + 1 FROM messages INDEXED BY messages_by_ts \
                 WHERE ts < ? GROUP BY room",
            )
            .bind(cutoff)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    Ok(super::keep_from(cuts))
}

/// Applies an edit or delete to the message it changes (a delete also empties the quotes of it).
async fn change_message(
    tx: &mut sqlx::SqliteConnection,
    room: &str,
    target: i64,
    kind: EntryKind,
    text: &str,
) -> Result<(), sqlx::Error> {
    match kind {
        EntryKind::Message | EntryKind::React | EntryKind::Unreact => return Ok(()),
        EntryKind::Edit => {
            sqlx::query("UPDATE messages SET text = ?, edited = 1 WHERE room = ? AND seq = ?")
                .bind(text)
                .bind(room)
                .bind(target)
                .execute(&mut *tx)
                .await?;
        }
        EntryKind::Delete => {
            sqlx::query("UPDATE messages SET text = '', deleted = 1 WHERE room = ? AND seq = ?")
                .bind(room)
                .bind(target)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE messages SET reply_text = '' WHERE room = ? AND reply_to = ?")
                .bind(room)
                .bind(target)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

/// Toggles `new`'s reaction (its `text`, by its author) to message `target`: which way it went, or
/// why it could not (a new emoji past [`MAX_REACTION_KINDS`] on that message).
async fn toggle_reaction(
    tx: &mut sqlx::SqliteConnection,
    new: &NewMessage,
    target: i64,
) -> Result<Result<EntryKind, Refusal>, sqlx::Error> {
    let had = sqlx::query(
        "DELETE FROM reactions WHERE room = ? AND seq = ? AND emoji = ? AND person_id = ?",
    )
    .bind(&new.room)
    .bind(target)
    .bind(&new.text)
    .bind(new.author_id as i64)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if had {
        return Ok(Ok(EntryKind::Unreact));
    }
    let (kinds, this_one): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(DISTINCT emoji), COUNT(*) FILTER (WHERE emoji = ?) FROM reactions \
         WHERE room = ? AND seq = ?",
    )
    .bind(&new.text)
    .bind(&new.room)
    .bind(target)
    .fetch_one(&mut *tx)
    .await?;
    if this_one == 0 && kinds >= MAX_REACTION_KINDS as i64 {
        return Ok(Err(Refusal::TooManyReactions));
    }
    sqlx::query(
        "INSERT INTO reactions (room, seq, emoji, person_id, name, ts) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&new.room)
    .bind(target)
    .bind(&new.text)
    .bind(new.author_id as i64)
    .bind(&new.author)
    .bind(new.ts as i64)
    .execute(&mut *tx)
    .await?;
    Ok(Ok(EntryKind::React))
}
