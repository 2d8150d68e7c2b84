//! Cluster mode with real engines and real processes: a private PostgreSQL and a private Redis (see
//! `tests/common`), and two or three server binaries sharing them, each on its own port. Clients talk to
//! different nodes and must see one chat.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::postgres::PgServer;
use common::redis::Redis;
use common::{Binary, Client, PATIENCE};
use groupchat::protocol::{EntryKind, ErrorCode, ServerEvent};
use serde_json::json;

/// A PostgreSQL database and a Redis, and the nodes started on them.
struct Cluster {
    database_url: String,
    redis: Redis,
    pg: PgServer,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start() -> Cluster {
        let pg = PgServer::start().await;
        Cluster {
            database_url: pg.create_database().await,
            redis: Redis::start(),
            pg,
            dirs: Vec::new(),
        }
    }

    /// Starts node `id`, serving until dropped (or killed).
    fn node(&mut self, id: &str) -> Binary {
        let dir = tempfile::tempdir().expect("a data directory");
        let redis_url = self.redis.url();
        let node = Binary::start_with(
            dir.path(),
            &[
                ("DATABASE_URL", &self.database_url),
                ("REDIS_URL", &redis_url),
                ("CHAT_NODE_ID", id),
                ("CHAT_MSG_RATE", "1000"),
                ("CHAT_MSG_BURST", "1000"),
                ("CHAT_ROOM_COUNTS_EVERY", "0.2"),
                ("CHAT_ADMIN_TOKEN", "operator-token"),
            ],
        );
        self.dirs.push(dir);
        node
    }
}

/// Connects `name` to `node` and reads the welcome and `general`'s `joined`.
async fn enter(node: &Binary, name: &str) -> (Client, common::Joined) {
    let mut client = node.connect(&format!("/ws?name={name}")).await;
    client.welcome().await;
    let joined = client.joined("general").await;
    (client, joined)
}

fn message(text: &str, client_id: &str) -> serde_json::Value {
    json!({"type": "message", "room": "general", "text": text, "client_id": client_id})
}

/// Reads events until `count` messages have come; returns them as (seq, text), skipping the rest.
async fn messages(client: &mut Client, count: usize, patience: Duration) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + patience;
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages came: {seen:?}",
            seen.len()
        );
        if let ServerEvent::Message { seq, text, .. } = client.event().await {
            seen.push((seq, text));
        }
    }
    seen
}

/// Waits until `client` hears that `name` joined (or left, with `joined: false`); other events are
/// skipped.
async fn presence_of(client: &mut Client, name: &str, joined: bool, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        assert!(Instant::now() < deadline, "no news of {name}");
        match client.event_within(patience).await {
            ServerEvent::Join { name: n, .. } if joined && n == name => return,
            ServerEvent::Leave { name: n, .. } if !joined && n == name => return,
            _ => {}
        }
    }
}

/// Waits up to [`PATIENCE`] until `node`'s room list counts `online` people in a room (cluster-wide).
async fn room_list_counts(node: &Binary, online: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rooms = common::http_get(&node.addr, "/api/rooms").await;
        if rooms.contains(&format!("\"online\":{online}")) {
            return;
        }
        assert!(Instant::now() < deadline, "never {online} online: {rooms}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `patience` for a node's `/healthz` to say `status`.
async fn health_becomes(node: &Binary, status: &str, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let health = common::http_get(&node.addr, "/healthz").await;
        if health.contains(&format!("\"status\":\"{status}\"")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "healthz never said {status}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn messages_sent_on_two_nodes_reach_three_nodes_in_one_order() {
    let mut cluster = Cluster::start().await;
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));
    for node in [&a, &b, &c] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    let (mut cat, _) = enter(&c, "cat").await;
    // Ann and Bob send 30 each, at once, without waiting for anything.
    for i in 0..30 {
        ann.send_json(message(&format!("ann {i}"), &format!("a{i}")))
            .await;
        bob.send_json(message(&format!("bob {i}"), &format!("b{i}")))
            .await;
    }
    let patience = Duration::from_secs(10);
    let seen_by_ann = messages(&mut ann, 60, patience).await;
    // Every metric says which node it is from, and the bus's are there (connected: on a loaded
    // machine the bus may be just reconnecting, so this waits a little for it).
    let deadline = Instant::now() + patience;
    for wanted in [
        "chat_bus_connected{node=\"a\"} 1",
        "chat_messages_stored_total{node=\"a\"}",
    ] {
        loop {
            let metrics = common::http_get(&a.addr, "/metrics").await;
            if metrics.contains(wanted) {
                break;
            }
            assert!(Instant::now() < deadline, "{wanted} missing from {metrics}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seen_by_bob = messages(&mut bob, 60, patience).await;
    let seen_by_cat = messages(&mut cat, 60, patience).await;
    // One order, the same for everyone, numbered 1..=60 with no gap; each sender's own in its order.
    let seqs: Vec<u64> = seen_by_cat.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    assert_eq!(seen_by_ann, seen_by_cat);
    assert_eq!(seen_by_bob, seen_by_cat);
    for who in ["ann", "bob"] {
        let own: Vec<&str> = seen_by_cat
            .iter()
            .filter(|(_, t)| t.starts_with(who))
            .map(|(_, t)| t.as_str())
            .collect();
        let sent: Vec<String> = (0..30).map(|i| format!("{who} {i}")).collect();
        assert_eq!(own, sent);
    }
}

/// Messages reach each node both from its own writer and over the bus, interleaved within
/// milliseconds: at this rate a node's rooms are forever holding one message for an earlier one and
/// filling gaps from the store, and not one may be lost or doubled.
#[tokio::test]
async fn a_burst_sent_on_two_nodes_at_once_reaches_everyone_exactly_once_in_order() {
    const SENDERS_PER_NODE: usize = 2;
    const EACH: usize = 300;
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let mut senders = Vec::new();
    for (node, id) in [(&a, "a"), (&b, "b")] {
        for i in 0..SENDERS_PER_NODE {
            senders.push(enter(node, &format!("{id}{i}")).await.0);
        }
    }
    let (mut watcher_a, _) = enter(&a, "watcher-a").await;
    let (mut watcher_b, _) = enter(&b, "watcher-b").await;
    // Every sender writes its whole share at once, as fast as it can while still reading: with up to
    // 32 messages unacknowledged (one that reads nothing is a slow consumer, and closed).
    let total = senders.len() * EACH;
    let patience = Duration::from_secs(30);
    let mut sending = tokio::task::JoinSet::new();
    for (n, mut sender) in senders.into_iter().enumerate() {
        sending.spawn(async move {
            let (mut seen, mut acked) = (Vec::new(), 0);
            for i in 0..EACH {
                sender
                    .send_json(message(&format!("{n}:{i}"), &format!("{n}-{i}")))
                    .await;
                while acked + 32 <= i {
                    match sender.event_within(patience).await {
                        ServerEvent::Ack { .. } => acked += 1,
                        ServerEvent::Message { seq, text, .. } => seen.push((seq, text)),
                        _ => {}
                    }
                }
            }
            seen.extend(messages(&mut sender, total - seen.len(), patience).await);
            seen
        });
    }
    let seen_by_a = messages(&mut watcher_a, total, patience).await;
    let seen_by_b = messages(&mut watcher_b, total, patience).await;
    let seqs: Vec<u64> = seen_by_a.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(seen_by_a, seen_by_b);
    // The senders, too, each got every message once, in the same order.
    while let Some(seen) = sending.join_next().await {
        assert_eq!(seen.expect("a sender"), seen_by_a);
    }
    // Each sender's own messages in the order it sent them.
    for n in 0..2 * SENDERS_PER_NODE {
        let prefix = format!("{n}:");
        let own: Vec<&str> = seen_by_a
            .iter()
            .filter(|(_, t)| t.starts_with(&prefix))
            .map(|(_, t)| t.as_str())
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{n}:{i}")).collect();
        assert_eq!(own, sent);
    }
}

/// Room lists count everyone in the cluster: a page on one node is pushed the counts of people on
/// the others.
#[tokio::test]
async fn pushed_online_counts_count_the_people_on_every_node() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    bob.send_json(json!({"type": "join", "room": "dev"})).await;
    bob.joined("dev").await;
    let patience = Duration::from_secs(10);
    let deadline = Instant::now() + patience;
    let mut known = std::collections::BTreeMap::new();
    let everyone =
        std::collections::BTreeMap::from([("general".to_string(), 2), ("dev".into(), 1)]);
    while known != everyone {
        assert!(Instant::now() < deadline, "ann's counts stayed {known:?}");
        known.extend(ann.room_counts(patience).await);
        known.retain(|_, count| *count > 0);
    }
    // Bob's node goes away cleanly: his rooms empty on ann's list.
    drop(bob);
    drop(b);
    while known != std::collections::BTreeMap::from([("general".to_string(), 1)]) {
        assert!(
            Instant::now() < deadline + patience,
            "ann's counts stayed {known:?}"
        );
        known.extend(ann.room_counts(patience).await);
        known.retain(|_, count| *count > 0);
    }
}

/// Edits, deletes and replies cross nodes like messages: in the room's one order, with the author
/// rule enforced whichever node the change comes through.
#[tokio::test]
async fn edits_deletes_and_replies_made_on_one_node_show_on_another() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    ann.send_json(message("on node a", "a1")).await;
    let ServerEvent::Message { seq: first, .. } = bob.entry(1).await else {
        unreachable!()
    };
    // Bob, on the other node, may not change it.
    bob.send_json(json!({"type": "edit", "room": "general", "seq": first, "text": "bob's now"}))
        .await;
    assert_eq!(bob.refused().await.0, ErrorCode::NotAuthor);
    // He replies, ann edits hers, then deletes it: each seen on the other node, in one order.
    bob.send_json(
        json!({"type": "message", "room": "general", "text": "from b", "reply_to": first}),
    )
    .await;
    let ServerEvent::Message { reply_to, .. } = ann.entry(2).await else {
        unreachable!()
    };
    assert_eq!(
        reply_to.map(|q| (q.seq, q.text)),
        Some((first, "on node a".into()))
    );
    // Bob reacts from node b: ann sees it on node a.
    bob.send_json(json!({"type": "react", "room": "general", "seq": 2, "emoji": "👀"}))
        .await;
    let ServerEvent::Message {
        kind, target, text, ..
    } = ann.entry(3).await
    else {
        unreachable!()
    };
    assert_eq!(
        (kind, target, text.as_str()),
        (EntryKind::React, Some(2), "👀")
    );
    ann.send_json(json!({"type": "edit", "room": "general", "seq": first, "text": "edited on a"}))
        .await;
    let ServerEvent::Message {
        kind, target, text, ..
    } = bob.entry(4).await
    else {
        unreachable!()
    };
    assert_eq!(
        (kind, target, text.as_str()),
        (EntryKind::Edit, Some(first), "edited on a")
    );
    ann.send_json(json!({"type": "delete", "room": "general", "seq": first}))
        .await;
    let ServerEvent::Message { kind, target, .. } = bob.entry(5).await else {
        unreachable!()
    };
    assert_eq!((kind, target), (EntryKind::Delete, Some(first)));
    // A newcomer on node b sees the messages as they are now.
    let (_, joined) = enter(&b, "cat").await;
    let now: Vec<(u64, bool, Option<String>, usize)> = joined
        .messages
        .iter()
        .map(|m| {
            let quote = m.reply_to.as_ref().map(|q| q.text.clone());
            (m.seq, m.deleted, quote, m.reactions.len())
        })
        .collect();
    assert_eq!(
        now,
        [(1, true, None, 0), (2, false, Some(String::new()), 1)]
    );
}

/// A person's read position follows them across nodes: a tab on one node reads, their tab on the
/// other is told, and a later tab anywhere is told where they were.
#[tokio::test]
async fn a_read_position_moved_on_one_node_reaches_the_persons_tabs_on_another() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let mut on_a = a.connect("/ws?name=ann").await;
    let (_, session) = on_a.welcome().await;
    on_a.joined("general").await;
    let mut on_b = common::connect_to(&b.addr, "/ws", Some(&session)).await;
    on_b.welcome().await;
    on_b.joined("general").await;
    // Nothing read yet: each tab is told no rooms.
    assert!(on_a.read_positions().await.is_empty());
    assert!(on_b.read_positions().await.is_empty());
    // Bob, on node b, says three things.
    let (mut bob, _) = enter(&b, "bob").await;
    for i in 0..3 {
        bob.send_json(message(&format!("m{i}"), &format!("b{i}")))
            .await;
    }
    messages(&mut on_b, 3, PATIENCE).await;
    on_b.send_json(json!({"type": "read", "room": "general", "seq": 2}))
        .await;
    let told = on_a.read_positions().await;
    assert_eq!(told.get("general").map(|p| p.seq), Some(2));
    // A new tab, on either node, starts from the stored position: one message after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut later = common::connect_to(&a.addr, "/ws", Some(&session)).await;
    later.welcome().await;
    let told = later.read_positions().await;
    let general = told.get("general").copied().unwrap_or_default();
    assert_eq!((general.seq, general.unread), (2, 1));
}

/// A ban set through one node's admin API closes the banned person's socket on another node at once
/// (told over the bus), and that node refuses them too.
#[tokio::test]
async fn a_ban_set_on_one_node_closes_the_banned_on_another() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let mut bob = b.connect("/ws?name=bob").await;
    let (_, session) = bob.welcome().await;
    bob.joined("general").await;
    let banned = common::http_request(
        &a.addr,
        "POST",
        "/api/admin/bans",
        &[("Authorization", "Bearer operator-token")],
        Some(r#"{"name": "bob", "reason": "spam"}"#),
    )
    .await;
    assert_eq!(
        banned.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&banned.body)
    );
    let started = Instant::now();
    let close = bob.closed().await;
    assert_eq!(u16::from(close.code), 1008);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut again = common::connect_to(&b.addr, "/ws", Some(&session)).await;
    assert_eq!(again.refused().await.0, ErrorCode::Banned);
}

#[tokio::test]
async fn a_name_online_on_one_node_is_refused_on_another_until_it_is_free() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (ann, _) = enter(&a, "ann").await;
    let mut impostor = b.connect("/ws?name=ann").await;
    match impostor.event().await {
        ServerEvent::Error { code, .. } => assert_eq!(code, ErrorCode::NameTaken),
        other => panic!("expected name_taken, got {other:?}"),
    }
    assert_eq!(u16::from(impostor.closed().await.code), 1008);
    // A look-alike is the same name.
    let mut look_alike = b.connect("/ws?name=%D0%B0nn").await; // Cyrillic а
    assert!(matches!(
        look_alike.event().await,
        ServerEvent::Error {
            code: ErrorCode::NameTaken,
            ..
        }
    ));
    // Once ann is gone, the name is free everywhere.
    ann.close().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = b.connect("/ws?name=ann").await;
        if let ServerEvent::Welcome { name, .. } = again.event().await {
            assert_eq!(name, "ann");
            break;
        }
        assert!(Instant::now() < deadline, "the name was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn joins_and_leaves_on_one_node_are_seen_on_another() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (mut ann, _) = enter(&a, "ann").await;
    let (bob, joined) = enter(&b, "bob").await;
    presence_of(&mut ann, "bob", true, PATIENCE).await;
    // Bob's snapshot counts ann, on the other node (her presence may take a moment to reach b).
    if !joined.online.contains(&"ann".to_string()) {
        room_list_counts(&b, 2).await;
    }
    bob.close().await;
    presence_of(&mut ann, "bob", false, PATIENCE).await;
}

#[tokio::test]
async fn a_client_of_one_node_rejoins_on_another_and_gets_exactly_what_it_missed() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    for i in 1..=5 {
        ann.send_json(message(&format!("before {i}"), &format!("a{i}")))
            .await;
    }
    let seen = messages(&mut ann, 5, PATIENCE).await;
    let last = seen.last().map(|(seq, _)| *seq).unwrap();
    ann.close().await;
    for i in 1..=3 {
        bob.send_json(message(&format!("missed {i}"), &format!("b{i}")))
            .await;
    }
    messages(&mut bob, 8, PATIENCE).await;
    // Ann comes back through the other node, with what she had.
    let mut ann = b.connect("/ws?name=ann&room=").await;
    ann.welcome().await;
    ann.send_json(json!({"type": "join", "room": "general", "after": last}))
        .await;
    let joined = ann.joined("general").await;
    assert!(joined.recovered);
    let texts: Vec<&str> = joined.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["missed 1", "missed 2", "missed 3"]);
    assert_eq!(joined.messages[0].seq, last + 1);
}

#[tokio::test]
async fn the_people_of_a_killed_node_leave_everyone_else_within_15_seconds() {
    let mut cluster = Cluster::start().await;
    let a = cluster.node("a");
    let mut b = cluster.node("b");
    let (mut ann, _) = enter(&a, "ann").await;
    let (_bob, _) = enter(&b, "bob").await;
    presence_of(&mut ann, "bob", true, PATIENCE).await;
    let killed = Instant::now();
    b.kill();
    presence_of(&mut ann, "bob", false, Duration::from_secs(20)).await;
    let took = killed.elapsed();
    eprintln!("bob left ann's presence {took:?} after his node was killed");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_traffic_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    let mut acked = Vec::new();
    for i in 0..60 {
        if i == 20 {
            cluster.redis.kill();
            health_becomes(&a, "degraded", PATIENCE).await;
        }
        if i == 40 {
            cluster.redis.resume();
        }
        ann.send_json(message(&format!("m{i}"), &format!("m{i}")))
            .await;
        // Ann waits for each acknowledgement: every one of them must reach bob.
        loop {
            match ann.event().await {
                ServerEvent::Ack { seq, .. } => {
                    acked.push(seq);
                    break;
                }
                ServerEvent::Error { code, .. } => panic!("refused: {code:?}"),
                _ => {}
            }
        }
    }
    health_becomes(&a, "ok", Duration::from_secs(10)).await;
    let seen = messages(&mut bob, 60, Duration::from_secs(15)).await;
    let seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs, acked,
        "bob sees every acknowledged message once, in order"
    );
    let texts: Vec<String> = seen.into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, (0..60).map(|i| format!("m{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_postgres_restart_mid_traffic_refuses_sends_then_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    // Ann sends 40 messages as the page does: each resent (same client_id) after an `unavailable`,
    // until acknowledged. The database goes away after the 15th, and comes back after three refusals.
    let mut refused = 0;
    let mut acks: HashMap<String, u64> = HashMap::new();
    for i in 0..40 {
        if i == 15 {
            cluster.pg.pause();
        }
        let id = format!("m{i}");
        loop {
            ann.send_json(message(&id, &id)).await;
            let outcome = loop {
                match ann.event_within(Duration::from_secs(30)).await {
                    ServerEvent::Ack { seq, client_id, .. } => break Ok((seq, client_id)),
                    ServerEvent::Error { code, .. } => break Err(code),
                    _ => {}
                }
            };
            match outcome {
                Ok((seq, Some(client_id))) => {
                    assert_eq!(client_id, id);
                    acks.insert(id.clone(), seq);
                    break;
                }
                Ok((_, None)) => panic!("an ack without the client_id"),
                Err(ErrorCode::Unavailable) => {
                    refused += 1;
                    if refused == 3 {
                        cluster.pg.resume().await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(other) => panic!("refused with {other:?}"),
            }
        }
    }
    eprintln!("{refused} sends refused while PostgreSQL restarted");
    assert!(refused > 0, "the restart was noticed");
    let seen = messages(&mut bob, 40, Duration::from_secs(15)).await;
    let texts: Vec<String> = seen.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(texts, (0..40).map(|i| format!("m{i}")).collect::<Vec<_>>());
    for (seq, text) in &seen {
        assert_eq!(acks[text], *seq);
    }
}

#[tokio::test]
async fn redis_without_a_shared_database_is_refused_at_start() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_groupchat"))
        .env_remove("DATABASE_URL")
        .env("REDIS_URL", redis.url())
        .env("DATA_DIR", dir.path())
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--redis-url needs a shared database"),
        "{stderr}"
    );
}

/// The next text frame of an original-format client.
async fn line(client: &mut Client) -> String {
    match client.frame().await {
        tokio_tungstenite::tungstenite::Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a line, got {other:?}"),
    }
}

#[tokio::test]
async fn original_clients_on_two_nodes_chat_in_the_original_format() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    for node in [&a, &b] {
        health_becomes(node, "ok", PATIENCE).await;
    }
    let mut one = a.connect("/ws/1001").await;
    let mut two = b.connect("/ws/1002").await;
    // The original format has no "joined": an original client hears what is said after it arrived.
    // Both are counted in the room, on both nodes, before anyone speaks.
    for node in [&a, &b] {
        room_list_counts(node, 2).await;
    }
    one.send_text("hello from a").await;
    two.send_text("hello from b").await;
    let mut heard_by_one = vec![line(&mut one).await, line(&mut one).await];
    let mut heard_by_two = vec![line(&mut two).await, line(&mut two).await];
    heard_by_one.sort();
    heard_by_two.sort();
    let both = [
        "Client #1001 says: hello from a".to_string(),
        "Client #1002 says: hello from b".to_string(),
    ];
    assert_eq!(heard_by_one, both);
    assert_eq!(heard_by_two, both);
    two.close().await;
    assert_eq!(line(&mut one).await, "Client #1002 left the chat");
}

#[tokio::test]
async fn typing_on_one_node_shows_on_another() {
    let mut cluster = Cluster::start().await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let (mut ann, _) = enter(&a, "ann").await;
    let (mut bob, _) = enter(&b, "bob").await;
    presence_of(&mut ann, "bob", true, PATIENCE).await;
    bob.send_json(json!({"type": "typing", "room": "general"}))
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "ann never saw bob typing");
        if let ServerEvent::Typing { names, .. } = ann.event().await {
            if names == ["bob"] {
                break;
            }
        }
    }
    // His message ends it, there too.
    bob.send_json(message("done", "t1")).await;
    loop {
        assert!(
            Instant::now() < deadline,
            "bob's typing never ended for ann"
        );
        if let ServerEvent::Typing { names, .. } = ann.event().await {
            if names.is_empty() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_node_stopped_cleanly_lets_its_people_go_at_once() {
    let mut cluster = Cluster::start().await;
    let a = cluster.node("a");
    let mut b = cluster.node("b");
    let (mut ann, _) = enter(&a, "ann").await;
    let (_bob, _) = enter(&b, "bob").await;
    presence_of(&mut ann, "bob", true, PATIENCE).await;
    let stopped = Instant::now();
    // SIGTERM: node b closes its sockets and gives up its lease before it exits.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
    let _ = b.child.wait();
    presence_of(&mut ann, "bob", false, Duration::from_secs(20)).await;
    let took = stopped.elapsed();
    eprintln!("bob left {took:?} after his node was stopped");
    // Well inside the lease (8 s): the lease was given up, not waited out.
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
