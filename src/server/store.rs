//! The history store: every accepted message in an embedded SQLite file (`<data-dir>/chat.db`).
//!
//! - **Sequence numbers**: each room counts its messages 1, 2, 3… with no gaps. The number is taken in
//!   the same transaction that stores the message (`rooms.last_seq + 1`), so a failed transaction gives
//!   none away, and retention can delete old messages without a number ever being reused.
//! - **Durability**: WAL journal with `synchronous = FULL`: a commit returns once the WAL is on disk. The
//!   writer (`history.rs`) acknowledges a message only after its commit, so a `kill -9` (or a power cut)
//!   loses nothing that was acknowledged.
//! - **Idempotency**: a message with a `client_id` is stored once per (room, sender, client id); storing
//!   it again returns the sequence number it already has.
//! - **Migrations**: `migrations/*.sql`, embedded in the binary and applied by sqlx's migrator at start.
//! - **Retention** ([`Store::prune`]): runs beside the writer, on a connection of its own, and deletes each
//!   room's oldest messages in short transactions of at most [`PRUNE_BATCH_ROWS`] rows, so the writer's
//!   batches (and so every acknowledgement) wait for one small delete at most, never for the whole pass.
//!   Only these two ever write, and they take turns (see `Store::write_turn`).

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Connection;

use crate::protocol::ChatMessage;

/// Identifies a person (all the connections of one session): the `author_id` of their messages.
pub type PersonId = u64;

/// The schema, oldest first. A migration that has run must never change (sqlx checks its checksum).
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "history",
    include_str!("../../migrations/0001_history.sql"),
)];

#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A message on its way into the store.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room: String,
    pub author_id: PersonId,
    pub author: String,
    pub text: String,
    pub ts: u64,
    pub client_id: Option<String>,
}

impl NewMessage {
    /// What an error about this message says it answers: the sender's frame.
    pub fn reference(&self) -> crate::protocol::FrameRef {
        crate::protocol::FrameRef {
            kind: crate::protocol::FrameKind::Message,
            room: Some(self.room.clone()),
            client_id: self.client_id.clone(),
        }
    }
}

/// What storing one message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored now, as this.
    New(ChatMessage),
    /// Its `client_id` was stored before, as this sequence number: nothing new was stored.
    Duplicate { seq: u64 },
}

/// What the store holds of one room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomBounds {
    /// The oldest sequence number still stored (0: none is).
    pub oldest_seq: u64,
    /// The last sequence number the room gave (0: it never stored a message).
    pub last_seq: u64,
}

/// How much history to keep; 0 means no limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Newest messages kept per room.
    pub max_messages: u64,
    /// Age after which messages are deleted.
    pub max_age: Duration,
}

/// Most messages one retention transaction deletes. Small enough that a delete holds SQLite's write lock
/// for a few milliseconds (see `PruneReport::longest_batch`), large enough that a pass over a big backlog
/// is not mostly per-transaction overhead (each commit is a disk sync).
pub const PRUNE_BATCH_ROWS: u64 = 2_000;

/// What one room lost to retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub room: String,
    /// Messages deleted.
    pub deleted: u64,
    /// The room's oldest stored sequence number afterwards (0: none is left).
    pub oldest_seq: u64,
}

/// What a retention pass did.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// The rooms that lost messages, by name.
    pub rooms: Vec<Pruned>,
    /// Delete transactions committed.
    pub batches: u64,
    /// The longest of them, waiting for the write turn excluded: about the most a writer batch waited
    /// for retention.
    pub longest_batch: Duration,
    /// All of them together.
    pub write_time: Duration,
}

impl PruneReport {
    /// Messages deleted, all rooms together.
    pub fn deleted(&self) -> u64 {
        self.rooms.iter().map(|r| r.deleted).sum()
    }
}

/// A handle on the database; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// How `pool` connects: retention opens its own connection with them.
    options: SqliteConnectOptions,
    /// Held by whoever writes, for a whole transaction: the history writer (`append`) or one retention
    /// batch (`prune`). SQLite allows one writer at a time anyway; taking turns here first does two
    /// things its own lock cannot. The writer's transaction begins deferred (a read, then writes): had
    /// retention committed between that read and the first write, SQLite would refuse the upgrade at once
    /// (`SQLITE_BUSY`, a stale snapshot; the busy timeout does not apply) and the whole batch would be
    /// refused. And a writer kept waiting by SQLite sleeps in growing steps (up to 100 ms) before it
    /// retries, where a tokio `Mutex` is fair (first come, first served) and hands the turn over the
    /// moment a batch commits: the writer and retention alternate, a batch each.
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

type Row = (i64, String, String, i64, Option<String>);

fn message((seq, from, text, ts, client_id): Row) -> ChatMessage {
    ChatMessage {
        seq: seq as u64,
        from,
        text,
        ts: ts as u64,
        client_id,
    }
}

impl Store {
    /// Opens (creating it and `dir` if needed) `dir/chat.db` and brings its schema up to date.
    pub async fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(dir.join("chat.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // A few connections: WAL lets readers (history pages, joins) run beside the one writer.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        Migrator::new(EmbeddedMigrations).await?.run(&pool).await?;
        Ok(Store {
            pool,
            options,
            write_turn: Arc::default(),
        })
    }

    /// Stores `batch` in one transaction (one disk sync for all of it), in order; returns what became
    /// of each message. All or nothing: on error nothing was stored.
    pub async fn append<M: Borrow<NewMessage>>(
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
            let (seq,): (i64,) = sqlx::query_as(
                "INSERT INTO rooms (name, last_seq, created_at) VALUES (?, 1, ?) \
                 ON CONFLICT (name) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
            )
            .bind(&new.room)
            .bind(new.ts as i64)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO messages (room, seq, author_id, author, text, ts, client_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.room)
            .bind(seq)
            .bind(new.author_id as i64)
            .bind(&new.author)
            .bind(&new.text)
            .bind(new.ts as i64)
            .bind(&new.client_id)
            .execute(&mut *tx)
            .await?;
            outcome.push(Stored::New(ChatMessage {
                seq: seq as u64,
                from: new.author.clone(),
                text: new.text.clone(),
                ts: new.ts,
                client_id: new.client_id.clone(),
            }));
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Up to `limit` messages of `room` after sequence number `after`, oldest first.
    pub async fn after(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, author, text, ts, client_id FROM messages \
             WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(room)
        .bind(after.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(message).collect())
    }

    /// The `limit` messages of `room` just before sequence number `before` (the newest if `None`),
    /// oldest first.
    pub async fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let before = before.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, author, text, ts, client_id FROM messages \
             WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(room)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut messages: Vec<ChatMessage> = rows.into_iter().map(message).collect();
        messages.reverse();
        Ok(messages)
    }

    /// Like [`Store::before`], but also at most `max_bytes` of messages (their text, sender and client
    /// id, plus `per_message` bytes each for the rest of their JSON): the newest that fit, oldest first,
    /// and always at least one, so paging back always gets somewhere. The sum is taken in SQLite, so
    /// a page of large messages never leaves it whole.
    pub async fn before_within(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
        max_bytes: usize,
        per_message: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let before = before.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64;
        // Innermost: the `limit` newest before `before` (the index on (room, seq) walks them); then a
        // running total of their sizes, newest first; kept while it stays within the budget.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, author, text, ts, client_id FROM ( \
               SELECT seq, author, text, ts, client_id, size, \
                      SUM(size) OVER (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) AS running \
               FROM ( \
                 SELECT seq, author, text, ts, client_id, \
                        length(CAST(text AS BLOB)) + length(CAST(author AS BLOB)) \
                          + IFNULL(length(CAST(client_id AS BLOB)), 0) + ?4 AS size \
                 FROM messages WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3 \
               ) \
             ) WHERE running <= ?5 OR running = size ORDER BY seq DESC",
        )
        .bind(room)
        .bind(before)
        .bind(limit as i64)
        .bind(per_message.min(i64::MAX as usize) as i64)
        .bind(max_bytes.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut messages: Vec<ChatMessage> = rows.into_iter().map(message).collect();
        messages.reverse();
        Ok(messages)
    }

    /// The oldest stored and the last given sequence numbers of `room`.
    pub async fn bounds(&self, room: &str) -> Result<RoomBounds, sqlx::Error> {
        let (oldest, last): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT MIN(seq) FROM messages WHERE room = ?1), \
                    (SELECT last_seq FROM rooms WHERE name = ?1)",
        )
        .bind(room)
        .fetch_one(&self.pool)
        .await?;
        Ok(RoomBounds {
            oldest_seq: oldest.unwrap_or(0) as u64,
            last_seq: last.unwrap_or(0) as u64,
        })
    }

    /// A page of the room list: rooms with stored messages, most messages first (then by name), leaving
    /// out those in `skip` (the caller lists them first: they have people in them). Ordered and paged in
    /// the query, so however many rooms exist, the busiest are on the first page.
    pub async fn rooms_by_messages(
        &self,
        skip: &[String],
        limit: usize,
        offset: usize,
    ) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let skip = serde_json::to_string(skip).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, last_seq FROM rooms \
             WHERE name NOT IN (SELECT value FROM json_each(?1)) \
             ORDER BY last_seq DESC, name LIMIT ?2 OFFSET ?3",
        )
        .bind(skip)
        .bind(limit.min(i64::MAX as usize) as i64)
        .bind(offset.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, last)| (name, last as u64))
            .collect())
    }

    /// The last sequence numbers (message counts) of those of `names` that have stored messages.
    pub async fn room_sizes(&self, names: &[String]) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let names = serde_json::to_string(names).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, last_seq FROM rooms WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, last)| (name, last as u64))
            .collect())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// Deletes what `retention` no longer keeps, room by room, oldest first, at most `batch_rows` per
    /// transaction; `on_room` hears of each room that lost messages as soon as it is done (or, if the
    /// pass fails, of the room it failed in, if that had already lost some).
    ///
    /// A room keeps its history contiguous: retention deletes every message up to the newest one it no
    /// longer keeps. By count that is exactly the messages beyond the newest `max_messages`; by age, every
    /// message up to the room's newest one older than `max_age` (a message stamped a moment later but
    /// numbered earlier, as concurrent senders' can be, goes with it rather than leave a gap).
    ///
    /// Runs on a connection of its own, so it takes none of the pool's from history reads. Messages
    /// stored meanwhile are never deleted by this pass: they are newer than anything it plans to cut.
    pub async fn prune(
        &self,
        retention: Retention,
        now_ms: u64,
        batch_rows: u64,
        mut on_room: impl FnMut(&str),
    ) -> Result<PruneReport, sqlx::Error> {
        let mut report = PruneReport::default();
        if retention.max_messages == 0 && retention.max_age.is_zero() {
            return Ok(report);
        }
        // This connection never checkpoints as it commits: a commit's automatic checkpoint would run
        // while it still holds the write turn (the writer waiting). It checkpoints after each batch
        // instead, having handed the turn back: a passive checkpoint runs beside the writer's
        // transactions, and keeps the deletes' pages from piling up in the WAL for one of the writer's
        // commits to checkpoint (on the acknowledgement path).
        let options = self.options.clone().pragma("wal_autocheckpoint", "0");
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let plan = prune_plan(&mut conn, retention, now_ms).await?;
        for (room, keep_from) in plan {
            let mut deleted = 0;
            let swept = self
                .delete_oldest(
                    &mut conn,
                    &room,
                    keep_from,
                    batch_rows,
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
        keep_from: u64,
        batch_rows: u64,
        deleted: &mut u64,
        report: &mut PruneReport,
    ) -> Result<(), sqlx::Error> {
        let keep_from = keep_from.min(i64::MAX as u64) as i64;
        let batch_rows = batch_rows.clamp(1, i64::MAX as u64);
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
            .bind(batch_rows as i64)
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
            if rows < batch_rows {
                return Ok(());
            }
        }
    }
}

/// The rooms that have messages `retention` no longer keeps, each with the first sequence number it
/// keeps, by name. Reads only (no write lock), each through an index: the count rule probes each room's
/// oldest message by primary key; the age rule reads only the old part of `messages_by_ts`.
async fn prune_plan(
    conn: &mut SqliteConnection,
    retention: Retention,
    now_ms: u64,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut keep_from = BTreeMap::new();
    let mut cut = |rooms: Vec<(String, i64)>| {
        for (room, first_kept) in rooms {
            let first_kept = first_kept.max(0) as u64;
            let entry = keep_from.entry(room).or_insert(first_kept);
            *entry = (*entry).max(first_kept);
        }
    };
    if retention.max_messages > 0 {
        cut(sqlx::query_as(
            "SELECT name, last_seq - ?1 + 1 FROM rooms WHERE last_seq > ?1 \
             AND (SELECT MIN(seq) FROM messages WHERE room = name) <= last_seq - ?1",
        )
        .bind(retention.max_messages.min(i64::MAX as u64) as i64)
        .fetch_all(&mut *conn)
        .await?);
    }
    if !retention.max_age.is_zero() {
        let cutoff = now_ms.saturating_sub(retention.max_age.as_millis() as u64);
        // `INDEXED BY`: without statistics, SQLite would rather scan the whole table in room order for
        // the GROUP BY than the old entries of the ts index.
        cut(sqlx::query_as(
            "SELECT room, MAX(seq) + 1 FROM messages INDEXED BY messages_by_ts \
             WHERE ts < ? GROUP BY room",
        )
        .bind(cutoff.min(i64::MAX as u64) as i64)
        .fetch_all(&mut *conn)
        .await?);
    }
    Ok(keep_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(room: &str, text: &str, client_id: Option<&str>) -> NewMessage {
        NewMessage {
            room: room.into(),
            author_id: 7,
            author: "ann".into(),
            text: text.into(),
            ts: 1_000,
            client_id: client_id.map(Into::into),
        }
    }

    /// One retention pass, in batches of the usual size.
    async fn prune(store: &Store, retention: Retention, now_ms: u64) -> PruneReport {
        store
            .prune(retention, now_ms, PRUNE_BATCH_ROWS, |_| {})
            .await
            .unwrap()
    }

    fn seqs(stored: &[Stored]) -> Vec<u64> {
        stored
            .iter()
            .map(|s| match s {
                Stored::New(m) => m.seq,
                Stored::Duplicate { seq } => *seq,
            })
            .collect()
    }

    #[tokio::test]
    async fn sequences_count_per_room_and_resends_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let first = store
            .append(&[
                new("a", "1", Some("x")),
                new("b", "1", None),
                new("a", "2", None),
                new("a", "1 again", Some("x")),
            ])
            .await
            .unwrap();
        assert_eq!(seqs(&first), [1, 1, 2, 1]);
        assert_eq!(first[3], Stored::Duplicate { seq: 1 });
        let again = store.append(&[new("a", "3", Some("x"))]).await.unwrap();
        assert_eq!(again, [Stored::Duplicate { seq: 1 }]);
        // Another sender may use the same client id.
        let mut other = new("a", "3", Some("x"));
        other.author_id = 8;
        assert_eq!(seqs(&store.append(&[other]).await.unwrap()), [3]);

        let texts = |ms: Vec<ChatMessage>| ms.into_iter().map(|m| m.text).collect::<Vec<_>>();
        assert_eq!(
            texts(store.after("a", 0, 10).await.unwrap()),
            ["1", "2", "3"]
        );
        assert_eq!(texts(store.after("a", 1, 1).await.unwrap()), ["2"]);
        assert_eq!(texts(store.before("a", None, 2).await.unwrap()), ["2", "3"]);
        assert_eq!(texts(store.before("a", Some(2), 5).await.unwrap()), ["1"]);
        assert_eq!(
            store.rooms_by_messages(&[], 10, 0).await.unwrap(),
            [("a".to_string(), 3), ("b".to_string(), 1)]
        );
    }

    #[tokio::test]
    async fn retention_never_lets_a_number_be_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let batch: Vec<NewMessage> = (0..10).map(|i| new("a", &i.to_string(), None)).collect();
        store.append(&batch).await.unwrap();
        let keep_three = Retention {
            max_messages: 3,
            max_age: Duration::ZERO,
        };
        assert_eq!(prune(&store, keep_three, 0).await.deleted(), 7);
        assert_eq!(
            store.bounds("a").await.unwrap(),
            RoomBounds {
                oldest_seq: 8,
                last_seq: 10
            }
        );
        let by_age = Retention {
            max_messages: 0,
            max_age: Duration::from_secs(1),
        };
        assert_eq!(prune(&store, by_age, 1_000 + 1_001).await.deleted(), 3);
        assert_eq!(
            store.bounds("a").await.unwrap(),
            RoomBounds {
                oldest_seq: 0,
                last_seq: 10
            }
        );
        assert_eq!(
            seqs(&store.append(&[new("a", "next", None)]).await.unwrap()),
            [11]
        );
        // Reopening runs no migration twice and keeps everything.
        drop(store);
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.bounds("a").await.unwrap().last_seq, 11);
    }

    /// `count` messages in `room`, stamped `first_ts`, `first_ts + 1`, ...
    async fn fill(store: &Store, room: &str, count: u64, first_ts: u64) {
        let batch: Vec<NewMessage> = (0..count)
            .map(|i| NewMessage {
                ts: first_ts + i,
                ..new(room, &format!("{room}{i}"), None)
            })
            .collect();
        store.append(&batch).await.unwrap();
    }

    /// Every sequence number `room` still has, oldest first.
    async fn kept(store: &Store, room: &str) -> Vec<u64> {
        store
            .after(room, 0, usize::MAX >> 1)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect()
    }

    #[tokio::test]
    async fn retention_deletes_exactly_the_old_rows_of_each_room_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        // "a": 100 messages, stamped 0..100. "b": 30, stamped 1000..1030. "c": 5, stamped 50..55.
        // "d": 40, stamped 1000..1040. "e": 3, stamped 0..3.
        fill(&store, "a", 100, 0).await;
        fill(&store, "b", 30, 1_000).await;
        fill(&store, "c", 5, 50).await;
        fill(&store, "d", 40, 1_000).await;
        fill(&store, "e", 3, 0).await;
        // Keep the newest 25 per room, and nothing stamped before 52 (now 1052, age 1000 ms).
        let retention = Retention {
            max_messages: 25,
            max_age: Duration::from_millis(1_000),
        };
        let mut heard = Vec::new();
        let report = store
            .prune(retention, 1_052, 7, |room| heard.push(room.to_owned()))
            .await
            .unwrap();
        let pruned = |room: &str, deleted, oldest_seq| Pruned {
            room: room.into(),
            deleted,
            oldest_seq,
        };
        // a: by count, everything up to 75 (age alone would stop at 52); b: 5 by count; c: seqs 1..=2
        // (ts 50, 51) by age; d: 15 by count; e: all three by age.
        let expected = [
            pruned("a", 75, 76),
            pruned("b", 5, 6),
            pruned("c", 2, 3),
            pruned("d", 15, 16),
            pruned("e", 3, 0),
        ];
        assert_eq!(report.rooms, expected);
        assert_eq!(
            heard,
            ["a", "b", "c", "d", "e"],
            "each room told as it is done"
        );
        assert_eq!(kept(&store, "a").await, (76..=100).collect::<Vec<_>>());
        assert_eq!(kept(&store, "b").await, (6..=30).collect::<Vec<_>>());
        assert_eq!(kept(&store, "c").await, [3, 4, 5]);
        assert_eq!(kept(&store, "d").await, (16..=40).collect::<Vec<_>>());
        assert!(kept(&store, "e").await.is_empty());
        // At most 7 rows a transaction: a takes 11 (the last one short), b, c and e one each, d three.
        assert_eq!(report.batches, 11 + 1 + 1 + 3 + 1);

        // Nothing more to do: no room is touched again, no transaction is spent.
        let again = store.prune(retention, 1_052, 7, |_| {}).await.unwrap();
        assert!(again.rooms.is_empty());
        assert_eq!(again.batches, 0);
        assert_eq!(
            store.bounds("e").await.unwrap(),
            RoomBounds {
                oldest_seq: 0,
                last_seq: 3
            }
        );
    }

    /// Not a test but a measurement, run by hand (`cargo test --release --features ssr --lib
    /// measure_retention -- --ignored --nocapture`): how long 200,000 old messages in 20 rooms take to
    /// delete as the single statement retention used to run, and the longest of the batches that replace
    /// it (each of which a writer batch may have to wait for).
    #[tokio::test]
    #[ignore]
    async fn measure_retention() {
        const ROOMS: u64 = 20;
        const OLD: u64 = 10_000;
        const KEPT: u64 = 1_000;
        let retention = Retention {
            max_messages: KEPT,
            max_age: Duration::ZERO,
        };
        for single in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).await.unwrap();
            for r in 0..ROOMS {
                let room = format!("room-{r}");
                for _ in 0..(OLD + KEPT) / 1_000 {
                    fill(&store, &room, 1_000, 0).await;
                }
            }
            let started = Instant::now();
            let deleted = if single {
                // The statement retention ran before it went in batches.
                sqlx::query(
                    "DELETE FROM messages WHERE seq <= \
                     (SELECT last_seq FROM rooms WHERE rooms.name = messages.room) - ?",
                )
                .bind(KEPT as i64)
                .execute(&store.pool)
                .await
                .unwrap()
                .rows_affected()
            } else {
                let report = prune(&store, retention, 0).await;
                println!(
                    "batched: {} transactions of at most {PRUNE_BATCH_ROWS} rows, longest {:?}, \
                     mean {:?}",
                    report.batches,
                    report.longest_batch,
                    report.write_time / report.batches.max(1) as u32
                );
                report.deleted()
            };
            assert_eq!(deleted, ROOMS * OLD);
            let took = started.elapsed();
            println!(
                "{}: {deleted} rows in {took:?}",
                if single { "single DELETE" } else { "batched" }
            );
        }
    }
}
