//! The store on PostgreSQL: the history several nodes share (`--database-url postgres://…`).
//!
//! - **Sequence numbers across nodes**: a batch takes each of its rooms' row in `rooms` (an upsert
//!   adding the number of messages it stores there to `last_seq`) before it stores anything in that
//!   room, and holds that row lock until it commits: a batch on another node writing to the same room
//!   waits for it, then reads the `last_seq` it committed. Rooms are taken in name order, so two
//!   batches sharing rooms never wait for each other in a cycle.
//! - **Resends across nodes**: a batch looks for earlier copies of its messages (same room, sender and
//!   `client_id`) only once it holds the room's lock, in a new statement of a `READ COMMITTED`
//!   transaction: so it sees every copy committed before, whichever node stored it, and the unique
//!   index never has to refuse (and fail) a whole batch.
//! - **Retention**: deletes touch only `messages` rows older than anything a writer stores, and no
//!   `rooms` row: unlike SQLite's, they run beside the writers without taking turns.
//! - **Migrations**: `migrations/postgres/`, run under sqlx's advisory lock.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;

use super::search::{FoundRow, MATCH_END, MATCH_START};
use super::{
    clamp, entry_columns, kind_name, message, EmbeddedMigrations, MigrationList, Named, NewMessage,
    PageWithin, PersonId, Plan, PruneReport, Pruned, Refusal, Row, SearchWithin, Stored,
};
use super::{Ban, BanRow};
use crate::protocol::{ChatMessage, EntryKind, Quote, MAX_REACTION_KINDS, MAX_UNREAD};

/// The schema, oldest first.
pub(super) const MIGRATIONS: MigrationList = &[
    (
        1,
        "history",
        include_str!("../../../migrations/postgres/0001_history.sql"),
    ),
    (
        2,
        "secrets",
        include_str!("../../../migrations/postgres/0002_secrets.sql"),
    ),
    (
        3,
        "entries",
        include_str!("../../../migrations/postgres/0003_entries.sql"),
    ),
    (
        4,
        "reactions",
        include_str!("../../../migrations/postgres/0004_reactions.sql"),
    ),
    (
        5,
        "search",
        include_str!("../../../migrations/postgres/0005_search.sql"),
    ),
    (
        6,
        "read_positions",
        include_str!("../../../migrations/postgres/0006_read_positions.sql"),
    ),
    (
        7,
        "bans",
        include_str!("../../../migrations/postgres/0007_bans.sql"),
    ),
];

/// [`PgStore::search`]'s query; `$1` the text for `plainto_tsquery`, `$2` the room or NULL, `$3`–`$5`
/// the cursor (ts, room, seq) or NULLs, `$6` the limit, `$7` the bytes per hit, `$8` the budget, `$9`
/// `ts_headline`'s options.
pub(super) const SEARCH: &str = "SELECT room, seq, author, text, ts, \
       ts_headline('simple', text, plainto_tsquery('simple', $1), $9) AS marked, fetched \
     FROM ( \
       SELECT *, \
         SUM(size) OVER (ORDER BY ts DESC, room DESC, seq DESC ROWS UNBOUNDED PRECEDING) \
           AS running, \
         COUNT(*) OVER () AS fetched \
       FROM ( \
         SELECT room, seq, author, text, ts, \
           octet_length(text) + octet_length(author) + octet_length(room) + $7 AS size \
         FROM messages \
         WHERE to_tsvector('simple', text) @@ plainto_tsquery('simple', $1) \
           AND kind = 'message' AND NOT deleted \
           AND ($2::text IS NULL OR room = $2::text) \
           AND ($3::bigint IS NULL OR (ts, room, seq) < ($3::bigint, $4::text, $5::bigint)) \
         ORDER BY ts DESC, room DESC, seq DESC LIMIT $6 \
       ) AS newest \
     ) AS sized WHERE running <= $8 OR running = size \
     ORDER BY ts DESC, room DESC, seq DESC";

/// Connections per node: the writer's one, retention's own (outside the pool), and the rest for history
/// reads (joins, pages, the room list).
const POOL_SIZE: u32 = 8;

#[derive(Clone)]
pub(super) struct PgStore {
    pool: PgPool,
    /// How `pool` connects: retention opens its own connection with them.
    options: PgConnectOptions,
}

/// Where it connects, without the password `options` may hold.
impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .finish_non_exhaustive()
    }
}

/// Longest a transaction waits for a connection to the database.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl PgStore {
    /// Connects to the database a `postgres://` URL names, and brings its schema up to date.
    pub(super) async fn connect(url: &str) -> anyhow::Result<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .context("--database-url is not a valid PostgreSQL URL")?
            .application_name("groupchat");
        let place = format!(
            "PostgreSQL at {}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            // With the database away, a send is refused (`unavailable`, and the page resends) within
            // this, not after sqlx's default 30 s of retries that would hold every sender meanwhile.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection the database dropped (a restart) is found out before use, not by a
            // failed transaction.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("connecting to {place}"))?;
        Migrator::new(EmbeddedMigrations(MIGRATIONS))
            .await?
            .run(&pool)
            .await
            .with_context(|| format!("migrating {place}"))?;
        Ok(PgStore { pool, options })
    }

    /// The connection pool (tests reach past the interface with it).
    #[cfg(test)]
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn append<M: Borrow<NewMessage>>(
        &self,
        batch: &[M],
    ) -> Result<Vec<Stored>, sqlx::Error> {
        let batch: Vec<&NewMessage> = batch.iter().map(Borrow::borrow).collect();
        // Each room's messages in batch order, the rooms in name order (see the module's doc).
        let mut rooms: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, new) in batch.iter().enumerate() {
            rooms.entry(new.room.as_str()).or_default().push(i);
        }
        let mut outcome = vec![None; batch.len()];
        // READ COMMITTED whatever the server's default: each statement must see what other nodes
        // committed before it began, and an upsert of a room row another batch holds must wait for it
        // and go on, not fail as a serialization error as it would under REPEATABLE READ.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        for (room, members) in rooms {
            append_to_room(&mut tx, room, &members, &batch, &mut outcome).await?;
        }
        tx.commit().await?;
        // Every message of the batch is in exactly one of its rooms, so each has its outcome; were one
        // missing, the batch fails whole rather than answer the wrong messages.
        let stored: Vec<Stored> = outcome.into_iter().flatten().collect();
        if stored.len() != batch.len() {
            return Err(sqlx::Error::Protocol(
                "a message of the batch has no outcome".into(),
            ));
        }
        Ok(stored)
    }

    pub(super) async fn set_read(
        &self,
        person: i64,
        room: &str,
        seq: i64,
        ts: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO read_positions (person_id, room, seq, ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (person_id, room) DO UPDATE \
               SET seq = GREATEST(read_positions.seq, EXCLUDED.seq), ts = EXCLUDED.ts",
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
                 AND m.kind = 'message' AND NOT m.deleted LIMIT $3) AS after) \
             FROM read_positions r WHERE r.person_id = $1 ORDER BY r.ts DESC LIMIT $2",
        )
        .bind(person)
        .bind(limit)
        .bind(MAX_UNREAD as i64)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn add_ban(&self, ban: &Ban) -> Result<i64, sqlx::Error> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO bans (person_id, name_key, name, room, reason, ts) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
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
        let done = sqlx::query("DELETE FROM bans WHERE id = $1")
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
            "SELECT author_id FROM messages WHERE lower(author) = lower($1) \
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
            "SELECT seq, emoji, name FROM reactions WHERE room = $1 AND seq BETWEEN $2 AND $3 \
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
            " FROM messages WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3"
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
            " FROM messages WHERE room = $1 AND seq < $2 AND kind = 'message' \
                  ORDER BY seq DESC LIMIT $3"
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

    /// Newest first. The same query as SQLite's (see there), in PostgreSQL's words.
    pub(super) async fn before_within(
        &self,
        room: &str,
        page: PageWithin,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        self.page_within(
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM ( \
                   SELECT *, SUM(size) OVER (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) AS running \
                   FROM ( \
                     SELECT *, octet_length(text) + octet_length(author) \
                              + COALESCE(octet_length(client_id), 0) \
                              + COALESCE(octet_length(reply_text), 0) + $4 AS size \
                     FROM messages WHERE room = $1 AND seq < $2 AND kind = 'message' ORDER BY seq DESC LIMIT $3 \
                   ) AS newest \
                 ) AS sized WHERE running <= $5 OR running = size ORDER BY seq DESC"
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
        self.page_within(
            concat!(
                "SELECT ",
                entry_columns!(),
                " FROM ( \
                   SELECT *, SUM(size) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running \
                   FROM ( \
                     SELECT *, octet_length(text) + octet_length(author) \
                              + COALESCE(octet_length(client_id), 0) \
                              + COALESCE(octet_length(reply_text), 0) + $4 AS size \
                     FROM messages WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3 \
                   ) AS oldest \
                 ) AS sized WHERE running <= $5 OR running = size ORDER BY seq"
            ),
            room,
            page,
        )
        .await
    }

    /// Newest first; the same query as SQLite's (see there). `query` is plain text
    /// (`SearchQuery::plain`): `plainto_tsquery` reads no operators in it. The conditions are those of
    /// the index `messages_search` (migrations/postgres/0005_search.sql), word for word, so it is
    /// used. `ts_headline` runs on the kept rows only, over the whole text (`HighlightAll`).
    pub(super) async fn search(
        &self,
        query: &str,
        page: SearchWithin<'_>,
    ) -> Result<Vec<FoundRow>, sqlx::Error> {
        let (before_ts, before_room, before_seq) = page.before_parts();
        let headline = format!("StartSel={MATCH_START}, StopSel={MATCH_END}, HighlightAll=true");
        sqlx::query_as(SEARCH)
            .bind(query)
            .bind(page.room)
            .bind(before_ts)
            .bind(before_room)
            .bind(before_seq)
            .bind(page.limit)
            .bind(page.per_hit)
            .bind(page.max_bytes)
            .bind(headline)
            .fetch_all(&self.pool)
            .await
    }

    /// The oldest stored and the last given sequence numbers, if any.
    pub(super) async fn bounds(
        &self,
        room: &str,
    ) -> Result<(Option<i64>, Option<i64>), sqlx::Error> {
        sqlx::query_as(
            "SELECT (SELECT MIN(seq) FROM messages WHERE room = $1), \
                    (SELECT last_seq FROM rooms WHERE name = $1)",
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
        sqlx::query_as(
            "SELECT name, last_seq FROM rooms WHERE name <> ALL($1) \
             ORDER BY last_seq DESC, name LIMIT $2 OFFSET $3",
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
        sqlx::query_as("SELECT name, last_seq FROM rooms WHERE name = ANY($1)")
            .bind(names)
            .fetch_all(&self.pool)
            .await
    }

    pub(super) async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    /// See [`super::Store::shared_session_key`].
    pub(super) async fn session_key(
        &self,
        fresh: [u8; 32],
        replace: bool,
    ) -> anyhow::Result<[u8; 32]> {
        let store = if replace {
            "INSERT INTO secrets (name, value) VALUES ('session_key', $1) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        } else {
            "INSERT INTO secrets (name, value) VALUES ('session_key', $1) \
             ON CONFLICT (name) DO NOTHING"
        };
        sqlx::query(store)
            .bind(&fresh[..])
            .execute(&self.pool)
            .await?;
        let (key,): (Vec<u8>,) =
            sqlx::query_as("SELECT value FROM secrets WHERE name = 'session_key'")
                .fetch_one(&self.pool)
                .await?;
        <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
            anyhow::anyhow!(
                "the session key in the database (table `secrets`) is {} bytes, not 32",
                key.len()
            )
        })
    }

    pub(super) async fn prune(
        &self,
        plan: Plan,
        mut on_room: impl FnMut(&str),
    ) -> Result<PruneReport, sqlx::Error> {
        let mut report = PruneReport::default();
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let cuts = prune_plan(&mut conn, plan).await?;
        for (room, keep_from) in cuts {
            let mut deleted = 0;
            let swept = delete_oldest(
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
                sqlx::query_as("SELECT MIN(seq) FROM messages WHERE room = $1")
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
}

/// Stores the messages of `batch` at `members` (all in `room`, in batch order), within `tx`, and
/// records what became of each in `outcome`.
#[allow(
    clippy::indexing_slicing,
    reason = "`members` are indices into `batch` and `outcome` (same length) made by `append`, and \
              never empty; no index comes from a client"
)]
async fn append_to_room(
    tx: &mut PgConnection,
    room: &str,
    members: &[usize],
    batch: &[&NewMessage],
    outcome: &mut [Option<Stored>],
) -> Result<(), sqlx::Error> {
    // Resends within the batch: the first copy is stored (or found stored), the others repeat it.
    let mut first_copy: HashMap<(u64, &str), usize> = HashMap::new();
    let mut copies: Vec<(usize, usize)> = Vec::new();
    let mut fresh: Vec<usize> = Vec::with_capacity(members.len());
    for &i in members {
        if let Some(client_id) = batch[i].client_id.as_deref() {
            match first_copy.entry((batch[i].author_id, client_id)) {
                Entry::Occupied(first) => {
                    copies.push((i, *first.get()));
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        fresh.push(i);
    }

    // Numbers for all of them, and the room's row lock until commit.
    let reserved = fresh.len() as i64;
    let (last,): (i64,) = sqlx::query_as(
        "INSERT INTO rooms (name, last_seq, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET last_seq = rooms.last_seq + EXCLUDED.last_seq \
         RETURNING last_seq",
    )
    .bind(room)
    .bind(reserved)
    .bind(batch[members[0]].ts as i64)
    .fetch_one(&mut *tx)
    .await?;
    let first_seq = last - reserved + 1;

    // Copies stored before, by any node: committed before the lock was ours, so visible now. Matched
    // by sender and client id in two arrays (the index on (room, author_id, client_id) answers), the
    // exact pairs picked out here.
    let (authors, client_ids): (Vec<i64>, Vec<&str>) = fresh
        .iter()
        .filter_map(|&i| Some((batch[i].author_id as i64, batch[i].client_id.as_deref()?)))
        .unzip();
    if !client_ids.is_empty() {
        let earlier: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT author_id, client_id, seq FROM messages WHERE room = $1 \
             AND author_id = ANY($2) AND client_id IS NOT NULL AND client_id = ANY($3)",
        )
        .bind(room)
        .bind(&authors)
        .bind(&client_ids)
        .fetch_all(&mut *tx)
        .await?;
        if !earlier.is_empty() {
            let earlier: HashMap<(u64, &str), u64> = earlier
                .iter()
                .map(|(author, id, seq)| ((*author as u64, id.as_str()), *seq as u64))
                .collect();
            fresh.retain(|&i| {
                let new = batch[i];
                let stored = new
                    .client_id
                    .as_deref()
                    .and_then(|id| earlier.get(&(new.author_id, id)));
                if let Some(&seq) = stored {
                    outcome[i] = Some(Stored::Duplicate { seq });
                }
                stored.is_none()
            });
        }
    }

    // Entries naming a message (replies, edits, deletes), checked in batch order against the messages
    // as committed (the room's lock is ours: no other writer changes them meanwhile) and as the batch's
    // earlier entries leave them.
    let targets: Vec<i64> = fresh
        .iter()
        .filter_map(|&i| batch[i].target.map(clamp))
        .collect();
    let mut quotes: HashMap<usize, Quote> = HashMap::new();
    if !targets.is_empty() {
        let rows: Vec<(i64, i64, String, String, bool)> = sqlx::query_as(
            "SELECT seq, author_id, author, text, deleted FROM messages \
             WHERE room = $1 AND seq = ANY($2) AND kind = 'message'",
        )
        .bind(room)
        .bind(&targets)
        .fetch_all(&mut *tx)
        .await?;
        let mut named: HashMap<u64, Named> = rows
            .into_iter()
            .map(|(seq, author_id, from, text, deleted)| {
                let named = Named {
                    author_id: author_id as PersonId,
                    from,
                    text,
                    deleted,
                };
                (seq as u64, named)
            })
            .collect();
        fresh.retain(|&i| {
            let new = batch[i];
            let Some(target) = new.target else {
                return true;
            };
            match Named::check(named.get(&target), new) {
                Ok(quote) => {
                    if let Some(quote) = quote {
                        quotes.insert(i, quote);
                    }
                    if let Some(message) = named.get_mut(&target) {
                        match new.kind {
                            EntryKind::Edit => message.text = new.text.clone(),
                            EntryKind::Delete => message.deleted = true,
                            EntryKind::Message | EntryKind::React | EntryKind::Unreact => {}
                        }
                    }
                    true
                }
                Err(refusal) => {
                    outcome[i] = Some(Stored::Refused(refusal));
                    false
                }
            }
        });
    }
    // Reactions toggle, in batch order: each entry says which way its toggle went.
    let mut toggled: HashMap<usize, EntryKind> = HashMap::new();
    let mut kept = Vec::with_capacity(fresh.len());
    for &i in &fresh {
        let new = batch[i];
        if let (EntryKind::React, Some(target)) = (new.kind, new.target) {
            match toggle_reaction(tx, room, new, clamp(target)).await? {
                Ok(kind) => {
                    toggled.insert(i, kind);
                }
                Err(refusal) => {
                    outcome[i] = Some(Stored::Refused(refusal));
                    continue;
                }
            }
        }
        kept.push(i);
    }
    fresh = kept;
    if fresh.len() as i64 != reserved {
        // Give back the numbers the resends and refusals did not need: the lock is still ours, so no
        // one has taken any after them.
        sqlx::query("UPDATE rooms SET last_seq = $2 WHERE name = $1")
            .bind(room)
            .bind(first_seq - 1 + fresh.len() as i64)
            .execute(&mut *tx)
            .await?;
    }

    if !fresh.is_empty() {
        let seqs: Vec<i64> = (first_seq..).take(fresh.len()).collect();
        let stored: Vec<ChatMessage> = fresh
            .iter()
            .zip(&seqs)
            .map(|(&i, &seq)| {
                let mut stored = batch[i].stored_as(seq as u64, quotes.remove(&i));
                if let Some(kind) = toggled.get(&i) {
                    stored.kind = *kind;
                }
                stored
            })
            .collect();
        let column = |field: fn(&ChatMessage) -> Option<i64>| -> Vec<Option<i64>> {
            stored.iter().map(field).collect()
        };
        let texts = |field: fn(&ChatMessage) -> Option<&str>| -> Vec<Option<&str>> {
            stored.iter().map(field).collect()
        };
        let author_ids: Vec<i64> = fresh.iter().map(|&i| batch[i].author_id as i64).collect();
        let kinds: Vec<&str> = stored.iter().map(|m| kind_name(m.kind)).collect();
        sqlx::query(
            "INSERT INTO messages (room, seq, author_id, author, text, ts, client_id, kind, target, \
               reply_to, reply_from, reply_text) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], \
                                      $6::bigint[], $7::text[], $8::text[], $9::bigint[], \
                                      $10::bigint[], $11::text[], $12::text[])",
        )
        .bind(room)
        .bind(&seqs)
        .bind(&author_ids)
        .bind(texts(|m| Some(&m.from)))
        .bind(texts(|m| Some(&m.text)))
        .bind(column(|m| Some(m.ts as i64)))
        .bind(texts(|m| m.client_id.as_deref()))
        .bind(&kinds)
        .bind(column(|m| m.target.map(clamp)))
        .bind(column(|m| m.reply_to.as_ref().map(|q| clamp(q.seq))))
        .bind(texts(|m| m.reply_to.as_ref().map(|q| q.from.as_str())))
        .bind(texts(|m| m.reply_to.as_ref().map(|q| q.text.as_str())))
        .execute(&mut *tx)
        .await?;
        // Then the changes, in order, to the messages they change.
        for message in &stored {
            if let Some(target) = message.target {
                change_message(tx, room, clamp(target), message.kind, &message.text).await?;
            }
        }
        for (&i, message) in fresh.iter().zip(stored) {
            outcome[i] = Some(Stored::New(message));
        }
    }

    for (copy, first) in copies {
        outcome[copy] = match &outcome[first] {
            Some(Stored::New(message)) => Some(Stored::Duplicate { seq: message.seq }),
            Some(Stored::Duplicate { seq }) => Some(Stored::Duplicate { seq: *seq }),
            Some(Stored::Refused(refusal)) => Some(Stored::Refused(*refusal)),
            None => unreachable!("a first copy has its outcome"),
        };
    }
    Ok(())
}

/// Deletes `room`'s messages below `keep_from`, oldest first, at most `batch_rows` a transaction (each
/// statement is one); counts them into `deleted` as they commit.
async fn delete_oldest(
    conn: &mut PgConnection,
    room: &str,
    keep_from: i64,
    batch_rows: i64,
    deleted: &mut u64,
    report: &mut PruneReport,
) -> Result<(), sqlx::Error> {
    loop {
        // As on SQLite: the subquery finds the room's (batch_rows + 1)-th oldest message through the
        // primary key (room, seq), and everything below it (and below `keep_from`) goes.
        let started = Instant::now();
        let rows = sqlx::query(
            "DELETE FROM messages WHERE room = $1 AND seq < LEAST($2, COALESCE( \
             (SELECT seq FROM messages WHERE room = $1 ORDER BY seq LIMIT 1 OFFSET $3), $2))",
        )
        .bind(room)
        .bind(keep_from)
        .bind(batch_rows)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let took = started.elapsed();
        report.longest_batch = report.longest_batch.max(took);
        report.write_time += took;
        report.batches += 1;
        *deleted += rows;
        if rows < batch_rows as u64 {
            return Ok(());
        }
    }
}

/// The rooms that have messages `plan` no longer keeps, each with the first sequence number it keeps,
/// by name; reads only, each rule through an index (as on SQLite).
async fn prune_plan(
    conn: &mut PgConnection,
    plan: Plan,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let mut cuts = Vec::new();
    if plan.max_messages > 0 {
        cuts.extend(
            sqlx::query_as(
                "SELECT name, last_seq - $1 + 1 FROM rooms WHERE last_seq > $1 \
                 AND (SELECT MIN(seq) FROM messages WHERE messages.room = rooms.name) \
                     <= last_seq - $1",
            )
            .bind(plan.max_messages)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    if let Some(cutoff) = plan.cutoff_ms {
        cuts.extend(
            sqlx::query_as("SELECT room, MAX(seq) + 1 FROM messages WHERE ts < $1 GROUP BY room")
                .bind(cutoff)
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    Ok(super::keep_from(cuts))
}

/// Applies an edit or delete to the message it changes (a delete also empties the quotes of it).
async fn change_message(
    tx: &mut PgConnection,
    room: &str,
    target: i64,
    kind: EntryKind,
    text: &str,
) -> Result<(), sqlx::Error> {
    match kind {
        EntryKind::Message | EntryKind::React | EntryKind::Unreact => return Ok(()),
        EntryKind::Edit => {
            sqlx::query(
                "UPDATE messages SET text = $3, edited = true WHERE room = $1 AND seq = $2",
            )
            .bind(room)
            .bind(target)
            .bind(text)
            .execute(&mut *tx)
            .await?;
        }
        EntryKind::Delete => {
            sqlx::query(
                "UPDATE messages SET text = '', deleted = true WHERE room = $1 AND seq = $2",
            )
            .bind(room)
            .bind(target)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE messages SET reply_text = '' WHERE room = $1 AND reply_to = $2")
                .bind(room)
                .bind(target)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

/// Toggles `new`'s reaction (its `text`, by its author) to message `target` of `room`: which way it
/// went, or why it could not (a new emoji past [`MAX_REACTION_KINDS`] on that message).
async fn toggle_reaction(
    tx: &mut PgConnection,
    room: &str,
    new: &NewMessage,
    target: i64,
) -> Result<Result<EntryKind, Refusal>, sqlx::Error> {
    let had = sqlx::query(
        "DELETE FROM reactions WHERE room = $1 AND seq = $2 AND emoji = $3 AND person_id = $4",
    )
    .bind(room)
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
        "SELECT COUNT(DISTINCT emoji), COUNT(*) FILTER (WHERE emoji = $3) FROM reactions \
         WHERE room = $1 AND seq = $2",
    )
    .bind(room)
    .bind(target)
    .bind(&new.text)
    .fetch_one(&mut *tx)
    .await?;
    if this_one == 0 && kinds >= MAX_REACTION_KINDS as i64 {
        return Ok(Err(Refusal::TooManyReactions));
    }
    sqlx::query(
        "INSERT INTO reactions (room, seq, emoji, person_id, name, ts) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(room)
    .bind(target)
    .bind(&new.text)
    .bind(new.author_id as i64)
    .bind(&new.author)
    .bind(new.ts as i64)
    .execute(&mut *tx)
    .await?;
    Ok(Ok(EntryKind::React))
}
