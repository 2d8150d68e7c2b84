//! What the server accepts from people and browsers: names that cannot pass for someone else's, message
//! text without control characters, requests only for this server's own host names, session cookies
//! the page cannot read, and listings and history pages of bounded size. The real server on
//! 127.0.0.1:0, driven over real sockets.

mod common;

use common::{Client, TestServer};
use groupchat::protocol::{ErrorCode, ServerEvent};

/// Percent-encodes `text` for a query string.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn expect_error(client: &mut Client, code: ErrorCode) -> String {
    match client.event().await {
        ServerEvent::Error { code: got, message } => {
            assert_eq!(got, code, "{message}");
            message
        }
        other => panic!("expected a {code:?} error, got {other:?}"),
    }
}

#[tokio::test]
async fn look_alike_names_are_refused_while_the_original_is_online() {
    let server = TestServer::start().await;
    let (_alice, name) = server.join("/ws?name=alice").await;
    assert_eq!(name, "alice");
    for look_alike in [
        "alice\u{200B}",                                // a zero-width space after it
        "\u{202E}ecila",                                // right-to-left override: shows "alice"
        "\u{0430}lice",                                 // Cyrillic а
        "\u{FF21}\u{FF2C}\u{FF29}\u{FF23}\u{FF25}",     // full-width ＡＬＩＣＥ
        "\u{200B}",                                     // nothing visible at all
        "Client #5",                                    // the /ws/{client_id} route's names
        "\u{0421}lient #5",                             // …and a look-alike of them
    ] {
        let mut client = server
            .connect(&format!("/ws?name={}", query_escape(look_alike)))
            .await;
        match client.event().await {
            ServerEvent::Error {
                code: ErrorCode::NameTaken | ErrorCode::BadName,
                ..
            } => {}
            other => panic!("{look_alike:?} was not refused: {other:?}"),
        }
        assert_eq!(
            u16::from(client.closed().await.code),
            1008,
            "{look_alike:?}"
        );
    }
    // The legacy route still names its clients so.
    let (_legacy, name) = server.join("/ws/5").await;
    assert_eq!(name, "Client #5");
    server.stop().await;
}

#[tokio::test]
async fn control_characters_in_text_are_refused_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let (mut client, name) = server.join("/ws").await;
    let escapes = "\u{1}".repeat(1000);
    for text in [escapes.as_str(), "bell\u{7}", "\u{1b}[31mred", "carriage\rreturn"] {
        client
            .send_json(serde_json::json!({"type": "message", "text": text}))
            .await;
        expect_error(&mut client, ErrorCode::BadText).await;
    }
    // Plain-text frames go through the same check.
    client.send_text("nul\u{0}").await;
    expect_error(&mut client, ErrorCode::BadText).await;

    // Line feeds and tabs are text; the connection works on.
    client
        .send_json(serde_json::json!({"type": "message", "text": "two\nlines\tand a tab"}))
        .await;
    match client.said().await {
        ServerEvent::Message { from, text, .. } => {
            assert_eq!((from.as_str(), text.as_str()), (name.as_str(), "two\nlines\tand a tab"))
        }
        other => panic!("expected the message, got {other:?}"),
    }
    server.stop().await;
}
