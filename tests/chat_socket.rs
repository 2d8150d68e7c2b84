//! The chat over real sockets: the server on 127.0.0.1:0, clients speaking tungstenite.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{Client, TestServer, PATIENCE};
use futures::SinkExt;
use groupchat::protocol::{ErrorCode, ServerEvent, MAX_NAME_CHARS};
use groupchat::server::Config;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn message_text(event: &ServerEvent) -> (&str, &str, u64) {
    match event {
        ServerEvent::Message {
            from, text, seq, ..
        } => (from.as_str(), text.as_str(), *seq),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn expect_error(client: &mut Client, code: ErrorCode) {
    match client.event().await {
        ServerEvent::Error {
            code: got, message, ..
        } => {
            assert_eq!(got, code, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a {code:?} error, got {other:?}"),
    }
}

#[tokio::test]
async fn broadcast_reaches_every_client_exactly_once_in_send_order() {
    // Senders here go faster than the default per-connection rate limit allows.
    let server = TestServer::start_with(Config {
        msg_rate: 10_000.0,
        msg_burst: 10_000.0,
        ..Config::default()
    })
    .await;
    let mut clients = server.join_many(6).await;
    const PER_SENDER: usize = 40;

    // Two senders at once: each sends its own numbered sequence, as JSON and as plain text.
    let (mut first, first_name) = clients.remove(0);
    let (mut second, second_name) = clients.remove(0);
    let send_first = async {
        for i in 0..PER_SENDER {
            first
                .send_text(&format!(r#"{{"type":"message","text":"a{i}"}}"#))
                .await;
        }
        first
    };
    let send_second = async {
        for i in 0..PER_SENDER {
            second.send_text(&format!("b{i}")).await;
        }
        second
    };
    let (first, second) = tokio::join!(send_first, send_second);
    clients.push((first, first_name.clone()));
    clients.push((second, second_name.clone()));

    // Every client, senders included, gets all 80 messages once, each sender's in its order, and all
    // clients see the same interleaving (the server's one order).
    let mut orders = Vec::new();
    for (client, _) in clients.iter_mut() {
        let mut seen = Vec::new();
        for _ in 0..2 * PER_SENDER {
            let event = client.said().await;
            let (from, text, id) = message_text(&event);
            let expected_prefix = if from == first_name { 'a' } else { 'b' };
            assert!(text.starts_with(expected_prefix), "{from} sent {text}");
            seen.push((id, text.to_owned()));
        }
        for prefix in ['a', 'b'] {
            let own: Vec<&str> = seen
                .iter()
                .map(|(_, t)| t.as_str())
                .filter(|t| t.starts_with(prefix))
                .collect();
            let expected: Vec<String> = (0..PER_SENDER).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(
                own, expected,
                "{prefix}-messages arrive once each, in order"
            );
        }
        assert!(
            seen.iter()
                .map(|(seq, _)| *seq)
                .eq(1..=2 * PER_SENDER as u64),
            "sequence numbers are 1, 2, 3… with no gaps"
        );
        orders.push(seen);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "one order for all");
    server.stop().await;
}

#[tokio::test]
async fn join_and_leave_are_announced_to_the_others() {
    let server = TestServer::start().await;
    let (mut ann, ann_name) = server.join("/ws?name=ann").await;
    assert_eq!(ann_name, "ann");

    let mut bob = server.connect("/ws?name=bob").await;
    assert_eq!(bob.welcome().await.0, "bob");
    let joined = bob.joined("general").await;
    assert_eq!(joined.online, vec!["ann", "bob"]);
    assert_eq!(joined.online_count, 2);
    assert!(matches!(ann.event().await, ServerEvent::Join { name, .. } if name == "bob"));

    bob.close().await;
    assert!(matches!(ann.event().await, ServerEvent::Leave { name, .. } if name == "bob"));
    // Ann's own traffic still flows.
    ann.send_text("still here").await;
    assert_eq!(message_text(&ann.said().await).1, "still here");
    server.stop().await;
}

/// Applies `client`'s pushed online counts to `known`, as a page does, until they read `expected`.
async fn counts_become(
    client: &mut Client,
    known: &mut BTreeMap<String, usize>,
    expected: &[(&str, usize)],
) {
    let expected: BTreeMap<String, usize> = expected
        .iter()
        .map(|(room, n)| (room.to_string(), *n))
        .collect();
    while *known != expected {
        for (room, count) in client.room_counts(PATIENCE).await {
            if count == 0 {
                known.remove(&room);
            } else {
                known.insert(room, count);
            }
        }
    }
}

/// A room list follows who is online without polling: pushed counts, only of what changed.
#[tokio::test]
async fn every_page_is_pushed_the_rooms_online_counts_as_they_change() {
    let server = TestServer::start_with(Config {
        room_counts_every: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let mut ann_knows = BTreeMap::new();
    counts_become(&mut ann, &mut ann_knows, &[("general", 1)]).await;
    // Bob arrives, in `dev` too.
    let (mut bob, _) = server.join("/ws?name=bob").await;
    bob.send_json(json!({"type": "join", "room": "dev"})).await;
    bob.joined("dev").await;
    counts_become(&mut ann, &mut ann_knows, &[("general", 2), ("dev", 1)]).await;
    // A page that connects now is told every room with people at once, after its welcome.
    let mut cy = server.connect("/ws?name=cy").await;
    cy.welcome().await;
    assert_eq!(
        cy.room_counts(PATIENCE).await,
        BTreeMap::from([("general".into(), 2), ("dev".into(), 1)])
    );
    // Bob leaves: `dev` is empty (told 0, so forgotten), `general` has ann and cy.
    bob.close().await;
    counts_become(&mut ann, &mut ann_knows, &[("general", 2)]).await;
    let mut cy_knows = BTreeMap::from([("general".into(), 2), ("dev".into(), 1)]);
    counts_become(&mut cy, &mut cy_knows, &[("general", 2)]).await;
    server.stop().await;
}

/// Formatting arrives as HTML the server wrote, where hostile input is inert; plain text has none.
#[tokio::test]
async fn markdown_is_rendered_by_the_server_and_hostile_input_stays_text() {
    let server = TestServer::start().await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let hostile = "**bold** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)> https://example.com";
    ann.send_json(json!({"type": "message", "text": hostile}))
        .await;
    let ServerEvent::Message { text, html, .. } = ann.said().await else {
        panic!("expected the message");
    };
    assert_eq!(text, hostile, "the text stays as sent");
    let html = html.expect("formatted");
    assert!(html.contains("<strong>bold</strong>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("href=\"javascript"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("<a href=\"https://example.com\" rel=\"noopener noreferrer\""),
        "{html}"
    );
    ann.send_text("just words").await;
    let ServerEvent::Message { html, .. } = ann.said().await else {
        panic!("expected the message");
    };
    assert_eq!(html, None);
    // History pages carry the same HTML.
    let page = server.http_get("/api/history?room=general").await;
    assert!(
        page.contains("\\u003cstrong\\u003ebold") || page.contains("<strong>bold"),
        "{page}"
    );
    server.stop().await;
}

#[tokio::test]
async fn assigned_names_are_readable_and_never_alike() {
    let server = TestServer::start().await;
    let mut names = HashSet::new();
    let mut clients = Vec::new();
    for _ in 0..60 {
        let (client, name) = server.join("/ws").await;
        assert!(!name.trim().is_empty() && name.chars().count() <= MAX_NAME_CHARS);
        assert!(names.insert(name.to_lowercase()), "{name} assigned twice");
        clients.push(client);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_taken_name_is_refused_with_an_error_and_a_close() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.join("/ws?name=Alice").await;

    // Names differing only in case count as the same name.
    let mut clash = server.connect("/ws?name=%20alice%20").await;
    expect_error(&mut clash, ErrorCode::NameTaken).await;
    assert_eq!(clash.closed().await.code, CloseCode::Policy);

    // Alice saw nothing of it, and the name is free again once she leaves.
    alice.send_text("hi").await;
    assert_eq!(message_text(&alice.said().await).1, "hi");
    alice.close().await;
    server.wait_for_connections(0).await;
    let (_again, name) = server.join("/ws?name=alice").await;
    assert_eq!(name, "alice");
    server.stop().await;
}

#[tokio::test]
async fn bad_names_are_refused_with_an_error_and_a_close() {
    let server = TestServer::start().await;
    let too_long = "x".repeat(MAX_NAME_CHARS + 1);
    for query in ["%20%20%20", too_long.as_str(), "bell%07", ""] {
        let mut client = server.connect(&format!("/ws?name={query}")).await;
        expect_error(&mut client, ErrorCode::BadName).await;
        assert_eq!(client.closed().await.code, CloseCode::Policy, "{query:?}");
    }
    server.wait_for_connections(0).await;
    server.stop().await;
}

#[tokio::test]
async fn the_legacy_route_names_the_client_by_its_id() {
    let server = TestServer::start().await;
    let (mut client, name) = server.join("/ws/42?format=json").await;
    assert_eq!(name, "Client #42");
    client.send_text("hello from the old client").await;
    assert_eq!(
        message_text(&client.said().await),
        ("Client #42", "hello from the old client", 1)
    );
    // The same id twice at once is a name clash, like any other.
    let mut twin = server.connect("/ws/42?format=json").await;
    expect_error(&mut twin, ErrorCode::NameTaken).await;
    server.stop().await;
}

#[tokio::test]
async fn plain_text_frames_are_messages() {
    let server = TestServer::start().await;
    let (mut client, name) = server.join("/ws").await;
    for text in ["hello", "  spaced  ", "42", r#""quoted""#, "[1,2]"] {
        client.send_text(text).await;
        let event = client.said().await;
        let (from, got, _) = message_text(&event);
        assert_eq!((from, got), (name.as_str(), text));
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_connection_keeps_working() {
    let server = TestServer::start().await;
    let (mut client, _) = server.join("/ws").await;
    let (mut other, _) = server.join("/ws").await;
    assert!(matches!(client.event().await, ServerEvent::Join { .. }));

    client.send_text("{not json").await;
    expect_error(&mut client, ErrorCode::BadJson).await;
    client.send_text(r#"{"type":"dance","moves":3}"#).await;
    expect_error(&mut client, ErrorCode::UnknownType).await;
    client.send_text(r#"{"text":"no type"}"#).await;
    expect_error(&mut client, ErrorCode::UnknownType).await;
    client.send_text("   ").await;
    expect_error(&mut client, ErrorCode::EmptyMessage).await;
    client
        .ws
        .send(Message::Binary(vec![0, 159, 146, 150].into()))
        .await
        .unwrap();
    expect_error(&mut client, ErrorCode::BinaryFrame).await;

    // Still usable, and the other client saw none of the refused frames.
    client
        .send_text(r#"{"type":"message","text":"after all that"}"#)
        .await;
    assert_eq!(message_text(&client.said().await).1, "after all that");
    assert_eq!(message_text(&other.said().await).1, "after all that");
    server.stop().await;
}

#[tokio::test]
async fn the_manager_holds_nothing_once_everyone_is_gone() {
    let server = TestServer::start().await;
    let clients = server.join_many(10).await;
    server.wait_for_connections(10).await;
    for (i, (client, _)) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            client.close().await; // a proper close handshake
        } else {
            drop(client); // the TCP connection just goes away
        }
    }
    server.wait_for_connections(0).await;
    assert!(server.state.chat.online("general").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_going_away() {
    let server = TestServer::start().await;
    let mut clients = server.join_many(3).await;
    server.stop().await;
    for (client, _) in clients.iter_mut() {
        assert_eq!(client.closed().await.code, CloseCode::Away);
    }
}

#[tokio::test]
async fn the_page_is_rendered_on_the_server() {
    let server = TestServer::start().await;
    let response = server.http_get("/").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("<title>Group chat</title>"), "{response}");
    assert!(response.contains(r#"class="messages""#), "{response}");
    assert!(
        response.contains("/pkg/groupchat.js"),
        "hydration script: {response}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_room_page_has_one_address_and_other_paths_are_not_found() {
    let server = TestServer::start().await;
    let room = server.http_get_raw("/r/dev", &[]).await;
    assert_eq!(room.status, 200);
    assert!(String::from_utf8_lossy(&room.body).contains(r#"data-room="dev""#));
    // With a trailing slash: sent to the one address, the query kept.
    let slash = server.http_get_raw("/r/dev/?name=ann", &[]).await;
    assert_eq!(slash.status, 308);
    assert_eq!(slash.header("location"), Some("/r/dev?name=ann"));
    for path in ["/x", "/r/", "/r/a/b"] {
        let missing = server.http_get_raw(path, &[]).await;
        assert_eq!(missing.status, 404, "{path}");
        assert!(
            String::from_utf8_lossy(&missing.body).contains("Page not found."),
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_application_ping_gets_a_pong_for_that_client_only() {
    let server = TestServer::start().await;
    let (mut asker, _) = server.join("/ws").await;
    let (mut other, _) = server.join("/ws").await;
    assert!(matches!(asker.event().await, ServerEvent::Join { .. }));

    asker.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(asker.event().await, ServerEvent::Pong);
    // The other client got nothing from it: its next event is the next message.
    asker.send_text("after the ping").await;
    assert_eq!(message_text(&other.said().await).1, "after the ping");
    server.stop().await;
}
