//! The history store: every accepted message in an embedded SQLite file (`<data-dir>/chat.db`).
//!
//! - **Sequence numbers**: each room counts its messages 1, 2, 3… with no gaps. The number is taken in
//!   the same transaction that stores the message (`rooms.last_seq + 1`), so a failed transaction gives
//!   none away, and retention can delete old messages without a number ever being reused.
//! - **Durability**: WAL journal with `synchronous = FULL`: a commit returns once the WAL is on disk. The
//!   writer (`writer.rs`) acknowledges a message only after its commit, so a `kill -9` (or a power cut)
//!   loses nothing that was acknowledged.
//! - **Idempotency**: a message with a `client_id` is stored once per (room, sender, client id); storing
//!   it again returns the sequence number it already has.
//! - **Migrations**: `migrations/*.sql`, embedded in the binary and applied by sqlx's migrator at start.

use std::borrow::{Borrow, Cow};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

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

/// A handle on the database; cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
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
            .connect_with(options)
            .await?;
        Migrator::new(EmbeddedMigrations).await?.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Stores `batch` in one transaction (one disk sync for all of it), in order; returns what became
    /// of each message. All or nothing: on error nothing was stored.
    pub async fn append<M: Borrow<NewMessage>>(
        &self,
        batch: &[M],
    ) -> Result<Vec<Stored>, sqlx::Error> {
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

    /// Rooms that have stored messages, with their last sequence numbers, by name (at most `limit`).
    pub async fn rooms(&self, limit: usize) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_seq FROM rooms ORDER BY name LIMIT ?")
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, last)| (name, last as u64))
            .collect())
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
        let skip = serde_json::to_string(skip).expect("a list of strings serializes");
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
        let names = serde_json::to_string(names).expect("a list of strings serializes");
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

    /// Deletes what `retention` no longer keeps; returns how many messages went.
    pub async fn prune(&self, retention: Retention, now_ms: u64) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        if retention.max_messages > 0 {
            deleted += sqlx::query(
                "DELETE FROM messages \
                 WHERE seq <= (SELECT last_seq FROM rooms WHERE rooms.name = messages.room) - ?",
            )
            .bind(retention.max_messages.min(i64::MAX as u64) as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        if !retention.max_age.is_zero() {
            let cutoff = now_ms.saturating_sub(retention.max_age.as_millis() as u64);
            deleted += sqlx::query("DELETE FROM messages WHERE ts < ?")
                .bind(cutoff as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
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
            store.rooms(10).await.unwrap(),
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
        assert_eq!(store.prune(keep_three, 0).await.unwrap(), 7);
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
        assert_eq!(store.prune(by_age, 1_000 + 1_001).await.unwrap(), 3);
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
}
