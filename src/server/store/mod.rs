//! The history store: every accepted message, in SQLite (one node: `<data-dir>/chat.db`, the default) or
//! in PostgreSQL (`--database-url postgres://…`: the source of truth several nodes share).
//!
//! One interface, [`Store`], whatever the engine: the rest of the server never knows which it runs on.
//! Each engine has its own module ([`sqlite`], [`postgres`]), its own migrations
//! (`migrations/sqlite/`, `migrations/postgres/`) and the same guarantees:
//!
//! - **Sequence numbers**: each room counts its messages 1, 2, 3… with no gaps. The number is taken in
//!   the same transaction that stores the message (from `rooms.last_seq`), so a failed transaction gives
//!   none away, retention can delete old messages without a number ever being reused, and (PostgreSQL)
//!   several nodes writing to one room take turns on the room's row: no gap, no number given twice.
//! - **Durability**: [`Store::append`] returns once its transaction has committed (SQLite: WAL with
//!   `synchronous = FULL`; PostgreSQL: its own WAL, `synchronous_commit` as the server is configured).
//!   The writer (`history.rs`) acknowledges a message only after that, so an acknowledged message
//!   survives a `kill -9` of this process.
//! - **Idempotency**: a message with a `client_id` is stored once per (room, sender, client id); storing
//!   it again returns the sequence number it already has, even when the two copies reach two nodes at
//!   once.
//! - **Migrations**: embedded in the binary and applied by sqlx's migrator at start (on PostgreSQL under
//!   its advisory lock, so nodes starting together migrate once).
//! - **Changes are entries** of the log: an edit or delete takes its own `seq` and updates the message
//!   it names in the same transaction; only that message's author may make one (else
//!   [`Refusal::NotAuthor`]), and a reply keeps a quote of what it answers. What an entry names must
//!   have been stored by an earlier batch (a client learns a `seq` only from its acknowledgement).
//! - **Search** ([`Store::search`], [`search`]): full-text, of one room or all, over messages as they
//!   are now (SQLite: an FTS5 index kept in step by triggers; PostgreSQL: a GIN index on
//!   `to_tsvector('simple', text)`). Both index the history stored before they existed.
//! - **Retention** ([`Store::prune`]): deletes each room's oldest messages in short transactions of at
//!   most [`PRUNE_BATCH_ROWS`] rows, so the writer's batches (and so every acknowledgement) wait for one
//!   small delete at most, never for the whole pass.

mod postgres;
mod search;
mod sqlite;

pub use search::SearchQuery;

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

use crate::api::{SearchCursor, SearchHit};
use crate::protocol::{
    ChatMessage, EntryKind, FrameKind, Quote, Reaction, ReadPosition, MAX_REACTION_KINDS,
    MAX_REACTION_NAMES,
};

/// The operator (through the admin API): the author of the deletes they make, which may delete
/// anyone's message. No session is ever this person.
pub const OPERATOR: PersonId = 0;

/// Identifies a person (all the connections of one session): the `author_id` of their messages.
pub type PersonId = u64;

/// A log entry on its way into the store: a message (perhaps a reply), or an edit or delete of one.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room: String,
    pub author_id: PersonId,
    pub author: String,
    /// The message's text, or an edit's new text (empty for a delete).
    pub text: String,
    pub ts: u64,
    pub client_id: Option<String>,
    pub kind: EntryKind,
    /// An edit's or delete's message (which must be its author's), or the message a reply answers.
    pub target: Option<u64>,
}

impl NewMessage {
    /// What an error about this entry says it answers: the sender's frame.
    pub fn reference(&self) -> crate::protocol::FrameRef {
        crate::protocol::FrameRef {
            kind: match self.kind {
                EntryKind::Message => FrameKind::Message,
                EntryKind::Edit => FrameKind::Edit,
                EntryKind::Delete => FrameKind::Delete,
                EntryKind::React | EntryKind::Unreact => FrameKind::React,
            },
            room: Some(self.room.clone()),
            client_id: self.client_id.clone(),
        }
    }

    /// What the store holds once this entry is stored as `seq` (a reply with the `quote` of what it
    /// answers).
    fn stored_as(&self, seq: u64, quote: Option<Quote>) -> ChatMessage {
        ChatMessage {
            seq,
            from: self.author.clone(),
            text: self.text.clone(),
            ts: self.ts,
            client_id: self.client_id.clone(),
            kind: self.kind,
            target: self.target.filter(|_| self.kind != EntryKind::Message),
            reply_to: quote,
            edited: false,
            deleted: false,
            html: formatted(self.kind, false, &self.text),
            reactions: Vec::new(),
        }
    }
}

/// A message's or an edit's text as HTML, if it has formatting.
fn formatted(kind: EntryKind, deleted: bool, text: &str) -> Option<String> {
    match kind {
        EntryKind::Message | EntryKind::Edit if !deleted => super::markdown::render(text),
        _ => None,
    }
}

/// Why an entry was not stored: what it names is not there, or not its author's to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such message in the room (never, deleted, or gone by retention).
    NoSuchMessage,
    /// An edit or delete of someone else's message.
    NotAuthor,
    /// A new emoji on a message that has [`MAX_REACTION_KINDS`] different ones already.
    TooManyReactions,
}

/// What storing one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per entry of a batch, and the large one is by far the usual: boxing it would cost \
              an allocation each"
)]
pub enum Stored {
    /// Stored now, as this.
    New(ChatMessage),
    /// Its `client_id` was stored before, as this sequence number: nothing new was stored.
    Duplicate { seq: u64 },
    /// Not stored (and no number taken).
    Refused(Refusal),
}

/// A ban the operator set: of a person, or of a name (by `name_key`), from one `room` or (`None`) the
/// whole server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ban {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<PersonId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_key: Option<String>,
    /// The name as the operator gave it (for people reading the list).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub reason: String,
    /// When it was set, in ms since the Unix epoch.
    pub ts: u64,
}

/// A ban as both engines' queries return it.
type BanRow = (
    i64,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
    String,
    i64,
);

fn ban((id, person, name_key, name, room, reason, ts): BanRow) -> Ban {
    Ban {
        id,
        person: person.map(|p| p as PersonId),
        name_key,
        name,
        room,
        reason,
        ts: ts as u64,
    }
}

/// What a message an entry names is, as the store has it: its author, and whether it is deleted.
struct Named {
    author_id: PersonId,
    from: String,
    text: String,
    deleted: bool,
}

impl Named {
    /// Whether `new` may be stored against this message (`None`: not in the room, or not a message).
    fn check(named: Option<&Named>, new: &NewMessage) -> Result<Option<Quote>, Refusal> {
        let Some(target) = new.target else {
            return Ok(None);
        };
        let named = named.filter(|n| !n.deleted).ok_or(Refusal::NoSuchMessage)?;
        match new.kind {
            EntryKind::Message => Ok(Some(Quote::of(target, named.from.clone(), &named.text))),
            EntryKind::Edit | EntryKind::Delete
                if named.author_id != new.author_id && new.author_id != OPERATOR =>
            {
                Err(Refusal::NotAuthor)
            }
            EntryKind::Edit | EntryKind::Delete => Ok(None),
            // Anyone may react to a message that is there.
            EntryKind::React | EntryKind::Unreact => Ok(None),
        }
    }
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
///
/// An enum over the engines rather than a trait object: there are two, both known when this is
/// compiled, and a trait with async methods would need a boxed future per call (or `async_trait`) to be
/// object-safe, where a `match` costs nothing and keeps `Store` a plain value. Adding an engine means one
/// more variant here and one more arm in each method below, which the compiler checks.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
}

#[derive(Clone, Debug)]
enum Engine {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Calls the same method on whichever engine `$store` runs on.
macro_rules! on_engine {
    ($store:expr, $engine:ident => $call:expr) => {
        match &$store.engine {
            Engine::Sqlite($engine) => $call,
            Engine::Postgres($engine) => $call,
        }
    };
}

impl Store {
    /// Opens the store `database_url` names (`sqlite://PATH`, `postgres://…` or `postgresql://…`),
    /// or, without one, SQLite in `data_dir/chat.db` (creating the directory and the file if needed),
    /// and brings its schema up to date.
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Store> {
        let engine = match database_url {
            None => Engine::Sqlite(sqlite::SqliteStore::open_dir(data_dir).await?),
            Some(url) if url.starts_with("sqlite:") => {
                Engine::Sqlite(sqlite::SqliteStore::open_url(url).await?)
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Engine::Postgres(postgres::PgStore::connect(url).await?)
            }
            Some(url) => {
                // Only the scheme: the rest may hold a password.
                let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
                anyhow::bail!(
                    "--database-url: unknown scheme {scheme:?}; \
                     use sqlite://PATH, postgres://… or postgresql://…"
                )
            }
        };
        Ok(Store { engine })
    }

    /// Opens (creating it and `dir` if needed) the SQLite store `dir/chat.db`: the default.
    pub async fn open(dir: &Path) -> anyhow::Result<Store> {
        Store::connect(None, dir).await
    }

    /// Stores `batch` in one transaction (one disk sync for all of it), in order; returns what became
    /// of each message. All or nothing: on error nothing was stored.
    pub async fn append<M: Borrow<NewMessage>>(
        &self,
        batch: &[M],
    ) -> Result<Vec<Stored>, sqlx::Error> {
        on_engine!(self, store => store.append(batch).await)
    }

    /// Up to `limit` messages of `room` after sequence number `after`, oldest first.
    pub async fn after(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let after = clamp(after);
        let messages = on_engine!(self, store => store.after(room, after, clamp(limit)).await)?;
        self.with_reactions(room, messages).await
    }

    /// The `limit` messages of `room` just before sequence number `before` (the newest if `None`),
    /// oldest first.
    pub async fn before(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let before = clamp(before.unwrap_or(u64::MAX));
        let mut messages =
            on_engine!(self, store => store.before(room, before, clamp(limit)).await)?;
        messages.reverse();
        self.with_reactions(room, messages).await
    }

    /// Like [`Store::before`], but also at most `max_bytes` of messages (their text, sender and client
    /// id, plus `per_message` bytes each for the rest of their JSON): the newest that fit, oldest first,
    /// and always at least one, so paging back always gets somewhere. The sum is taken in the database,
    /// so a page of large messages never leaves it whole.
    pub async fn before_within(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
        max_bytes: usize,
        per_message: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let page = PageWithin {
            before: clamp(before.unwrap_or(u64::MAX)),
            limit: clamp(limit),
            max_bytes: clamp(max_bytes),
            per_message: clamp(per_message),
        };
        let mut messages = on_engine!(self, store => store.before_within(room, page).await)?;
        messages.reverse();
        self.with_reactions(room, messages).await
    }

    /// The oldest messages of `room` after sequence number `after`, oldest first: at most `limit`, and
    /// only as many as fit in `max_bytes` (text, sender and `client_id`, plus `per_message` each), but
    /// always the first. So a replay never reads more than it may send.
    pub async fn after_within(
        &self,
        room: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
        per_message: usize,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let page = PageWithin {
            before: clamp(after),
            limit: clamp(limit),
            max_bytes: clamp(max_bytes),
            per_message: clamp(per_message),
        };
        let messages = on_engine!(self, store => store.after_within(room, page).await)?;
        self.with_reactions(room, messages).await
    }

    /// Fills in the reactions of `messages` (of `room`, oldest first), as they are now: one read for
    /// the whole run, none when no message there could have any.
    async fn with_reactions(
        &self,
        room: &str,
        mut messages: Vec<ChatMessage>,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let shown = |m: &&mut ChatMessage| m.kind == EntryKind::Message && !m.deleted;
        let (Some(first), Some(last)) = (
            messages.iter_mut().find(shown).map(|m| m.seq),
            messages.iter_mut().rev().find(shown).map(|m| m.seq),
        ) else {
            return Ok(messages);
        };
        let rows =
            on_engine!(self, store => store.reactions(room, clamp(first), clamp(last)).await)?;
        let mut by_seq: BTreeMap<u64, Vec<Reaction>> = BTreeMap::new();
        for (seq, emoji, name) in rows {
            let reactions = by_seq.entry(seq as u64).or_default();
            if !reactions.iter().any(|r| r.emoji == emoji) {
                if reactions.len() >= MAX_REACTION_KINDS {
                    continue;
                }
                reactions.push(Reaction {
                    emoji: emoji.clone(),
                    ..Reaction::default()
                });
            }
            if let Some(reaction) = reactions.iter_mut().find(|r| r.emoji == emoji) {
                reaction.count += 1;
                if reaction.names.len() < MAX_REACTION_NAMES {
                    reaction.names.push(name);
                }
            }
        }
        for message in messages
            .iter_mut()
            .filter(|m| m.kind == EntryKind::Message && !m.deleted)
        {
            if let Some(reactions) = by_seq.remove(&message.seq) {
                message.reactions = reactions;
            }
        }
        Ok(messages)
    }

    /// Stores `ban` (its `id` is ignored); returns it with the id it got.
    pub async fn add_ban(&self, ban: Ban) -> Result<Ban, sqlx::Error> {
        let id = on_engine!(self, store => store.add_ban(&ban).await)?;
        Ok(Ban { id, ..ban })
    }

    /// Lifts ban `id`; false if there was none.
    pub async fn remove_ban(&self, id: i64) -> Result<bool, sqlx::Error> {
        on_engine!(self, store => store.remove_ban(id).await)
    }

    /// Every ban, oldest first.
    pub async fn bans(&self) -> Result<Vec<Ban>, sqlx::Error> {
        let rows = on_engine!(self, store => store.bans().await)?;
        Ok(rows.into_iter().map(ban).collect())
    }

    /// The person who last wrote as `name`, if anyone did (how the operator names a person who is not
    /// online here).
    pub async fn last_author(&self, name: &str) -> Result<Option<PersonId>, sqlx::Error> {
        let id = on_engine!(self, store => store.last_author(name).await)?;
        Ok(id.map(|id| id as PersonId))
    }

    /// Moves `person`'s read position in `room` to `seq`, unless it is there or further already.
    pub async fn set_read(
        &self,
        person: PersonId,
        room: &str,
        seq: u64,
        ts: u64,
    ) -> Result<(), sqlx::Error> {
        let (person, seq, ts) = (clamp(person), clamp(seq), clamp(ts));
        on_engine!(self, store => store.set_read(person, room, seq, ts).await)
    }

    /// `person`'s read positions, the rooms read last first (at most `limit`), each with how many
    /// messages came after it (counted up to `MAX_UNREAD`).
    pub async fn read_positions(
        &self,
        person: PersonId,
        limit: usize,
    ) -> Result<Vec<(String, ReadPosition)>, sqlx::Error> {
        let rows =
            on_engine!(self, store => store.read_positions(clamp(person), clamp(limit)).await)?;
        Ok(rows
            .into_iter()
            .map(|(room, seq, unread)| {
                let position = ReadPosition {
                    seq: seq.max(0) as u64,
                    unread: unread.max(0) as u64,
                };
                (room, position)
            })
            .collect())
    }

    /// Messages with every word of `query`, in `room` (all rooms if `None`), as they are now (deleted
    /// ones never), newest first (by `ts`, then room and `seq`, descending), after the cursor `before`:
    /// at most `limit`, and only as many as fit in `max_bytes` (text, sender and room, plus
    /// `per_hit` each), but always the first. Each with where its text matched.
    pub async fn search(
        &self,
        query: &SearchQuery,
        room: Option<&str>,
        before: Option<&SearchCursor>,
        limit: usize,
        max_bytes: usize,
        per_hit: usize,
    ) -> Result<Found, sqlx::Error> {
        let limit = limit.max(1);
        let page = SearchWithin {
            room,
            before: before.map(|at| (clamp(at.ts), at.room.as_str(), clamp(at.seq))),
            // One more than asked: whether it exists says if there is a next page.
            limit: clamp(limit.saturating_add(1)),
            max_bytes: clamp(max_bytes),
            per_hit: clamp(per_hit),
        };
        let rows = match &self.engine {
            Engine::Sqlite(store) => store.search(&query.fts5(), page).await?,
            Engine::Postgres(store) => store.search(&query.plain(), page).await?,
        };
        // Rows the query fetched before the budget cut (the same in every row).
        let fetched = rows.first().map_or(0, |row| row.6.max(0) as usize);
        let more = rows.len() > limit || rows.len() < fetched;
        let hits: Vec<SearchHit> = rows.into_iter().take(limit).map(search::hit).collect();
        Ok(Found { hits, more })
    }

    /// The oldest stored and the last given sequence numbers of `room`.
    pub async fn bounds(&self, room: &str) -> Result<RoomBounds, sqlx::Error> {
        let (oldest, last) = on_engine!(self, store => store.bounds(room).await)?;
        Ok(RoomBounds {
            oldest_seq: oldest.unwrap_or(0) as u64,
            last_seq: last.unwrap_or(0) as u64,
        })
    }

    /// A page of the room list: rooms with stored messages, most messages first (then by name, byte by
    /// byte), leaving out those in `skip` (the caller lists them first: they have people in them).
    /// Ordered and paged in the query, so however many rooms exist, the busiest are on the first page.
    pub async fn rooms_by_messages(
        &self,
        skip: &[String],
        limit: usize,
        offset: usize,
    ) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let (limit, offset) = (clamp(limit), clamp(offset));
        let rows = on_engine!(self, store => store.rooms_by_messages(skip, limit, offset).await)?;
        Ok(room_sizes(rows))
    }

    /// The last sequence numbers (message counts) of those of `names` that have stored messages.
    pub async fn room_sizes(&self, names: &[String]) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let rows = on_engine!(self, store => store.room_sizes(names).await)?;
        Ok(room_sizes(rows))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_engine!(self, store => store.ping().await)
    }

    /// The key session tokens are signed with, when this store is shared by several nodes (PostgreSQL),
    /// which must all sign and check with the same one: the key stored, or `fresh` if none was (two
    /// nodes starting at once store one and both read that one back), or `fresh` in its place if
    /// `replace`. `None`: the store is this node's own (SQLite), and the key lives beside it in the
    /// data directory (`session.rs`).
    pub async fn shared_session_key(
        &self,
        fresh: [u8; 32],
        replace: bool,
    ) -> anyhow::Result<Option<[u8; 32]>> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(None),
            Engine::Postgres(store) => store.session_key(fresh, replace).await.map(Some),
        }
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
        on_room: impl FnMut(&str),
    ) -> Result<PruneReport, sqlx::Error> {
        if retention.max_messages == 0 && retention.max_age.is_zero() {
            return Ok(PruneReport::default());
        }
        let plan = Plan {
            max_messages: clamp(retention.max_messages),
            // Only the age rule needs it: a cutoff of 0 (no message is older) otherwise.
            cutoff_ms: match retention.max_age {
                age if age.is_zero() => None,
                age => Some(clamp(now_ms.saturating_sub(age.as_millis() as u64))),
            },
            batch_rows: clamp(batch_rows.max(1)),
        };
        on_engine!(self, store => store.prune(plan, on_room).await)
    }
}

/// [`Store::before_within`]'s bounds, as the database's signed integers.
#[derive(Clone, Copy, Debug)]
struct PageWithin {
    /// The bound the page stops at (exclusive): `before` for pages back in time, `after` for
    /// pages forward.
    before: i64,
    limit: i64,
    max_bytes: i64,
    per_message: i64,
}

/// A page of search hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Newest first.
    pub hits: Vec<SearchHit>,
    /// More hits come after the last of these (the limit or the byte budget cut the page short).
    pub more: bool,
}

/// [`Store::search`]'s bounds, as the database's signed integers.
#[derive(Clone, Copy, Debug)]
struct SearchWithin<'a> {
    room: Option<&'a str>,
    /// Hits before this (ts, room, seq), in the order of the results.
    before: Option<(i64, &'a str, i64)>,
    limit: i64,
    max_bytes: i64,
    per_hit: i64,
}

impl SearchWithin<'_> {
    /// `before` as three query parameters, each NULL if there is none.
    fn before_parts(&self) -> (Option<i64>, Option<&str>, Option<i64>) {
        match self.before {
            Some((ts, room, seq)) => (Some(ts), Some(room), Some(seq)),
            None => (None, None, None),
        }
    }
}

/// A retention pass, as the database's signed integers.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Newest messages kept per room (0: no count rule).
    max_messages: i64,
    /// Messages stamped before this go (`None`: no age rule).
    cutoff_ms: Option<i64>,
    /// Most rows one delete transaction takes (at least 1).
    batch_rows: i64,
}

/// Both engines store integers as signed 64-bit: anything larger is as good as the largest.
fn clamp<N: TryInto<i64>>(n: N) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The columns of a log entry, in [`Row`]'s order, for both engines' queries.
macro_rules! entry_columns {
    () => {
        "seq, author, text, ts, client_id, kind, target, reply_to, reply_from, reply_text, edited, \
         deleted"
    };
}
use entry_columns;

/// A log entry as both engines' queries return it (see [`entry_columns`]).
type Row = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    bool,
    bool,
);

fn message(row: Row) -> ChatMessage {
    let (seq, from, text, ts, client_id, kind, target, reply_to, reply_from, reply_text) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let kind = entry_kind(&kind);
    let html = formatted(kind, row.11, &text);
    ChatMessage {
        seq: seq as u64,
        from,
        text,
        ts: ts as u64,
        client_id,
        kind,
        target: target.map(|t| t as u64),
        reply_to: reply_to.map(|seq| Quote {
            seq: seq as u64,
            from: reply_from.unwrap_or_default(),
            text: reply_text.unwrap_or_default(),
        }),
        edited: row.10,
        deleted: row.11,
        html,
        reactions: Vec::new(),
    }
}

/// How both engines store an [`EntryKind`].
fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Message => "message",
        EntryKind::Edit => "edit",
        EntryKind::Delete => "delete",
        EntryKind::React => "react",
        EntryKind::Unreact => "unreact",
    }
}

fn entry_kind(name: &str) -> EntryKind {
    match name {
        "edit" => EntryKind::Edit,
        "delete" => EntryKind::Delete,
        "react" => EntryKind::React,
        "unreact" => EntryKind::Unreact,
        _ => EntryKind::Message,
    }
}

/// Each room's first kept sequence number, from the cuts of both retention rules (the later cut wins),
/// by name.
fn keep_from(cuts: Vec<(String, i64)>) -> BTreeMap<String, i64> {
    let mut keep_from = BTreeMap::new();
    for (room, first_kept) in cuts {
        let entry = keep_from.entry(room).or_insert(first_kept);
        *entry = (*entry).max(first_kept);
    }
    keep_from
}

fn room_sizes(rows: Vec<(String, i64)>) -> Vec<(String, u64)> {
    rows.into_iter()
        .map(|(name, last)| (name, last as u64))
        .collect()
}

/// One engine's schema, oldest first: (version, description, SQL). A migration that has run must never
/// change (sqlx checks its checksum, the SHA-384 of the SQL).
type MigrationList = &'static [(i64, &'static str, &'static str)];

/// Migrations compiled into the binary (sqlx's `migrate!` would need its macros, which build a second
/// copy of much of sqlx).
#[derive(Debug)]
struct EmbeddedMigrations(MigrationList);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
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

#[cfg(test)]
mod tests;
