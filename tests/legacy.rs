//! The original FastAPI chat's clients on `/ws/{client_id}`, unchanged: its wire format (plain text
//! lines, `Client #{id} says: {text}` and `Client #{id} left the chat`, nothing else) next to the JSON
//! protocol of `/ws`, and `?format=json` for the JSON protocol on that route. The real server on
//! 127.0.0.1:0, driven over real sockets.

mod common;

use common::{Client, TestServer, PATIENCE};
use futures::SinkExt;
use groupchat::api::HistoryPage;
use groupchat::protocol::{ErrorCode, ServerEvent};
use groupchat::server::Config;
use tokio_tungstenite::tungstenite::{self, Message};

/// The next frame, which must be a text frame: one line of the original format.
async fn line(client: &mut Client) -> String {
    match client.frame().await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text line, got {other:?}"),
    }
}

/// Waits (bounded) until `name` is online in `general`.
async fn until_online(server: &TestServer, name: &str) {
    let chat = server.state.chat.clone();
    let online = tokio::time::timeout(PATIENCE, async {
        while !chat.online("general").iter().any(|n| n == name) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(online.is_ok(), "{name} never came online");
}

/// An original client on `/ws/{id}`, once it is in the room (it is told nothing of that itself).
async fn original(server: &TestServer, id: u64) -> Client {
    let client = server.connect(&format!("/ws/{id}")).await;
    until_online(server, &format!("Client #{id}")).await;
    client
}

/// The history of `general`, as `/api/history` serves it.
async fn history(server: &TestServer) -> Vec<(String, String)> {
    let response = server.http_get("/api/history?room=general").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    let page: HistoryPage = serde_json::from_str(body).expect("a history page");
    page.messages
        .into_iter()
        .map(|m| (m.from, m.text))
        .collect()
}

#[tokio::test]
async fn two_original_clients_chat_in_exactly_the_original_format() {
    let server = TestServer::start().await;
    let mut first = original(&server, 1001).await;
    let mut second = original(&server, 1002).await;

    // Every message reaches everyone, the sender included, as the original's broadcast did; and it is
    // the first frame each client sees: no welcome, no history, no arrival, no acknowledgement.
    first.send_text("hello").await;
    for client in [&mut first, &mut second] {
        assert_eq!(line(client).await, "Client #1001 says: hello");
    }
    second.send_text("hi there").await;
    for client in [&mut first, &mut second] {
        assert_eq!(line(client).await, "Client #1002 says: hi there");
    }
    // Every frame is message text, even one that looks like a JSON frame of the new protocol.
    let json_like = r#"{"type":"join","room":"dev"}"#;
    first.send_text(json_like).await;
    for client in [&mut first, &mut second] {
        assert_eq!(
            line(client).await,
            format!("Client #1001 says: {json_like}")
        );
    }

    second.close().await;
    assert_eq!(line(&mut first).await, "Client #1002 left the chat");
    // All of it was stored, the normal way.
    assert_eq!(
        history(&server).await,
        [
            ("Client #1001".to_owned(), "hello".to_owned()),
            ("Client #1002".to_owned(), "hi there".to_owned()),
            ("Client #1001".to_owned(), json_like.to_owned()),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_new_protocol_and_the_original_clients_hear_each_other() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.join("/ws?name=alice").await;
    let mut old = original(&server, 7).await;
    // Alice's page is told of the arrival; the original client is told nothing.
    assert!(matches!(
        alice.event().await,
        ServerEvent::Join { name, .. } if name == "Client #7"
    ));

    alice
        .send_json(serde_json::json!({"type": "message", "room": "general", "text": "hi old friend", "client_id": "a1"}))
        .await;
    assert_eq!(line(&mut old).await, "alice says: hi old friend");
    assert!(matches!(
        alice.said().await,
        ServerEvent::Message { from, text, .. } if from == "alice" && text == "hi old friend"
    ));

    old.send_text("hello alice").await;
    assert_eq!(line(&mut old).await, "Client #7 says: hello alice");
    match alice.said().await {
        ServerEvent::Message {
            room,
            from,
            text,
            seq,
            client_id,
            ..
        } => {
            assert_eq!((room.as_str(), from.as_str()), ("general", "Client #7"));
            assert_eq!((text.as_str(), seq, client_id), ("hello alice", 2, None));
        }
        other => panic!("expected the old client's message, got {other:?}"),
    }

    alice.close().await;
    assert_eq!(line(&mut old).await, "alice left the chat");
    let (mut bob, _) = server.join("/ws?name=bob").await;
    old.close().await;
    assert!(matches!(
        bob.event().await,
        ServerEvent::Leave { name, .. } if name == "Client #7"
    ));
    server.stop().await;
}

#[tokio::test]
async fn format_json_gives_the_json_protocol_on_the_original_route() {
    let server = TestServer::start().await;
    let mut client = server.connect("/ws/42?format=json").await;
    let (name, _) = client.welcome().await;
    assert_eq!(name, "Client #42");
    client.joined("general").await;
    client.send_text("plain text is a message").await;
    // The message and its acknowledgement, in either order (one is personal, one the room's).
    let (mut message, mut ack) = (false, false);
    for _ in 0..2 {
        match client.event().await {
            ServerEvent::Message { from, text, .. } => {
                assert_eq!(
                    (from.as_str(), text.as_str()),
                    ("Client #42", "plain text is a message")
                );
                message = true;
            }
            ServerEvent::Ack { seq: 1, .. } => ack = true,
            other => panic!("expected the message and its ack, got {other:?}"),
        }
    }
    assert!(message && ack);
    // JSON frames are frames again, and a refusal is an error event on an open connection.
    client.send_json(serde_json::json!({"type": "ping"})).await;
    assert_eq!(client.event().await, ServerEvent::Pong);
    client
        .send_json(serde_json::json!({"type": "nonsense"}))
        .await;
    assert!(matches!(
        client.event().await,
        ServerEvent::Error {
            code: ErrorCode::UnknownType,
            ..
        }
    ));

    // An original client in the same room hears it in its own format.
    let mut old = original(&server, 43).await;
    assert!(matches!(client.event().await, ServerEvent::Join { name, .. } if name == "Client #43"));
    client.send_text("to the old one").await;
    assert_eq!(line(&mut old).await, "Client #42 says: to the old one");

    // Any other format is refused before the upgrade.
    let url = format!("ws://{}/ws/44?format=xml", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_too_big_frame_closes_an_original_client_with_1009_and_a_reason() {
    let server = TestServer::start_with(Config {
        max_message_bytes: 1024,
        ..Config::default()
    })
    .await;
    let mut old = original(&server, 9).await;
    old.send_text(&"x".repeat(2000)).await;
    // The close frame comes first: there is no error event in this format.
    let close = old.closed().await;
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(close.reason.as_str(), "message too big");
    server.wait_for_connections(0).await;
    server.stop().await;
}

#[tokio::test]
async fn refusals_the_original_format_cannot_express_close_with_a_code_and_a_reason() {
    let server = TestServer::start_with(Config {
        msg_rate: 1.0,
        msg_burst: 2.0,
        ..Config::default()
    })
    .await;

    // A binary frame: this endpoint takes text only.
    let mut binary = original(&server, 1).await;
    binary
        .ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    let close = binary.closed().await;
    assert_eq!(u16::from(close.code), 1003);
    assert_eq!(close.reason.as_str(), "binary frames are not supported");

    // Past the rate limit: closed, with the messages within it stored (and maybe echoed first, if
    // they were published before the close) and the refused one not.
    let mut fast = original(&server, 2).await;
    for text in ["one", "two", "three"] {
        fast.send_text(text).await;
    }
    let mut echoed = Vec::new();
    let close = loop {
        match fast.frame().await {
            Message::Text(text) => echoed.push(text.as_str().to_owned()),
            Message::Close(Some(close)) => break close,
            other => panic!("expected lines, then a close frame, got {other:?}"),
        }
    };
    assert!(
        ["Client #2 says: one", "Client #2 says: two"][..echoed.len().min(2)] == echoed[..],
        "{echoed:?}"
    );
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "rate limited: too many messages");
    // Stored, then published: wait for it, so that no one joining later hears it.
    tokio::time::timeout(PATIENCE, async {
        while history(&server).await.len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the two messages within the limit are stored");

    // A name in use: no error event, only the close.
    let _first = original(&server, 3).await;
    let mut twin = server.connect("/ws/3").await;
    let close = twin.closed().await;
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("already in use"), "{}", close.reason);

    // Blank text is not refused, only not said: the connection goes on.
    let mut quiet = original(&server, 4).await;
    quiet.send_text("   ").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    quiet.send_text("after the blank").await;
    let mut heard = line(&mut quiet).await;
    if heard == "Client #2 says: two" {
        // Its publication can trail its storing by a moment.
        heard = line(&mut quiet).await;
    }
    assert_eq!(heard, "Client #4 says: after the blank");
    assert_eq!(
        history(&server)
            .await
            .iter()
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>(),
        ["one", "two", "after the blank"]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_classic_page_is_served_pointing_at_this_server() {
    let server = TestServer::start().await;
    let response = server.http_get("/classic").await;
    let (head, page) = response.split_once("\r\n\r\n").expect("a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(page.contains("new WebSocket(`${scheme}//${location.host}/ws/${client_id}`)"));
    assert_eq!(page.matches("new WebSocket(").count(), 1, "one socket");
    server.stop().await;
}
