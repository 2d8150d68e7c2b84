//! Rooms, history, lossless reconnects, sessions, presence and typing, over real sockets and a real
//! store: SQLite (each test server has its own data directory), and for the history and session tests
//! PostgreSQL too (each such test runs twice, as `<test>::sqlite` and `<test>::postgres`, the latter on
//! a private PostgreSQL server of its own).

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{forge, http_get, unlimited_rate, Backend, Binary, Client, TestServer, PATIENCE};
use groupchat::api::{HistoryPage, SearchPage, MAX_SEARCH_PAGE};
use groupchat::protocol::{ChatMessage, EntryKind, ErrorCode, FrameKind, ServerEvent};
use groupchat::server::Config;
use groupchat::server::{Pruned, Retention};
use serde_json::json;

/// Sends `text` to `room` with `client_id`, and returns the sequence number of its acknowledgement,
/// skipping other events on the way.
async fn send_acked(client: &mut Client, room: &str, text: &str, client_id: &str) -> u64 {
    let frame = json!({"type": "message", "room": room, "text": text, "client_id": client_id});
    acked(client, frame, client_id).await
}

/// Reads until a message with `text` arrives; returns the messages (room, seq, text) seen, it included.
async fn messages_until(client: &mut Client, text: &str) -> Vec<(String, u64, String)> {
    let mut seen = Vec::new();
    loop {
        if let ServerEvent::Message {
            room,
            seq,
            text: got,
            ..
        } = client.said().await
        {
            let last = got == text;
            seen.push((room, seq, got));
            if last {
                return seen;
            }
        }
    }
}

/// The JSON body of an HTTP response.
fn body(response: &str) -> serde_json::Value {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A `/api/history` response, read as the page type the API serves.
fn history_page(response: &str) -> HistoryPage {
    serde_json::from_value(body(response)).expect("a history page")
}

fn seqs(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

on_both_engines!(
    sequence_numbers_have_no_gaps_under_concurrent_senders,
    joining_brings_the_latest_history_and_older_pages_on_request,
    a_rejoin_with_after_gets_exactly_the_missed_messages,
    a_resent_message_is_stored_once,
    kill_9_loses_no_acknowledged_message,
    history_and_sessions_survive_a_restart,
    rotating_the_session_key_refuses_every_earlier_token,
    acks_keep_flowing_while_retention_prunes_a_large_backlog,
    edits_deletes_and_replies_reach_everyone_and_are_replayed_after_a_kill_9,
    a_reaction_toggled_from_two_tabs_of_one_person_counts_once,
    read_positions_are_shared_between_tabs_and_survive_a_restart,
    read_positions_written_beside_a_busy_writer_refuse_nothing,
    search_finds_words_in_a_room_or_everywhere_and_survives_a_restart,
);

#[tokio::test]
async fn rooms_are_isolated_and_a_connection_can_follow_several() {
    let server = TestServer::start().await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let (mut bob, _) = server.join("/ws?name=bob").await;
    assert!(
        matches!(ann.event().await, ServerEvent::Join { room, name, .. } if room == "general" && name == "bob")
    );

    ann.send_json(json!({"type": "join", "room": "rust-dev"}))
        .await;
    let joined = ann.joined("rust-dev").await;
    assert_eq!(
        (joined.recovered, joined.online),
        (false, vec!["ann".into()])
    );

    // A message to a room bob does not follow: refused for him, delivered only to the room.
    bob.send_json(json!({"type": "message", "room": "rust-dev", "text": "let me in"}))
        .await;
    assert!(matches!(
        bob.event().await,
        ServerEvent::Error {
            code: ErrorCode::NotJoined,
            ..
        }
    ));
    ann.send_json(json!({"type": "message", "room": "rust-dev", "text": "only here"}))
        .await;
    ann.send_json(json!({"type": "message", "room": "general", "text": "to everyone"}))
        .await;
    // Each room is in order; two rooms' messages may interleave either way.
    let mut seen = messages_until(&mut ann, "to everyone").await;
    if seen.len() == 1 {
        seen.extend(messages_until(&mut ann, "only here").await);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("general".into(), 1, "to everyone".into()),
            ("rust-dev".into(), 1, "only here".into())
        ],
        "each room counts its own sequence"
    );
    // Bob's next message is the general one: nothing of rust-dev reached him.
    assert_eq!(
        messages_until(&mut bob, "to everyone").await,
        [("general".into(), 1, "to everyone".into())]
    );

    // Bad room names are refused; the connection carries on.
    for bad in ["Upper", "", "has space", &"x".repeat(41)] {
        bob.send_json(json!({"type": "join", "room": bad})).await;
        assert!(
            matches!(
                bob.event().await,
                ServerEvent::Error {
                    code: ErrorCode::BadRoom,
                    ..
                }
            ),
            "{bad:?}"
        );
    }
    bob.send_json(json!({"type": "join", "room": "general"}))
        .await;
    assert!(matches!(
        bob.event().await,
        ServerEvent::Error {
            code: ErrorCode::AlreadyJoined,
            ..
        }
    ));

    // Leaving a room: the others see it, and its messages stop.
    ann.send_json(json!({"type": "leave", "room": "general"}))
        .await;
    assert!(
        matches!(bob.event().await, ServerEvent::Leave { room, name, .. } if room == "general" && name == "ann")
    );
    bob.send_text("ann is gone").await;
    ann.send_json(json!({"type": "message", "room": "rust-dev", "text": "still here"}))
        .await;
    assert_eq!(
        messages_until(&mut ann, "still here").await,
        [("rust-dev".into(), 2, "still here".into())]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_terminal_clients_plain_text_goes_to_its_room() {
    let server = TestServer::start().await;
    let mut client = server.connect("/ws?room=dev").await;
    client.welcome().await;
    client.joined("dev").await;
    client.send_text("hello dev").await;
    assert_eq!(
        messages_until(&mut client, "hello dev").await,
        [("dev".into(), 1, "hello dev".into())]
    );
    server.stop().await;
}

async fn sequence_numbers_have_no_gaps_under_concurrent_senders(backend: Backend) {
    let server = TestServer::start_with(backend.config(unlimited_rate())).await;
    const SENDERS: usize = 6;
    const EACH: usize = 50;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (mut client, _) = server.join("/ws").await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..EACH {
                acked.push(
                    send_acked(
                        &mut client,
                        "general",
                        &format!("{s}-{i}"),
                        &format!("{s}-{i}"),
                    )
                    .await,
                );
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let acked = task.await.unwrap();
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "one sender's messages in its order"
        );
        all.extend(acked);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=(SENDERS * EACH) as u64).collect::<Vec<_>>());

    // The store agrees: the full history is 1..=300 with no gaps.
    let history = history_page(&server.http_get("/api/history?room=general&limit=200").await);
    assert_eq!(seqs(&history.messages), (101..=300).collect::<Vec<_>>());

    // Health and metrics see the store, whichever it is.
    assert_eq!(body(&server.http_get("/healthz").await)["status"], "ok");
    let metrics = server.http_get("/metrics").await;
    assert!(
        metrics.contains("chat_store_commit_seconds_count"),
        "{metrics}"
    );
    server.stop().await;
}

async fn joining_brings_the_latest_history_and_older_pages_on_request(backend: Backend) {
    let server = TestServer::start_with(backend.config(unlimited_rate())).await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    for i in 1..=60 {
        send_acked(&mut ann, "general", &format!("m{i}"), &format!("c{i}")).await;
    }
    let mut bob = server.connect("/ws?name=bob").await;
    bob.welcome().await;
    let joined = bob.joined("general").await;
    assert!(!joined.recovered);
    assert_eq!(seqs(&joined.messages), (11..=60).collect::<Vec<_>>());
    assert_eq!(joined.messages[0].text, "m11");
    assert_eq!(joined.messages[0].from, "ann");
    assert_eq!(joined.oldest_seq, 1);

    // Paging back: before=11, 5 at a time, oldest first.
    let page = history_page(
        &server
            .http_get("/api/history?room=general&before=11&limit=5")
            .await,
    );
    assert_eq!(seqs(&page.messages), [6, 7, 8, 9, 10]);
    assert_eq!(page.oldest_seq, 1);
    let first = history_page(&server.http_get("/api/history?room=general&before=3").await);
    assert_eq!(first.messages.len(), 2);
    let unknown = history_page(&server.http_get("/api/history?room=nobody-here").await);
    assert_eq!(unknown.messages, []);
    let bad = server.http_get("/api/history?room=Bad%20Room").await;
    assert!(!bad.starts_with("HTTP/1.1 200"), "{bad}");

    // The room list knows the room, its history and its people.
    let rooms = body(&server.http_get("/api/rooms").await);
    assert_eq!(rooms[0]["name"], "general");
    assert_eq!(rooms[0]["online"], 2);
    assert_eq!(rooms[0]["messages"], 60);

    // The page for a room renders its history on the server.
    let html = server.http_get("/r/general").await;
    assert!(html.contains("m60") && html.contains("m11"), "{html}");
    assert!(!html.contains(">m10<"), "only the latest page: {html}");
    bob.close().await;
    server.stop().await;
}

async fn a_rejoin_with_after_gets_exactly_the_missed_messages(backend: Backend) {
    let server = TestServer::start_with(backend.config(Config {
        replay_limit: 100,
        ..unlimited_rate()
    }))
    .await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let mut bob = server.connect("/ws?name=bob").await;
    let (_, session) = bob.welcome().await;
    bob.joined("general").await;
    for i in 1..=5 {
        send_acked(&mut ann, "general", &format!("m{i}"), &format!("c{i}")).await;
    }
    let seen = messages_until(&mut bob, "m5").await;
    let last_seen = seen.last().unwrap().1;
    drop(bob); // the link drops

    for i in 6..=12 {
        send_acked(&mut ann, "general", &format!("m{i}"), &format!("c{i}")).await;
    }
    // Back, as the same person, asking for what came after what it saw.
    let mut bob = server
        .connect_with_cookie("/ws?room=", Some(&session))
        .await;
    assert_eq!(bob.welcome().await.0, "bob", "the session keeps the name");
    bob.send_json(json!({"type": "join", "room": "general", "after": last_seen}))
        .await;
    let joined = bob.joined("general").await;
    assert!(joined.recovered);
    assert_eq!(seqs(&joined.messages), (6..=12).collect::<Vec<_>>());
    // Then live, with nothing repeated.
    send_acked(&mut ann, "general", "m13", "c13").await;
    assert_eq!(
        messages_until(&mut bob, "m13").await,
        [("general".into(), 13, "m13".into())]
    );

    // Up to date: an empty, recovered replay.
    let mut carl = server.connect("/ws?room=").await;
    carl.welcome().await;
    carl.send_json(json!({"type": "join", "room": "general", "after": 13}))
        .await;
    let joined = carl.joined("general").await;
    assert!(joined.recovered && joined.messages.is_empty());

    // Too far behind (over the replay limit), or ahead of the room (a reset store): start afresh.
    for i in 14..=120 {
        send_acked(&mut ann, "general", &format!("m{i}"), &format!("c{i}")).await;
    }
    for after in [2, 500] {
        let mut late = server.connect("/ws?room=").await;
        late.welcome().await;
        late.send_json(json!({"type": "join", "room": "general", "after": after}))
            .await;
        let joined = late.joined("general").await;
        assert!(!joined.recovered, "after={after}");
        assert_eq!(seqs(&joined.messages), (71..=120).collect::<Vec<_>>());
    }

    // Pruned by retention: the missed messages are gone, so not recovered either.
    let chat = &server.state.chat;
    let keep_ten = Retention {
        max_messages: 10,
        max_age: Duration::ZERO,
    };
    let report = chat.apply_retention(keep_ten).await.unwrap();
    assert_eq!(report.deleted(), 110);
    let mut pruned = server.connect("/ws?room=").await;
    pruned.welcome().await;
    pruned
        .send_json(json!({"type": "join", "room": "general", "after": 100}))
        .await;
    let joined = pruned.joined("general").await;
    assert!(!joined.recovered);
    assert_eq!(joined.oldest_seq, 111);
    assert_eq!(seqs(&joined.messages), (111..=120).collect::<Vec<_>>());
    server.stop().await;
}

async fn a_resent_message_is_stored_once(backend: Backend) {
    let server = TestServer::start_with(backend.config(Config::default())).await;
    let mut ann = server.connect("/ws?name=ann").await;
    let (_, session) = ann.welcome().await;
    ann.joined("general").await;
    let (mut watcher, _) = server.join("/ws?name=watcher").await;
    assert!(matches!(ann.event().await, ServerEvent::Join { .. }));

    let first = send_acked(&mut ann, "general", "only once", "abc-1").await;
    // The link drops before the page saw the ack (say): it resends under the same id, on a new link.
    drop(ann);
    let mut ann = server.connect_with_cookie("/ws", Some(&session)).await;
    ann.welcome().await;
    ann.joined("general").await;
    assert_eq!(
        send_acked(&mut ann, "general", "only once", "abc-1").await,
        first
    );
    // Twice on the same link too.
    assert_eq!(
        send_acked(&mut ann, "general", "only once", "abc-1").await,
        first
    );
    send_acked(&mut ann, "general", "next", "abc-2").await;

    // The watcher saw it once, then the next one.
    let texts: Vec<String> = messages_until(&mut watcher, "next")
        .await
        .into_iter()
        .map(|(_, _, text)| text)
        .collect();
    assert_eq!(texts, ["only once", "next"]);
    let history = history_page(&server.http_get("/api/history?room=general").await);
    assert_eq!(history.messages.len(), 2);

    // Another person may use the same client id: it is theirs.
    assert_ne!(
        send_acked(&mut watcher, "general", "mine", "abc-1").await,
        first
    );
    server.stop().await;
}

async fn kill_9_loses_no_acknowledged_message(backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = backend.database_url();
    let server = Binary::start(data_dir.path(), database_url.as_deref());
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?name=ann", server.addr))
        .await
        .unwrap();
    let mut ann = Client::new(ws);
    ann.welcome().await;
    ann.joined("general").await;
    // Many in flight at once, so they are stored in batches; the kill comes right after the last ack.
    const COUNT: usize = 15;
    for i in 0..COUNT {
        ann.send_json(json!({"type": "message", "text": format!("durable {i}"), "client_id": format!("d{i}")}))
            .await;
    }
    let mut acked = BTreeSet::new();
    while acked.len() < COUNT {
        if let ServerEvent::Ack { seq, .. } = ann.event().await {
            acked.insert(seq);
        }
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.child.wait().unwrap();
    drop(server);

    let restarted = Binary::start(data_dir.path(), database_url.as_deref());
    let response = http_get(&restarted.addr, "/api/history?room=general&limit=200").await;
    let history = history_page(&response);
    let stored: BTreeSet<u64> = seqs(&history.messages).into_iter().collect();
    assert_eq!(
        stored, acked,
        "every acknowledged message is there after the restart"
    );
    let texts: Vec<&str> = history.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts.len(), COUNT);
    assert!(texts.iter().all(|t| t.starts_with("durable ")));
}

/// The next error event (skipping others); its code and the kind of frame it answers.
async fn refusal(client: &mut Client) -> (ErrorCode, FrameKind) {
    let (code, answers) = client.refused().await;
    (code, answers.expect("names the frame").kind)
}

async fn edits_deletes_and_replies_reach_everyone_and_are_replayed_after_a_kill_9(
    backend: Backend,
) {
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = backend.database_url();
    let server = Binary::start(data_dir.path(), database_url.as_deref());
    let mut ann = server.connect("/ws?name=ann").await;
    ann.welcome().await;
    ann.joined("general").await;
    let mut bob = server.connect("/ws?name=bob").await;
    bob.welcome().await;
    bob.joined("general").await;

    let first = send_acked(&mut ann, "general", "first draft", "a1").await;
    bob.send_json(
        json!({"type": "message", "text": "agreed", "reply_to": first, "client_id": "b1"}),
    )
    .await;
    let ServerEvent::Message {
        seq: reply,
        reply_to,
        ..
    } = ann.entry(first + 1).await
    else {
        unreachable!()
    };
    let quote = reply_to.expect("the reply quotes what it answers");
    assert_eq!(
        (quote.seq, quote.from.as_str(), quote.text.as_str()),
        (first, "ann", "first draft")
    );

    // Bob may not change ann's message: refused, naming his frame; nothing is stored.
    bob.send_json(json!({"type": "edit", "room": "general", "seq": first, "text": "mine now"}))
        .await;
    assert_eq!(
        refusal(&mut bob).await,
        (ErrorCode::NotAuthor, FrameKind::Edit)
    );
    bob.send_json(json!({"type": "delete", "room": "general", "seq": first}))
        .await;
    assert_eq!(
        refusal(&mut bob).await,
        (ErrorCode::NotAuthor, FrameKind::Delete)
    );
    bob.send_json(json!({"type": "delete", "room": "general", "seq": 999}))
        .await;
    assert_eq!(
        refusal(&mut bob).await,
        (ErrorCode::NoSuchMessage, FrameKind::Delete)
    );

    // Ann edits hers (sent twice with one client_id: stored once), bob deletes his reply.
    for _ in 0..2 {
        ann.send_json(json!({"type": "edit", "room": "general", "seq": first, "text": "final text", "client_id": "a2"}))
            .await;
    }
    let edit = reply + 1;
    let ServerEvent::Message {
        kind, target, text, ..
    } = bob.entry(edit).await
    else {
        unreachable!()
    };
    assert_eq!(
        (kind, target, text.as_str()),
        (EntryKind::Edit, Some(first), "final text")
    );
    bob.send_json(json!({"type": "delete", "room": "general", "seq": reply, "client_id": "b2"}))
        .await;
    let delete = edit + 1;
    let ServerEvent::Message { kind, target, .. } = ann.entry(delete).await else {
        unreachable!()
    };
    assert_eq!((kind, target), (EntryKind::Delete, Some(reply)));
    // Everything acknowledged; then the server is killed.
    loop {
        if let ServerEvent::Ack {
            client_id: Some(id),
            ..
        } = bob.event().await
        {
            if id == "b2" {
                break;
            }
        }
    }
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    // After the restart: a rejoin from before the changes replays them in order, and a fresh join
    // (and a history page) shows the messages as they are now.
    let restarted = Binary::start(data_dir.path(), database_url.as_deref());
    let mut cat = restarted.connect("/ws?name=cat").await;
    cat.welcome().await;
    cat.joined("general").await;
    cat.send_json(json!({"type": "leave", "room": "general"}))
        .await;
    cat.send_json(json!({"type": "join", "room": "general", "after": reply}))
        .await;
    let joined = cat.joined("general").await;
    assert!(joined.recovered);
    let replayed: Vec<(u64, EntryKind, Option<u64>)> = joined
        .messages
        .iter()
        .map(|m| (m.seq, m.kind, m.target))
        .collect();
    assert_eq!(
        replayed,
        [
            (edit, EntryKind::Edit, Some(first)),
            (delete, EntryKind::Delete, Some(reply))
        ]
    );
    let page = history_page(&http_get(&restarted.addr, "/api/history?room=general").await);
    let now: Vec<(u64, &str, bool, bool)> = page
        .messages
        .iter()
        .map(|m| (m.seq, m.text.as_str(), m.edited, m.deleted))
        .collect();
    assert_eq!(
        now,
        [(first, "final text", true, false), (reply, "", false, true)]
    );
}

async fn a_reaction_toggled_from_two_tabs_of_one_person_counts_once(backend: Backend) {
    let server = TestServer::start_with(backend.config(unlimited_rate())).await;
    let mut tab1 = server.connect("/ws?name=ann").await;
    let (_, session) = tab1.welcome().await;
    tab1.joined("general").await;
    let mut tab2 = server.connect_with_cookie("/ws", Some(&session)).await;
    tab2.welcome().await;
    tab2.joined("general").await;
    let (mut bob, _) = server.join("/ws?name=bob").await;
    let first = send_acked(&mut bob, "general", "react to this", "b1").await;
    let react = |client_id: &str| json!({"type": "react", "room": "general", "seq": first, "emoji": "👍", "client_id": client_id});
    // Ann's first tab reacts; her second tab's toggle is the same person's: it takes it back. Bob
    // reacts too; a resend of his (same client_id) is stored once.
    tab1.send_json(react("t1")).await;
    let ServerEvent::Message { kind, from, .. } = bob.entry(first + 1).await else {
        unreachable!()
    };
    assert_eq!((kind, from.as_str()), (EntryKind::React, "ann"));
    tab2.send_json(react("t2")).await;
    let ServerEvent::Message { kind, .. } = bob.entry(first + 2).await else {
        unreachable!()
    };
    assert_eq!(kind, EntryKind::Unreact);
    tab2.send_json(react("t3")).await;
    bob.send_json(react("b2")).await;
    bob.send_json(react("b2")).await;
    tab1.entry(first + 4).await;
    // A newcomer sees each person once: ann (one of her tabs' toggles on) and bob.
    let (mut cy, _) = server.join("/ws?name=cy").await;
    cy.send_json(json!({"type": "react", "room": "general", "seq": first, "emoji": "a b"}))
        .await;
    assert_eq!(
        refusal(&mut cy).await,
        (ErrorCode::BadReaction, FrameKind::React)
    );
    let page = history_page(&server.http_get("/api/history?room=general").await);
    // (Ann's and bob's last toggles went out together: either may be first.)
    let reactions: Vec<(String, usize, Vec<String>)> = page.messages[0]
        .reactions
        .iter()
        .map(|r| {
            let mut names = r.names.clone();
            names.sort();
            (r.emoji.clone(), r.count, names)
        })
        .collect();
    assert_eq!(
        reactions,
        [(
            "👍".to_string(),
            2,
            vec!["ann".to_string(), "bob".to_string()]
        )]
    );
    server.stop().await;
}

/// The next `read_positions` event's rooms as (room, seq, unread).
async fn read_positions(client: &mut Client) -> Vec<(String, u64, u64)> {
    client
        .read_positions()
        .await
        .into_iter()
        .map(|(room, p)| (room, p.seq, p.unread))
        .collect()
}

async fn read_positions_are_shared_between_tabs_and_survive_a_restart(backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = backend.database_url();
    let server = Binary::start(data_dir.path(), database_url.as_deref());
    let mut bob = server.connect("/ws?name=bob").await;
    bob.welcome().await;
    bob.joined("general").await;
    let mut tab1 = server.connect("/ws?name=ann").await;
    let (_, session) = tab1.welcome().await;
    tab1.joined("general").await;
    let mut tab2 = common::connect_to(&server.addr, "/ws", Some(&session)).await;
    tab2.welcome().await;
    tab2.joined("general").await;
    // Ann has read nothing yet: each tab is told so, with no rooms.
    assert_eq!(read_positions(&mut tab1).await, []);
    assert_eq!(read_positions(&mut tab2).await, []);
    for i in 1..=5 {
        send_acked(&mut bob, "general", &format!("m{i}"), &format!("b{i}")).await;
    }
    // Ann's first tab has read to 2: her second tab is told at once.
    tab1.send_json(json!({"type": "read", "room": "general", "seq": 2}))
        .await;
    assert_eq!(
        read_positions(&mut tab2).await,
        [("general".to_string(), 2, 0)]
    );
    // A position never moves back.
    tab2.send_json(json!({"type": "read", "room": "general", "seq": 1}))
        .await;
    assert_eq!(
        read_positions(&mut tab1).await,
        [("general".to_string(), 1, 0)]
    );
    // Stored as it goes (a task of its own): give it a moment before the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    // After the restart, a new tab of hers is told where she was, and how much came after.
    let restarted = Binary::start(data_dir.path(), database_url.as_deref());
    let mut tab3 = common::connect_to(&restarted.addr, "/ws", Some(&session)).await;
    tab3.welcome().await;
    assert_eq!(
        read_positions(&mut tab3).await,
        [("general".to_string(), 2, 3)]
    );
    // Someone who never read anything is told no rooms; a read of a room not followed is refused.
    let mut cy = restarted.connect("/ws?name=cy").await;
    cy.welcome().await;
    cy.joined("general").await;
    assert_eq!(read_positions(&mut cy).await, []);
    cy.send_json(json!({"type": "read", "room": "dev", "seq": 1}))
        .await;
    assert_eq!(
        refusal(&mut cy).await,
        (ErrorCode::NotJoined, FrameKind::Read)
    );
}

/// Read positions are stored beside the history writer's batches (a task each): they must never make
/// a batch fail (on SQLite, a writer that reads first cannot take the database from under another).
async fn read_positions_written_beside_a_busy_writer_refuse_nothing(backend: Backend) {
    let server = TestServer::start_with(backend.config(unlimited_rate())).await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let first = send_acked(&mut ann, "general", "to edit", "a0").await;
    const ROUNDS: usize = 40;
    for i in 0..ROUNDS {
        ann.send_json(json!({"type": "read", "room": "general", "seq": first + i as u64}))
            .await;
        ann.send_json(json!({"type": "edit", "room": "general", "seq": first, "text": format!("edit {i}"), "client_id": format!("e{i}")}))
            .await;
    }
    let mut acked = 0;
    while acked < ROUNDS {
        match ann.event().await {
            ServerEvent::Ack { .. } => acked += 1,
            ServerEvent::Error { code, message, .. } => panic!("{code:?}: {message}"),
            _ => {}
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn two_tabs_of_one_person_are_one_presence() {
    let server = TestServer::start().await;
    let (mut watcher, _) = server.join("/ws?name=watcher").await;
    let mut tab1 = server.connect("/ws?name=ann").await;
    let (name, session) = tab1.welcome().await;
    tab1.joined("general").await;
    assert!(matches!(watcher.event().await, ServerEvent::Join { name, .. } if name == "ann"));

    // The second tab sends the same cookie: same person, same name, no second "joined".
    let mut tab2 = server.connect_with_cookie("/ws", Some(&session)).await;
    assert_eq!(tab2.welcome().await.0, name);
    let joined = tab2.joined("general").await;
    assert_eq!(joined.online, ["watcher", "ann"]);
    assert_eq!(joined.online_count, 2);
    // Someone else can't take that name meanwhile.
    let mut thief = server.connect("/ws?name=ANN").await;
    assert!(matches!(
        thief.event().await,
        ServerEvent::Error {
            code: ErrorCode::NameTaken,
            ..
        }
    ));

    // One tab closes: ann is still here (the watcher's next event is the message below, no leave).
    tab1.close().await;
    server.wait_for_connections(2).await;
    tab2.send_text("from the other tab").await;
    assert!(
        matches!(watcher.said().await, ServerEvent::Message { text, from, .. } if text == "from the other tab" && from == "ann")
    );
    assert_eq!(server.state.chat.online("general"), ["watcher", "ann"]);

    // The last one closes: now ann left.
    tab2.close().await;
    assert!(matches!(watcher.said().await, ServerEvent::Leave { name, .. } if name == "ann"));

    // A forged session is ignored: a new person with a new name.
    let forged = forge(&session);
    let mut stranger = server.connect_with_cookie("/ws", Some(&forged)).await;
    let (stranger_name, _) = stranger.welcome().await;
    assert_ne!(stranger_name, "ann");
    server.stop().await;
}

#[tokio::test]
async fn typing_is_announced_and_expires_on_the_server() {
    let server = TestServer::start_with(Config {
        typing_ttl: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let (mut bob, _) = server.join("/ws?name=bob").await;
    assert!(matches!(ann.event().await, ServerEvent::Join { .. }));

    let typing = |names: &[&str]| ServerEvent::Typing {
        room: "general".into(),
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    ann.send_json(json!({"type": "typing", "room": "general"}))
        .await;
    assert_eq!(bob.event().await, typing(&["ann"]));
    // Renewing it is not news.
    ann.send_json(json!({"type": "typing", "room": "general"}))
        .await;
    // No renewal: it runs out on the server (within the ttl plus the one-second sweep).
    let cleared = tokio::time::timeout(PATIENCE, bob.event()).await.unwrap();
    assert_eq!(cleared, typing(&[]));

    // Sending the message clears it at once.
    ann.send_json(json!({"type": "typing", "room": "general"}))
        .await;
    assert_eq!(bob.event().await, typing(&["ann"]));
    ann.send_text("done typing").await;
    assert_eq!(bob.event().await, typing(&[]));
    assert!(
        matches!(bob.event().await, ServerEvent::Message { text, .. } if text == "done typing")
    );

    // Typing in a room one does not follow is refused.
    ann.send_json(json!({"type": "typing", "room": "elsewhere"}))
        .await;
    loop {
        match ann.event().await {
            ServerEvent::Error { code, .. } => {
                assert_eq!(code, ErrorCode::NotJoined);
                break;
            }
            _ => continue,
        }
    }
    server.stop().await;
}

async fn history_and_sessions_survive_a_restart(backend: Backend) {
    let server = TestServer::start_with(backend.config(Config::default())).await;
    let data_dir = backend.data_dir_after(server.data_dir.clone());
    let mut ann = server.connect("/ws?name=ann").await;
    let (_, session) = ann.welcome().await;
    ann.joined("general").await;
    send_acked(&mut ann, "general", "before the restart", "r1").await;
    server.stop().await;

    let server = TestServer::start_in(backend.config(Config::default()), data_dir).await;
    let mut ann = server
        .connect_with_cookie("/ws?room=", Some(&session))
        .await;
    assert_eq!(
        ann.welcome().await.0,
        "ann",
        "sessions outlive restarts too"
    );
    ann.send_json(json!({"type": "join", "room": "general", "after": 0}))
        .await;
    let joined = ann.joined("general").await;
    assert!(joined.recovered);
    assert_eq!(joined.messages[0].text, "before the restart");
    assert_eq!(send_acked(&mut ann, "general", "after", "r2").await, 2);
    // The resend of a message from before the restart is still known.
    assert_eq!(
        send_acked(&mut ann, "general", "before the restart", "r1").await,
        1
    );
    server.stop().await;
}

async fn rotating_the_session_key_refuses_every_earlier_token(backend: Backend) {
    let server = TestServer::start_with(backend.config(Config::default())).await;
    let data_dir = backend.data_dir_after(server.data_dir.clone());
    let mut ann = server.connect("/ws?name=ann").await;
    let (_, old_session) = ann.welcome().await;
    ann.close().await;
    server.stop().await;

    let rotate = Config {
        rotate_session_key: true,
        ..Config::default()
    };
    let server = TestServer::start_in(backend.config(rotate), data_dir.clone()).await;
    assert_eq!(server.state.chat.sessions().verify(&old_session), None);
    let mut stranger = server.connect_with_cookie("/ws", Some(&old_session)).await;
    let (name, new_session) = stranger.welcome().await;
    assert_ne!(name, "ann", "the old token names no one any more");
    stranger.close().await;
    server.stop().await;

    // A start without the flag keeps the new key.
    let server = TestServer::start_in(
        backend.config(Config::default()),
        backend.data_dir_after(data_dir),
    )
    .await;
    let sessions = server.state.chat.sessions();
    assert_eq!(sessions.verify(&old_session), None);
    assert_eq!(sessions.verify(&new_session).map(|s| s.name), Some(name));
    server.stop().await;
}

/// Two nodes on one PostgreSQL database (no live bus between them: that is Redis's part): they
/// number a room's messages as one, each reads what the other stored, and a session issued by one is
/// valid on the other.
#[tokio::test]
async fn two_nodes_on_one_postgres_database_share_history_numbers_and_sessions() {
    let backend = Backend::postgres().await;
    let (one, two) = tokio::join!(
        TestServer::start_with(backend.config(unlimited_rate())),
        TestServer::start_with(backend.config(unlimited_rate()))
    );
    let mut ann = one.connect("/ws?name=ann").await;
    let (_, session) = ann.welcome().await;
    ann.joined("general").await;
    assert_eq!(send_acked(&mut ann, "general", "on one", "n1").await, 1);

    let mut ann_again = two.connect_with_cookie("/ws?room=", Some(&session)).await;
    assert_eq!(ann_again.welcome().await.0, "ann", "one key for both");
    ann_again
        .send_json(json!({"type": "join", "room": "general", "after": 0}))
        .await;
    let joined = ann_again.joined("general").await;
    assert_eq!(seqs(&joined.messages), [1]);
    assert_eq!(
        send_acked(&mut ann_again, "general", "on two", "n2").await,
        2
    );
    // The same message, resent through the other node: stored once.
    assert_eq!(
        send_acked(&mut ann_again, "general", "on one", "n1").await,
        1
    );
    assert_eq!(
        send_acked(&mut ann, "general", "on one again", "n3").await,
        3
    );

    let page = history_page(&one.http_get("/api/history?room=general").await);
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["on one", "on two", "on one again"]);
    one.stop().await;
    two.stop().await;
}

/// Writes `count` messages two days old into `room` of the (stopped) server's store, the way an old
/// deployment's history would be: the store has no API for back-dated messages.
async fn seed_old_messages(backend: &Backend, data_dir: &std::path::Path, room: &str, count: u64) {
    use sqlx::{ConnectOptions, Connection};
    let two_days_ago = now_ms() - 2 * 86_400_000;
    match backend {
        Backend::Sqlite => {
            let mut db = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(data_dir.join("chat.db"))
                .connect()
                .await
                .unwrap();
            let mut tx = db.begin().await.unwrap();
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO messages (room, seq, author_id, author, text, ts, client_id)
                 SELECT ?2, i, 1, 'old-timer', 'old ' || i, ?3, NULL FROM n",
            )
            .bind(count as i64)
            .bind(room)
            .bind(two_days_ago as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("INSERT INTO rooms (name, last_seq, created_at) VALUES (?1, ?2, ?3)")
                .bind(room)
                .bind(count as i64)
                .bind(two_days_ago as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            db.close().await.unwrap();
        }
        Backend::Postgres { url, .. } => {
            let mut db = sqlx::PgConnection::connect(url).await.unwrap();
            let mut tx = db.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO messages (room, seq, author_id, author, text, ts, client_id)
                 SELECT $2, i, 1, 'old-timer', 'old ' || i, $3, NULL FROM generate_series(1, $1) i",
            )
            .bind(count as i64)
            .bind(room)
            .bind(two_days_ago as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("INSERT INTO rooms (name, last_seq, created_at) VALUES ($1, $2, $3)")
                .bind(room)
                .bind(count as i64)
                .bind(two_days_ago as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            db.close().await.unwrap();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn acks_keep_flowing_while_retention_prunes_a_large_backlog(backend: Backend) {
    // No retention of the server's own: the test runs the pass itself.
    let config = || {
        backend.config(Config {
            retain_messages: 0,
            retain_days: Duration::ZERO,
            ..unlimited_rate()
        })
    };
    // 50,000 messages two days old in "general"; a few fresh ones in "quiet".
    const OLD: u64 = 50_000;
    let server = TestServer::start_with(config()).await;
    let data_dir = server.data_dir.clone();
    let mut bob = server.connect("/ws?name=bob&room=quiet").await;
    bob.welcome().await;
    bob.joined("quiet").await;
    for i in 0..5 {
        send_acked(&mut bob, "quiet", &format!("fresh {i}"), &format!("q{i}")).await;
    }
    server.stop().await;
    seed_old_messages(&backend, data_dir.path(), "general", OLD).await;

    let server = TestServer::start_in(config(), data_dir).await;
    let chat = server.state.chat.clone();
    let (mut ann, _) = server.join("/ws?name=ann").await;
    assert_eq!(send_acked(&mut ann, "general", "a0", "a0").await, OLD + 1);

    // The pass runs on a thread of its own, as the server's does, while ann keeps sending and waits for
    // each acknowledgement.
    let one_day = Retention {
        max_messages: 0,
        max_age: Duration::from_secs(86_400),
    };
    let pass = std::thread::spawn({
        let chat = chat.clone();
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(chat.apply_retention(one_day))
        }
    });
    let mut acked = vec![OLD + 1];
    let mut during_pass = 0;
    while !pass.is_finished() || acked.len() < 50 {
        let n = acked.len();
        acked.push(send_acked(&mut ann, "general", &format!("a{n}"), &format!("a{n}")).await);
        if !pass.is_finished() {
            during_pass += 1;
        }
    }
    let report = pass.join().unwrap().unwrap();
    eprintln!(
        "{during_pass} acks during the pass; {} batches, the longest {:?}",
        report.batches, report.longest_batch
    );

    // Every message was acknowledged, in order, with no gaps...
    let sent = acked.len() as u64;
    assert_eq!(acked, (OLD + 1..=OLD + sent).collect::<Vec<_>>());
    // ...exactly the old ones went, in batches, and only "general" was touched.
    assert_eq!(
        report.rooms,
        [Pruned {
            room: "general".into(),
            deleted: OLD,
            oldest_seq: OLD + 1
        }]
    );
    assert!(report.batches > 1);

    // A new joiner reads what is left: ann's messages, all of them, and nothing older ("general" lost
    // messages, so its in-memory recent ones were dropped); "quiet" keeps its five.
    let mut carl = server.connect("/ws?name=carl").await;
    carl.welcome().await;
    let joined = carl.joined("general").await;
    assert_eq!(joined.oldest_seq, OLD + 1);
    assert_eq!(joined.messages.last().map(|m| m.seq), Some(OLD + sent));
    assert!(joined.messages.iter().all(|m| m.from == "ann"));
    let page = history_page(&server.http_get("/api/history?room=quiet").await);
    assert_eq!(page.messages.len(), 5);
    server.stop().await;
}

/// Sends `frame` (an edit, a delete: anything acknowledged) with `client_id`, and waits for its ack.
async fn acked(client: &mut Client, frame: serde_json::Value, client_id: &str) -> u64 {
    client.send_json(frame).await;
    loop {
        match client.event().await {
            ServerEvent::Ack {
                seq,
                client_id: Some(id),
                ..
            } if id == client_id => return seq,
            ServerEvent::Error { message, .. } => panic!("refused: {message}"),
            _ => {}
        }
    }
}

/// `GET /api/search?{query}`: the status, and the page if it is 200.
async fn search(server: &TestServer, query: &str) -> (u16, Option<SearchPage>) {
    let response = server
        .http_get_raw(&format!("/api/search?{query}"), &[])
        .await;
    let page = (response.status == 200).then(|| {
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&response.body)))
    });
    (response.status, page)
}

/// (room, seq, text) of each hit of `GET /api/search?{query}`, which must answer 200.
async fn search_hits(server: &TestServer, query: &str) -> Vec<(String, u64, String)> {
    let (status, page) = search(server, query).await;
    assert_eq!(status, 200, "{query}");
    let page = page.expect("a page");
    page.hits
        .into_iter()
        .map(|hit| (hit.room, hit.seq, hit.text))
        .collect()
}

fn hit(room: &str, seq: u64, text: &str) -> (String, u64, String) {
    (room.into(), seq, text.into())
}

async fn search_finds_words_in_a_room_or_everywhere_and_survives_a_restart(backend: Backend) {
    let server = TestServer::start_with(backend.config(unlimited_rate())).await;
    let data_dir = backend.data_dir_after(server.data_dir.clone());
    let (mut ann, _) = server.join("/ws?name=ann").await;
    ann.send_json(json!({"type": "join", "room": "dev"})).await;
    ann.joined("dev").await;
    let first = send_acked(&mut ann, "general", "Hello from general", "g1").await;
    send_acked(&mut ann, "general", "the quick brown fox", "g2").await;
    // Stamped later than the first (hits of one millisecond are ordered by room, then seq).
    tokio::time::sleep(Duration::from_millis(5)).await;
    send_acked(&mut ann, "dev", "hello from dev", "d1").await;
    let secret = send_acked(&mut ann, "dev", "secret plans", "d2").await;

    // Words, in any case, newest first; in one room, or everywhere.
    assert_eq!(
        search_hits(&server, "q=HELLO").await,
        [
            hit("dev", 1, "hello from dev"),
            hit("general", first, "Hello from general")
        ]
    );
    assert_eq!(
        search_hits(&server, "q=hello&room=general").await,
        [hit("general", first, "Hello from general")]
    );
    assert_eq!(search_hits(&server, "q=secret&room=general").await, []);
    assert_eq!(
        search_hits(&server, "q=plans%20secret").await,
        [hit("dev", secret, "secret plans")]
    );
    // Each hit says who, when, and where it matched (byte ranges of its text).
    let (_, page) = search(&server, "q=fox").await;
    let page = page.expect("a page");
    let fox = &page.hits[0];
    assert_eq!(
        (fox.from.as_str(), fox.matches.as_slice()),
        ("ann", &[(16, 19)][..])
    );
    assert!(fox.ts > 0);
    assert_eq!(page.next, None);

    // An edit is found by its new text only; a deleted message not at all.
    acked(
        &mut ann,
        json!({"type": "edit", "room": "general", "seq": first, "text": "Goodbye from general", "client_id": "g3"}),
        "g3",
    )
    .await;
    acked(
        &mut ann,
        json!({"type": "delete", "room": "dev", "seq": secret, "client_id": "d3"}),
        "d3",
    )
    .await;
    assert_eq!(
        search_hits(&server, "q=hello").await,
        [hit("dev", 1, "hello from dev")]
    );
    assert_eq!(
        search_hits(&server, "q=goodbye").await,
        [hit("general", first, "Goodbye from general")]
    );
    assert_eq!(search_hits(&server, "q=secret").await, []);

    // Pages, one hit at a time, following `next`.
    let mut paged = Vec::new();
    let mut query = "q=from&limit=1".to_owned();
    loop {
        let (status, page) = search(&server, &query).await;
        assert_eq!(status, 200);
        let page = page.expect("a page");
        assert!(page.hits.len() <= 1);
        paged.extend(page.hits.into_iter().map(|hit| (hit.room, hit.seq)));
        match page.next {
            Some(next) => query = format!("q=from&limit=1&before={next}"),
            None => break,
        }
        assert!(paged.len() < 10, "paging ends");
    }
    assert_eq!(
        paged,
        [("dev".to_owned(), 1), ("general".to_owned(), first)]
    );

    // Refused with a reason (400), never a server error: no words, too long, a bad room or cursor.
    let long = "a%20".repeat(101);
    for refused in [
        "q=",
        "q=%20%20",
        "q=%2A",
        "q=%22",
        "q=%22%20%28%20%2D",
        &format!("q={long}"),
        "q=hello&room=Bad%20Room",
        "q=hello&before=yesterday",
        "q=hello&before=1.2.Bad",
        "limit=5",
    ] {
        let (status, _) = search(&server, refused).await;
        assert_eq!(status, 400, "{refused}");
    }
    // Query syntax of either engine is only words.
    for hostile in [
        "q=NEAR%28",
        "q=hello%22",
        "q=%22hello%22%20OR%20%22x%22",
        "q=%27%20OR%201%3D1%20--",
        "q=%27%29%3B%20DROP%20TABLE%20messages%3B%20--",
        "q=hello%2A",
        "q=text%3Ahello",
        "q=a%20%26%20b%20%7C%20%21c%20%3C-%3E%20d%3A%2A",
        "q=hello%00",
    ] {
        let (status, _) = search(&server, hostile).await;
        assert_eq!(status, 200, "{hostile}");
    }
    assert_eq!(
        search_hits(&server, "q=%22hello%22%20from%2A").await,
        [hit("dev", 1, "hello from dev")]
    );
    let (_, page) = search(&server, "q=from&limit=100000").await;
    assert!(page.expect("a page").hits.len() <= MAX_SEARCH_PAGE);
    ann.close().await;
    server.stop().await;

    // After a restart, everything stored before is found as it was.
    let server = TestServer::start_in(backend.config(Config::default()), data_dir).await;
    assert_eq!(
        search_hits(&server, "q=from").await,
        [
            hit("dev", 1, "hello from dev"),
            hit("general", first, "Goodbye from general")
        ]
    );
    server.stop().await;
}
