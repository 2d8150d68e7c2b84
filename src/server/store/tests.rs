//! The store's tests. Each runs on both engines (as `<test>::sqlite` and `<test>::postgres`, the latter
//! on a private PostgreSQL server of its own); a few are about one engine.

use std::path::Path;
use std::time::Instant;

use super::search::BadQuery;
use super::*;

#[allow(dead_code)] // the integration tests use all of it, these tests a part
#[path = "../../../tests/common/postgres.rs"]
mod pg_harness;
use pg_harness::PgServer;

/// Where a test's store lives.
enum Place {
    /// A temporary data directory: SQLite in `chat.db`.
    Sqlite(tempfile::TempDir),
    /// A fresh database on a private PostgreSQL server, stopped when this drops.
    Postgres { _server: PgServer, url: String },
}

impl Place {
    async fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Place {
        let server = PgServer::start().await;
        let url = server.create_database().await;
        Place::Postgres {
            _server: server,
            url,
        }
    }

    /// A handle on the store, with a pool of its own: as a restarted server, or another node, opens it.
    async fn open(&self) -> Store {
        match self {
            Place::Sqlite(dir) => Store::open(dir.path()).await.unwrap(),
            Place::Postgres { url, .. } => Store::connect(Some(url), Path::new("unused"))
                .await
                .unwrap(),
        }
    }

    fn engine(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "SQLite",
            Place::Postgres { .. } => "PostgreSQL",
        }
    }
}

/// Runs each test body (an `async fn(Place)`) on both engines: as `<body>::sqlite` and
/// `<body>::postgres`.
macro_rules! on_both_engines {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn sqlite() {
                super::$body(super::Place::sqlite().await).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$body(super::Place::postgres().await).await
            }
        }
    )*};
}

on_both_engines!(
    sequences_count_per_room_and_resends_are_stored_once,
    retention_never_lets_a_number_be_reused,
    retention_deletes_exactly_the_old_rows_of_each_room_in_bounded_batches,
    pages_within_a_byte_budget_and_room_lists,
    the_session_key_is_the_stores_only_when_the_store_is_shared,
    edits_and_deletes_are_entries_of_the_log_and_change_the_message,
    reactions_toggle_count_each_person_once_and_go_with_their_message,
    search_finds_words_in_messages_as_they_are_now,
    search_pages_newest_first_within_a_byte_budget,
    hostile_search_queries_are_words_or_refused_never_errors,
    search_finds_the_history_stored_before_it_existed,
);

fn new(room: &str, text: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.into(),
        author_id: 7,
        author: "ann".into(),
        text: text.into(),
        ts: 1_000,
        client_id: client_id.map(Into::into),
        kind: EntryKind::Message,
        target: None,
    }
}

/// One retention pass, in batches of the usual size.
async fn prune(store: &Store, retention: Retention, now_ms: u64) -> PruneReport {
    store
        .prune(retention, now_ms, PRUNE_BATCH_ROWS, |_| {})
        .await
        .unwrap()
}

/// An entry by person `author_id` of kind `kind` naming message `target`.
fn change(
    kind: EntryKind,
    author_id: PersonId,
    target: u64,
    text: &str,
    id: Option<&str>,
) -> NewMessage {
    NewMessage {
        author_id,
        kind,
        target: Some(target),
        ..new("r", text, id)
    }
}

async fn edits_and_deletes_are_entries_of_the_log_and_change_the_message(place: Place) {
    let store = place.open().await;
    let engine = place.engine();
    // 1: ann's; 2: bob's reply to it (with a quote of its first line).
    let bob_reply = NewMessage {
        author_id: 8,
        author: "bob".into(),
        target: Some(1),
        ..new("r", "yes!", None)
    };
    // (In two batches: a client learns a `seq` from its acknowledgement, so what it names was
    // committed before.)
    store
        .append(&[new("r", "hello\nsecond line", None)])
        .await
        .unwrap();
    let first = store.append(&[bob_reply]).await.unwrap();
    let Stored::New(reply) = &first[0] else {
        panic!("{engine}: {first:?}")
    };
    let quote = reply.reply_to.clone().expect("a quote");
    assert_eq!(
        (quote.seq, quote.from.as_str(), quote.text.as_str()),
        (1, "ann", "hello")
    );
    // Only the author may change a message; a missing one cannot be changed or answered. Refusals
    // take no number. In one batch, in order: the edit stands, a second copy of it (same client id)
    // repeats it, the delete of bob's reply by ann is refused, then ann deletes her own.
    let outcomes = store
        .append(&[
            change(EntryKind::Edit, 7, 1, "hello, edited", Some("e1")),
            change(EntryKind::Edit, 7, 1, "hello, edited", Some("e1")),
            change(EntryKind::Delete, 7, 2, "", None),
            change(EntryKind::Edit, 7, 99, "nothing there", None),
            NewMessage {
                target: Some(99),
                ..new("r", "a reply to nothing", None)
            },
        ])
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[0], Stored::New(m) if m.seq == 3 && m.kind == EntryKind::Edit && m.target == Some(1)),
        "{engine}: {outcomes:?}"
    );
    assert_eq!(outcomes[1], Stored::Duplicate { seq: 3 }, "{engine}");
    assert_eq!(outcomes[2], Stored::Refused(Refusal::NotAuthor), "{engine}");
    assert_eq!(
        outcomes[3],
        Stored::Refused(Refusal::NoSuchMessage),
        "{engine}"
    );
    assert_eq!(
        outcomes[4],
        Stored::Refused(Refusal::NoSuchMessage),
        "{engine}"
    );
    let deleted = store
        .append(&[change(EntryKind::Delete, 7, 1, "", None)])
        .await
        .unwrap();
    assert!(
        matches!(&deleted[0], Stored::New(m) if m.seq == 4),
        "{engine}: {deleted:?}"
    );
    // A deleted message can no longer be changed or answered.
    let late = store
        .append(&[change(EntryKind::Edit, 7, 1, "too late", None)])
        .await
        .unwrap();
    assert_eq!(late[0], Stored::Refused(Refusal::NoSuchMessage), "{engine}");

    // Catching up from 0 replays everything in order: the messages as they are now, and the changes.
    let all = store.after("r", 0, 100).await.unwrap();
    let kinds: Vec<(u64, EntryKind)> = all.iter().map(|m| (m.seq, m.kind)).collect();
    assert_eq!(
        kinds,
        [
            (1, EntryKind::Message),
            (2, EntryKind::Message),
            (3, EntryKind::Edit),
            (4, EntryKind::Delete)
        ],
        "{engine}"
    );
    assert!(
        all[0].deleted && all[0].text.is_empty() && all[0].edited,
        "{engine}: {:?}",
        all[0]
    );
    let quote = all[1].reply_to.clone().expect("the reply keeps its quote");
    assert_eq!(
        (quote.seq, quote.text.as_str()),
        (1, ""),
        "{engine}: emptied with its message"
    );
    // A page of history gives the messages only, as they are now.
    let page = store.before("r", None, 100).await.unwrap();
    let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2], "{engine}");
    let within = store
        .before_within("r", None, 100, 1 << 20, 0)
        .await
        .unwrap();
    assert_eq!(within, page, "{engine}");
    assert_eq!(store.bounds("r").await.unwrap().last_seq, 4, "{engine}");
}

/// Person `author_id` (named `name`) toggles `emoji` on message `target` of room `r`.
fn reaction(author_id: PersonId, name: &str, target: u64, emoji: &str) -> NewMessage {
    NewMessage {
        author: name.into(),
        ..change(EntryKind::React, author_id, target, emoji, None)
    }
}

async fn reactions_toggle_count_each_person_once_and_go_with_their_message(place: Place) {
    let store = place.open().await;
    let engine = place.engine();
    store
        .append(&[new("r", "react to me", None)])
        .await
        .unwrap();
    // Ann reacts, bob reacts, ann again (a second tab's toggle takes hers back), cy reacts with
    // another emoji. The entries say which way each toggle went.
    let toggles = store
        .append(&[
            reaction(7, "ann", 1, "👍"),
            reaction(8, "bob", 1, "👍"),
            reaction(7, "ann", 1, "👍"),
            reaction(9, "cy", 1, "🎉"),
        ])
        .await
        .unwrap();
    let kinds: Vec<EntryKind> = toggles
        .iter()
        .map(|t| match t {
            Stored::New(m) => m.kind,
            other => panic!("{engine}: {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            EntryKind::React,
            EntryKind::React,
            EntryKind::Unreact,
            EntryKind::React
        ],
        "{engine}"
    );
    let page = store.before("r", None, 10).await.unwrap();
    let now: Vec<(String, usize, Vec<String>)> = page[0]
        .reactions
        .iter()
        .map(|r| (r.emoji.clone(), r.count, r.names.clone()))
        .collect();
    assert_eq!(
        now,
        [
            ("👍".into(), 1, vec!["bob".to_string()]),
            ("🎉".into(), 1, vec!["cy".to_string()])
        ],
        "{engine}"
    );
    // A catch-up carries the toggles in order, and the message as it is now.
    let all = store.after("r", 0, 10).await.unwrap();
    assert_eq!(all.len(), 5, "{engine}");
    assert_eq!(all[0].reactions.len(), 2, "{engine}");
    // No reaction to a message that is not there; at most so many different emoji on one.
    let missing = store.append(&[reaction(7, "ann", 99, "👍")]).await.unwrap();
    assert_eq!(
        missing[0],
        Stored::Refused(Refusal::NoSuchMessage),
        "{engine}"
    );
    let many: Vec<NewMessage> = (0..MAX_REACTION_KINDS)
        .map(|i| reaction(7, "ann", 1, &format!("e{i}")))
        .collect();
    let outcomes = store.append(&many).await.unwrap();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Stored::Refused(_)))
        .count();
    assert_eq!(
        refused, 2,
        "{engine}: 20 kinds, 2 there already: {outcomes:?}"
    );
    assert_eq!(
        outcomes.last(),
        Some(&Stored::Refused(Refusal::TooManyReactions)),
        "{engine}"
    );
    // Deleting the message takes its reactions out of every page.
    store
        .append(&[change(EntryKind::Delete, 7, 1, "", None)])
        .await
        .unwrap();
    let page = store.before("r", None, 10).await.unwrap();
    assert!(
        page[0].deleted && page[0].reactions.is_empty(),
        "{engine}: {:?}",
        page[0]
    );
}

/// A message in `room` stamped `ts`.
fn at(room: &str, text: &str, ts: u64) -> NewMessage {
    NewMessage {
        ts,
        ..new(room, text, None)
    }
}

/// A search with the API's budget: (room, seq) of each hit, newest first.
async fn found(store: &Store, query: &str, room: Option<&str>) -> Vec<(String, u64)> {
    let query = SearchQuery::parse(query).unwrap();
    let found = store
        .search(&query, room, None, 50, 1 << 20, 100)
        .await
        .unwrap();
    found.hits.into_iter().map(|h| (h.room, h.seq)).collect()
}

/// On SQLite, that the FTS5 index holds exactly the words of the messages it should (a change that
/// left an entry behind would go unseen in results, the join on its id dropping it, and corrupt it).
async fn search_index_is_consistent(store: &Store) {
    if let Engine::Sqlite(sqlite) = &store.engine {
        sqlx::query(
            "INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)",
        )
        .execute(sqlite.pool())
        .await
        .expect("the index matches the messages");
        let (indexed, findable): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM message_search_ids), \
                    (SELECT COUNT(*) FROM messages WHERE kind = 'message' AND deleted = 0)",
        )
        .fetch_one(sqlite.pool())
        .await
        .unwrap();
        assert_eq!(indexed, findable);
    }
}

fn hits(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter()
        .map(|&(room, seq)| (room.to_string(), seq))
        .collect()
}

async fn search_finds_words_in_messages_as_they_are_now(place: Place) {
    let store = place.open().await;
    let engine = place.engine();
    store
        .append(&[
            at("a", "Hello world", 1),
            at("a", "the quick brown fox", 2),
            at("b", "hello from b", 3),
            at("a", "HELLO again, hello!", 4),
            at("b", "Grüße aus\nBerlin", 5),
        ])
        .await
        .unwrap();
    // Any case; all rooms, newest first, or one room only.
    let everywhere = hits(&[("a", 3), ("b", 1), ("a", 1)]);
    assert_eq!(found(&store, "hello", None).await, everywhere, "{engine}");
    assert_eq!(found(&store, "hElLo", None).await, everywhere, "{engine}");
    assert_eq!(
        found(&store, "hello", Some("a")).await,
        hits(&[("a", 3), ("a", 1)]),
        "{engine}"
    );
    assert_eq!(found(&store, "hello", Some("b")).await, hits(&[("b", 1)]));
    assert!(found(&store, "hello", Some("c")).await.is_empty());
    // Every word, anywhere in the message.
    assert_eq!(
        found(&store, "WORLD hello", None).await,
        hits(&[("a", 1)]),
        "{engine}"
    );
    assert!(
        found(&store, "hello fox", None).await.is_empty(),
        "{engine}"
    );
    assert!(
        found(&store, "hell", None).await.is_empty(),
        "words, not prefixes"
    );
    assert_eq!(found(&store, "grüße berlin", None).await, hits(&[("b", 2)]));

    // Each hit as the store has it, with where it matched, in bytes.
    let query = SearchQuery::parse("hello berlin").unwrap();
    let page = store
        .search(&query, Some("a"), None, 50, 1 << 20, 100)
        .await
        .unwrap();
    assert!(page.hits.is_empty());
    let query = SearchQuery::parse("hello").unwrap();
    let page = store
        .search(&query, None, None, 50, 1 << 20, 100)
        .await
        .unwrap();
    assert!(!page.more);
    let newest = &page.hits[0];
    assert_eq!(
        (newest.from.as_str(), newest.text.as_str(), newest.ts),
        ("ann", "HELLO again, hello!", 4)
    );
    assert_eq!(newest.matches, [(0, 5), (13, 18)], "{engine}");
    let query = SearchQuery::parse("berlin").unwrap();
    let page = store
        .search(&query, None, None, 50, 1 << 20, 100)
        .await
        .unwrap();
    assert_eq!(
        page.hits[0].matches,
        [(12, 18)],
        "{engine}: after a newline and a ü"
    );

    // An edit: found by its new text only, once (not the edit entry, whose text is the same).
    store
        .append(&[NewMessage {
            room: "a".into(),
            ..change(EntryKind::Edit, 7, 1, "Goodbye world", None)
        }])
        .await
        .unwrap();
    assert_eq!(
        found(&store, "hello", Some("a")).await,
        hits(&[("a", 3)]),
        "{engine}: the old text is gone"
    );
    assert_eq!(
        found(&store, "goodbye", None).await,
        hits(&[("a", 1)]),
        "{engine}: the new text, once"
    );
    // A delete: not found at all, nor is its entry.
    store
        .append(&[NewMessage {
            room: "a".into(),
            ..change(EntryKind::Delete, 7, 3, "", None)
        }])
        .await
        .unwrap();
    assert!(found(&store, "again", None).await.is_empty(), "{engine}");
    assert_eq!(found(&store, "hello", None).await, hits(&[("b", 1)]));
    // Retention: what it deletes is no longer found.
    let keep_two = Retention {
        max_messages: 2,
        max_age: Duration::ZERO,
    };
    prune(&store, keep_two, 0).await;
    assert!(found(&store, "goodbye", None).await.is_empty(), "{engine}");
    assert!(found(&store, "fox", None).await.is_empty(), "{engine}");
    assert_eq!(found(&store, "grüße", None).await, hits(&[("b", 2)]));
    store
        .append(&[at("a", "hello after all", 6)])
        .await
        .unwrap();
    assert_eq!(
        found(&store, "hello", None).await,
        hits(&[("a", 6), ("b", 1)]),
        "{engine}"
    );
    search_index_is_consistent(&store).await;
}

async fn search_pages_newest_first_within_a_byte_budget(place: Place) {
    let store = place.open().await;
    let engine = place.engine();
    // Seven hits: "p" 1..=5 stamped 10, 20, ..., 50, "q" 1 and 2 both stamped 30 (ties: by room,
    // then seq, descending), and a message that does not match.
    let mut batch: Vec<NewMessage> = (1..=5).map(|i| at("p", "page me", i * 10)).collect();
    batch.extend([at("q", "page me", 30), at("q", "page me too", 30)]);
    batch.push(at("p", "not this one", 60));
    store.append(&batch).await.unwrap();
    let query = SearchQuery::parse("page").unwrap();
    let mut pages = Vec::new();
    let mut before: Option<SearchCursor> = None;
    loop {
        let page = store
            .search(&query, None, before.as_ref(), 3, 1 << 20, 100)
            .await
            .unwrap();
        let seqs: Vec<(String, u64)> = page.hits.iter().map(|h| (h.room.clone(), h.seq)).collect();
        pages.push((seqs, page.more));
        if !page.more {
            break;
        }
        before = page.hits.last().map(SearchHit::cursor);
    }
    assert_eq!(
        pages,
        [
            (hits(&[("p", 5), ("p", 4), ("q", 2)]), true),
            (hits(&[("q", 1), ("p", 3), ("p", 2)]), true),
            (hits(&[("p", 1)]), false),
        ],
        "{engine}"
    );
    // Exactly a limit's worth left: the page before says so truthfully.
    let last_two = SearchCursor {
        ts: 20,
        room: "p".into(),
        seq: 3,
    };
    let page = store
        .search(&query, Some("p"), Some(&last_two), 2, 1 << 20, 100)
        .await
        .unwrap();
    assert_eq!((page.hits.len(), page.more), (2, false), "{engine}");
    // The byte budget: "page me" + "ann" + "p" = 11 bytes, plus 10 a hit: two fit in 42, the
    // first always does.
    let within = |max_bytes| store.search(&query, Some("p"), None, 5, max_bytes, 10);
    let page = within(42).await.unwrap();
    assert_eq!((page.hits.len(), page.more), (2, true), "{engine}");
    let page = within(1).await.unwrap();
    assert_eq!((page.hits.len(), page.more), (1, true), "{engine}");
    let page = within(1 << 20).await.unwrap();
    assert_eq!((page.hits.len(), page.more), (5, false), "{engine}");
}

async fn hostile_search_queries_are_words_or_refused_never_errors(place: Place) {
    let store = place.open().await;
    let engine = place.engine();
    store
        .append(&[
            at("a", "say hello NEAR the table; it's 1=1", 1),
            at("a", "x OR y AND z", 2),
        ])
        .await
        .unwrap();
    let hostile = [
        "\"",
        "\"\"",
        "*",
        "NEAR(",
        "NEAR(hello table, 2)",
        "hello\"",
        "\"hello",
        "hello*",
        "text:hello",
        "-hello",
        "^hello",
        "{text}: hello",
        "hello AND",
        "OR",
        "NOT hello",
        "hello OR x",
        "' OR 1=1 --",
        "'); DROP TABLE messages; --",
        "hello\u{0}",
        "a & b | !c <-> d:*",
        "\\ / % _",
        "(((((",
        "\u{2}hello\u{3}",
    ];
    for query in hostile {
        match SearchQuery::parse(query) {
            Err(BadQuery::NoWords) => {}
            Err(other) => panic!("{query:?}: {other}"),
            Ok(parsed) => {
                let result = store.search(&parsed, None, None, 50, 1 << 20, 100).await;
                assert!(result.is_ok(), "{engine}: {query:?}: {result:?}");
            }
        }
    }
    // Operators are words like any other.
    assert_eq!(found(&store, "NEAR(", None).await, hits(&[("a", 1)]));
    assert_eq!(found(&store, "hello\"", None).await, hits(&[("a", 1)]));
    assert_eq!(
        found(&store, "OR", None).await,
        hits(&[("a", 2)]),
        "{engine}"
    );
    assert!(
        found(&store, "hello OR x", None).await.is_empty(),
        "{engine}"
    );
    assert!(found(&store, "'); DROP TABLE", None).await.is_empty());
    assert_eq!(found(&store, "table; --", None).await, hits(&[("a", 1)]));
    assert_eq!(
        found(&store, "1=1", None).await,
        hits(&[("a", 1)]),
        "{engine}"
    );
    assert_eq!(SearchQuery::parse("* \" ("), Err(BadQuery::NoWords));
    assert_eq!(
        SearchQuery::parse(&"hello ".repeat(40)),
        Err(BadQuery::TooLong)
    );
    // Still all there.
    assert_eq!(store.bounds("a").await.unwrap().last_seq, 2);
}

/// The version of each engine's search migration.
fn search_migration(list: MigrationList) -> usize {
    list.iter()
        .position(|&(_, description, _)| description == "search")
        .expect("a search migration")
}

async fn search_finds_the_history_stored_before_it_existed(place: Place) {
    use sqlx::Connection;
    // The schema as it was before search, with history in it: a message, a deleted one, an edited
    // one and the edit's entry.
    let rows = "INSERT INTO rooms (name, last_seq, created_at) VALUES ('old', 4, 1); \
        INSERT INTO messages (room, seq, author_id, author, text, ts, kind, target, edited, deleted) \
        VALUES ('old', 1, 7, 'ann', 'kept from before', 1, 'message', NULL, false, false), \
               ('old', 2, 7, 'ann', '', 2, 'message', NULL, false, true), \
               ('old', 3, 7, 'ann', 'edited from before', 3, 'message', NULL, true, false), \
               ('old', 4, 7, 'ann', 'edited from before', 4, 'edit', 3, false, false);";
    match &place {
        Place::Sqlite(dir) => {
            use sqlx::sqlite::SqliteConnectOptions;
            use sqlx::ConnectOptions;
            let mut db = SqliteConnectOptions::new()
                .filename(dir.path().join("chat.db"))
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            let before = &sqlite::MIGRATIONS[..search_migration(sqlite::MIGRATIONS)];
            sqlx::migrate::Migrator::new(EmbeddedMigrations(before))
                .await
                .unwrap()
                .run(&mut db)
                .await
                .unwrap();
            sqlx::raw_sql(rows).execute(&mut db).await.unwrap();
            db.close().await.unwrap();
        }
        Place::Postgres { url, .. } => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            let before = &postgres::MIGRATIONS[..search_migration(postgres::MIGRATIONS)];
            sqlx::migrate::Migrator::new(EmbeddedMigrations(before))
                .await
                .unwrap()
                .run(&mut db)
                .await
                .unwrap();
            sqlx::raw_sql(rows).execute(&mut db).await.unwrap();
            db.close().await.unwrap();
        }
    }
    let engine = place.engine();
    let store = place.open().await;
    assert_eq!(
        found(&store, "from before", None).await,
        hits(&[("old", 3), ("old", 1)]),
        "{engine}: messages only, as they are now"
    );
    assert_eq!(found(&store, "edited", None).await, hits(&[("old", 3)]));
    // Messages stored from now on are found too, and all of it is after a restart.
    store
        .append(&[at("old", "stored after the upgrade", 5)])
        .await
        .unwrap();
    drop(store);
    let store = place.open().await;
    assert_eq!(
        found(&store, "stored", None).await,
        hits(&[("old", 5)]),
        "{engine}"
    );
    assert_eq!(
        found(&store, "from before", Some("old")).await,
        hits(&[("old", 3), ("old", 1)]),
        "{engine}"
    );
    search_index_is_consistent(&store).await;
}

fn seq(stored: &Stored) -> u64 {
    match stored {
        Stored::New(m) => m.seq,
        Stored::Duplicate { seq } => *seq,
        Stored::Refused(refusal) => panic!("refused: {refusal:?}"),
    }
}

fn seqs(stored: &[Stored]) -> Vec<u64> {
    stored.iter().map(seq).collect()
}

fn texts(messages: Vec<ChatMessage>) -> Vec<String> {
    messages.into_iter().map(|m| m.text).collect()
}

async fn sequences_count_per_room_and_resends_are_stored_once(place: Place) {
    let store = place.open().await;
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
    // A resend among new messages takes no number: the next one follows on.
    let mixed = store
        .append(&[
            new("a", "4", Some("y")),
            new("a", "1 once more", Some("x")),
            new("a", "5", None),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&mixed), [4, 1, 5]);
    assert!(
        matches!(&mixed[0], Stored::New(m) if m.text == "4" && m.client_id.as_deref() == Some("y"))
    );

    assert_eq!(
        texts(store.after("a", 0, 10).await.unwrap()),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(texts(store.after("a", 1, 1).await.unwrap()), ["2"]);
    assert_eq!(texts(store.before("a", None, 2).await.unwrap()), ["4", "5"]);
    assert_eq!(texts(store.before("a", Some(2), 5).await.unwrap()), ["1"]);
    assert_eq!(
        store.rooms_by_messages(&[], 10, 0).await.unwrap(),
        [("a".to_string(), 5), ("b".to_string(), 1)]
    );
    assert_eq!(
        store.bounds("a").await.unwrap(),
        RoomBounds {
            oldest_seq: 1,
            last_seq: 5
        }
    );
    assert_eq!(
        store.bounds("nowhere").await.unwrap(),
        RoomBounds::default()
    );
    store.ping().await.unwrap();
}

async fn retention_never_lets_a_number_be_reused(place: Place) {
    let store = place.open().await;
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
    let store = place.open().await;
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

async fn retention_deletes_exactly_the_old_rows_of_each_room_in_bounded_batches(place: Place) {
    let store = place.open().await;
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

async fn pages_within_a_byte_budget_and_room_lists(place: Place) {
    let store = place.open().await;
    // "a": five messages "a0".."a4" by "ann": 5 bytes each, plus 10 for the rest of their JSON.
    fill(&store, "a", 5, 0).await;
    let seqs_of = |messages: Vec<ChatMessage>| messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let page = |before, limit, max_bytes| store.before_within("a", before, limit, max_bytes, 10);
    assert_eq!(seqs_of(page(None, 10, 45).await.unwrap()), [3, 4, 5]);
    assert_eq!(seqs_of(page(None, 10, 44).await.unwrap()), [4, 5]);
    assert_eq!(seqs_of(page(None, 2, 10_000).await.unwrap()), [4, 5]);
    assert_eq!(
        seqs_of(page(Some(3), 10, 1).await.unwrap()),
        [2],
        "always at least one"
    );
    assert!(page(Some(1), 10, 10_000).await.unwrap().is_empty());
    // Forward from a point, the same budget: what a catch-up replay reads.
    let forward = |after, limit, max_bytes| store.after_within("a", after, limit, max_bytes, 10);
    assert_eq!(seqs_of(forward(1, 10, 45).await.unwrap()), [2, 3, 4]);
    assert_eq!(seqs_of(forward(1, 10, 44).await.unwrap()), [2, 3]);
    assert_eq!(seqs_of(forward(0, 2, 10_000).await.unwrap()), [1, 2]);
    assert_eq!(
        seqs_of(forward(3, 10, 1).await.unwrap()),
        [4],
        "always at least one"
    );
    assert!(forward(5, 10, 10_000).await.unwrap().is_empty());
    // A client id counts, in bytes (é is two).
    store.append(&[new("a", "a5", Some("é"))]).await.unwrap();
    assert_eq!(seqs_of(page(None, 10, 32).await.unwrap()), [5, 6]);
    assert_eq!(seqs_of(page(None, 10, 31).await.unwrap()), [6]);

    // The room list: most messages first, ties by name (byte order: "b-x" before "bx").
    fill(&store, "bx", 6, 0).await;
    fill(&store, "b-x", 6, 0).await;
    fill(&store, "c", 7, 0).await;
    fill(&store, "d", 1, 0).await;
    let listed = |rooms: &[(&str, u64)]| -> Vec<(String, u64)> {
        rooms.iter().map(|&(n, c)| (n.to_string(), c)).collect()
    };
    assert_eq!(
        store.rooms_by_messages(&[], 10, 0).await.unwrap(),
        listed(&[("c", 7), ("a", 6), ("b-x", 6), ("bx", 6), ("d", 1)])
    );
    assert_eq!(
        store
            .rooms_by_messages(&["c".into(), "a".into()], 2, 1)
            .await
            .unwrap(),
        listed(&[("bx", 6), ("d", 1)])
    );
    let mut sizes = store
        .room_sizes(&["d".into(), "a".into(), "nowhere".into()])
        .await
        .unwrap();
    sizes.sort();
    assert_eq!(sizes, listed(&[("a", 6), ("d", 1)]));
    assert!(store.room_sizes(&[]).await.unwrap().is_empty());
}

async fn the_session_key_is_the_stores_only_when_the_store_is_shared(place: Place) {
    // Two nodes start at once, each with a fresh key of its own to offer.
    let (one, two) = (place.open().await, place.open().await);
    let (first, second) = tokio::join!(
        one.shared_session_key([1; 32], false),
        two.shared_session_key([2; 32], false)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    match place {
        Place::Sqlite(_) => assert_eq!((first, second), (None, None), "the data directory's"),
        Place::Postgres { .. } => {
            assert_eq!(first, second, "both use the one stored first");
            assert!(first == Some([1; 32]) || first == Some([2; 32]));
            // Restarts keep it; a rotation replaces it for every node that starts afterwards.
            assert_eq!(two.shared_session_key([5; 32], false).await.unwrap(), first);
            assert_eq!(
                one.shared_session_key([3; 32], true).await.unwrap(),
                Some([3; 32])
            );
            assert_eq!(
                place
                    .open()
                    .await
                    .shared_session_key([4; 32], false)
                    .await
                    .unwrap(),
                Some([3; 32])
            );
        }
    }
}

/// Two nodes (two pools on one database) append to the same two rooms at once, each batch in both
/// rooms in either order, and every message is sent to both nodes at the same moment (as a client
/// resending on another node would): each room's numbers are 1..=N, each given once, each message
/// stored once, and every copy answered with its number. No batch fails: no deadlock, no unique
/// violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_appending_to_the_same_rooms_number_every_message_once() {
    let place = Place::postgres().await;
    let nodes = [place.open().await, place.open().await];
    const SENDERS: u64 = 3;
    const BATCHES: u64 = 40;
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        for node in &nodes {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for b in 0..BATCHES {
                    let batch: Vec<NewMessage> = (0..1 + (sender + b) % 4)
                        .map(|k| NewMessage {
                            room: if (sender + b + k) % 2 == 0 { "a" } else { "b" }.into(),
                            author_id: sender,
                            author: format!("sender {sender}"),
                            text: format!("{sender}/{b}/{k}"),
                            ts: b,
                            client_id: Some(format!("{b}/{k}")),
                            kind: EntryKind::Message,
                            target: None,
                        })
                        .collect();
                    let stored = node.append(&batch).await.expect("no batch fails");
                    outcomes.extend(batch.into_iter().zip(stored));
                }
                outcomes
            }));
        }
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    let sent: u64 = (0..SENDERS)
        .map(|sender| (0..BATCHES).map(|b| 1 + (sender + b) % 4).sum::<u64>())
        .sum();
    assert_eq!(outcomes.len() as u64, 2 * sent);

    for room in ["a", "b"] {
        let mine: Vec<&(NewMessage, Stored)> =
            outcomes.iter().filter(|(m, _)| m.room == room).collect();
        // Each message went to both nodes: exactly one copy is new, and both have its number.
        let mut numbers: BTreeMap<String, Vec<&Stored>> = BTreeMap::new();
        for (message, stored) in &mine {
            numbers
                .entry(message.text.clone())
                .or_default()
                .push(stored);
        }
        for (text, copies) in &numbers {
            assert_eq!(copies.len(), 2, "{text}");
            let new = copies
                .iter()
                .filter(|s| matches!(s, Stored::New(_)))
                .count();
            assert_eq!(new, 1, "{text}: {copies:?}");
            assert_eq!(seq(copies[0]), seq(copies[1]), "{text}");
        }
        // The numbers are 1..=N, and the store holds exactly those messages under them.
        let mut given: Vec<(u64, String)> = numbers
            .iter()
            .map(|(text, copies)| (seq(copies[0]), text.clone()))
            .collect();
        given.sort();
        let n = given.len() as u64;
        assert_eq!(
            given.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "room {room}"
        );
        let stored: Vec<(u64, String)> = nodes[0]
            .after(room, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.seq, m.text))
            .collect();
        assert_eq!(stored, given, "room {room}");
        assert_eq!(nodes[1].bounds(room).await.unwrap().last_seq, n);
    }
}

/// PostgreSQL answers a search of all rooms from the index `messages_search`, not by reading every
/// message: the query's conditions must be the index's word for word (sequential scans discouraged,
/// so that the plan shows whether the index can be used at all on a table this small). (Within a room
/// the planner may as well read the room's messages by primary key, when it has few.)
#[tokio::test]
async fn postgres_search_is_answered_from_its_index() {
    let place = Place::postgres().await;
    let store = place.open().await;
    store.append(&[at("a", "hello world", 1)]).await.unwrap();
    let Engine::Postgres(pg) = &store.engine else {
        unreachable!("a PostgreSQL place")
    };
    let mut conn = pg.pool().acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {}", postgres::SEARCH))
        .bind("hello")
        .bind(None::<&str>)
        .bind(None::<i64>)
        .bind(None::<&str>)
        .bind(None::<i64>)
        .bind(51_i64)
        .bind(100_i64)
        .bind(1_i64 << 20)
        .bind("")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("messages_search"), "{plan}");
}

/// The checksum sqlx recorded for migration 1 ("history") in every SQLite database created while the
/// file was `migrations/0001_history.sql`, before the move to `migrations/sqlite/` (the SHA-384 of its
/// SQL, as `_sqlx_migrations` holds it).
const SQLITE_HISTORY_CHECKSUM: &str =
    "08d8a50da3dbabfbc03dac11942f2aa6071bc1a42c10d69e2d865549e3ad0de\
                                       dd94d5f5839472cc0491c7241c6e1215c";

#[tokio::test]
async fn a_sqlite_database_from_before_the_migrations_moved_still_opens() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    // The database as the old layout left it: the schema, a message, and sqlx's record of migration
    // 1 (its table as sqlx 0.8 creates it).
    let mut db = SqliteConnectOptions::new()
        .filename(dir.path().join("chat.db"))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(sqlite::MIGRATIONS[0].2)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE _sqlx_migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
             success BOOLEAN NOT NULL,
             checksum BLOB NOT NULL,
             execution_time BIGINT NOT NULL
         );
         INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (1, 'history', TRUE, X'{SQLITE_HISTORY_CHECKSUM}', 1000);
         INSERT INTO rooms VALUES ('general', 1, 5);
         INSERT INTO messages VALUES ('general', 1, 7, 'ann', 'from before', 5, NULL);"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();

    let store = Store::open(dir.path())
        .await
        .expect("the migrations it ran are still the same (version and checksum)");
    assert_eq!(
        texts(store.after("general", 0, 10).await.unwrap()),
        ["from before"]
    );
    assert_eq!(
        seqs(
            &store
                .append(&[new("general", "after", None)])
                .await
                .unwrap()
        ),
        [2]
    );
}

/// Not a test but a measurement, run by hand (`cargo test --release --features ssr --lib
/// measure_retention -- --ignored --nocapture`): how long 200,000 old messages in 20 rooms take to
/// delete as the single statement retention used to run, and the longest of the batches that replace
/// it (each of which a writer batch may have to wait for). On SQLite, where retention and the writer
/// take turns.
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
        let place = Place::sqlite().await;
        let store = place.open().await;
        for r in 0..ROOMS {
            let room = format!("room-{r}");
            for _ in 0..(OLD + KEPT) / 1_000 {
                fill(&store, &room, 1_000, 0).await;
            }
        }
        let started = Instant::now();
        let deleted = if single {
            let Engine::Sqlite(sqlite) = &store.engine else {
                unreachable!("a SQLite place")
            };
            // The statement retention ran before it went in batches.
            sqlx::query(
                "DELETE FROM messages WHERE seq <= \
                 (SELECT last_seq FROM rooms WHERE rooms.name = messages.room) - ?",
            )
            .bind(KEPT as i64)
            .execute(sqlite.pool())
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

/// Not a test but a measurement, run by hand (`cargo test --release --features ssr --lib
/// measure_append -- --ignored --nocapture`): how long the writer's transaction (`append`, what the
/// `chat_store_commit_seconds` metric times) takes on each engine, by batch size, with commits synced
/// to disk as in production (PostgreSQL: a private server with its durable defaults).
#[tokio::test]
#[ignore]
async fn measure_append() {
    let durable_postgres = PgServer::start_durable().await;
    let places = [
        Place::sqlite().await,
        Place::Postgres {
            url: durable_postgres.create_database().await,
            _server: durable_postgres,
        },
    ];
    for place in &places {
        let store = place.open().await;
        for (size, rounds) in [(1, 300), (16, 100), (256, 30)] {
            let mut times = Vec::new();
            for round in 0..rounds {
                let batch: Vec<NewMessage> = (0..size)
                    .map(|i| {
                        let id = format!("{round}/{i}");
                        new(&format!("room-{}", i % 4), &id, Some(&id))
                    })
                    .collect();
                let started = Instant::now();
                store.append(&batch).await.unwrap();
                times.push(started.elapsed());
            }
            times.sort();
            let median = times[times.len() / 2];
            println!(
                "{:<10} batches of {size:>3}: median {median:>10.2?} ({:>8.2?} a message), \
                 p90 {:>10.2?}, max {:>10.2?}",
                place.engine(),
                median / size,
                times[times.len() * 9 / 10],
                times[times.len() - 1],
            );
        }
    }
}

#[tokio::test]
async fn the_database_url_picks_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    // `sqlite://` and a path: that file (and its directory) rather than the data directory's.
    let file = dir.path().join("elsewhere").join("history.db");
    let url = format!("sqlite://{}", file.display());
    let store = Store::connect(Some(&url), &dir.path().join("data"))
        .await
        .unwrap();
    store.append(&[new("a", "1", None)]).await.unwrap();
    assert!(file.is_file());
    assert!(!dir.path().join("data").exists());
    // Anything else is refused, naming the scheme and not the rest (it may hold a password).
    let error = Store::connect(Some("mysql://root:hunter2@db/chat"), dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"mysql\"") && !error.contains("hunter2"),
        "{error}"
    );
}
