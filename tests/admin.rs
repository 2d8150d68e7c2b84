//! The operator's admin API over real HTTP and sockets, on both engines: the token, bans of a person
//! or a name from the server or a room (open sockets closed, comebacks refused), unbans, and deleting
//! anyone's message.

#[macro_use]
mod common;

use common::{http_request, Backend, Client, RawResponse, TestServer};
use groupchat::protocol::{EntryKind, ErrorCode, ServerEvent};
use groupchat::server::Config;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TOKEN: &str = "s3cret-operator-token";

on_both_engines!(
    bans_close_and_refuse_the_banned_and_unbans_let_them_back,
    the_operator_deletes_anyones_message,
);

async fn start(backend: &Backend) -> TestServer {
    TestServer::start_with(backend.config(Config {
        admin_token: Some(TOKEN.into()),
        ..common::unlimited_rate()
    }))
    .await
}

/// An admin request with the operator's token.
async fn admin(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> RawResponse {
    let auth = format!("Bearer {TOKEN}");
    let body = body.map(|b| b.to_string());
    http_request(
        &server.addr.to_string(),
        method,
        path,
        &[("Authorization", &auth)],
        body.as_deref(),
    )
    .await
}

fn json_of(response: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{e}: {:?}", response.body))
}

/// The next error event; its code.
async fn error_code(client: &mut Client) -> ErrorCode {
    client.refused().await.0
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token_and_refuses_a_wrong_one() {
    let off = TestServer::start().await;
    let response = http_request(&off.addr.to_string(), "GET", "/api/admin/bans", &[], None).await;
    assert_eq!(response.status, 404);
    off.stop().await;

    let server = start(&Backend::Sqlite).await;
    let addr = server.addr.to_string();
    let none = http_request(&addr, "GET", "/api/admin/bans", &[], None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = http_request(
        &addr,
        "GET",
        "/api/admin/bans",
        &[("Authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(wrong.status, 403);
    let wrong = http_request(
        &addr,
        "DELETE",
        "/api/admin/rooms/general/messages/1",
        &[("Authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(wrong.status, 403);
    let right = admin(&server, "GET", "/api/admin/bans", None).await;
    assert_eq!(right.status, 200);
    assert_eq!(json_of(&right), json!([]));
    server.stop().await;
}

async fn bans_close_and_refuse_the_banned_and_unbans_let_them_back(backend: Backend) {
    let server = start(&backend).await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let mut bob = server.connect("/ws?name=bob").await;
    let (_, bob_session) = bob.welcome().await;
    bob.joined("general").await;

    // Bob (the person) is banned from the server: his open socket is closed with 1008.
    let banned = admin(
        &server,
        "POST",
        "/api/admin/bans",
        Some(json!({"name": "bob", "reason": "spam"})),
    )
    .await;
    assert_eq!(
        banned.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&banned.body)
    );
    let ban = json_of(&banned);
    let close = bob.closed().await;
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("banned"), "{}", close.reason);
    // Coming back with his session, even under another name, is refused with `banned`.
    let mut again = server
        .connect_with_cookie("/ws?name=robert", Some(&bob_session))
        .await;
    assert_eq!(error_code(&mut again).await, ErrorCode::Banned);
    assert_eq!(again.closed().await.code, CloseCode::Policy);
    // Listed; lifted; then he may come back.
    let list = json_of(&admin(&server, "GET", "/api/admin/bans", None).await);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let id = ban["id"].as_i64().expect("an id");
    let lifted = admin(&server, "DELETE", &format!("/api/admin/bans/{id}"), None).await;
    assert_eq!(lifted.status, 204);
    assert_eq!(
        admin(&server, "DELETE", &format!("/api/admin/bans/{id}"), None)
            .await
            .status,
        404
    );
    let mut back = server.connect_with_cookie("/ws", Some(&bob_session)).await;
    assert_eq!(back.welcome().await.0, "bob");

    // The name "cy" is banned from `dev`: cy leaves it (told `banned`), may not rejoin, and still
    // talks in general.
    let (mut cy, _) = server.join("/ws?name=cy").await;
    cy.send_json(json!({"type": "join", "room": "dev"})).await;
    cy.joined("dev").await;
    let room_ban = admin(
        &server,
        "POST",
        "/api/admin/bans",
        Some(json!({"name": "cy", "scope": "name", "room": "dev"})),
    )
    .await;
    assert_eq!(room_ban.status, 201);
    assert_eq!(error_code(&mut cy).await, ErrorCode::Banned);
    cy.send_json(json!({"type": "join", "room": "dev"})).await;
    assert_eq!(error_code(&mut cy).await, ErrorCode::Banned);
    cy.send_json(json!({"type": "message", "room": "dev", "text": "let me in"}))
        .await;
    assert_eq!(error_code(&mut cy).await, ErrorCode::NotJoined);
    cy.send_text("still here in general").await;
    loop {
        if let ServerEvent::Message { text, .. } = ann.event().await {
            if text == "still here in general" {
                break;
            }
        }
    }
    // A ban of someone who never was is refused; so is a bad room.
    let nobody = admin(
        &server,
        "POST",
        "/api/admin/bans",
        Some(json!({"name": "nobody-ever"})),
    )
    .await;
    assert_eq!(nobody.status, 404);
    let bad = admin(
        &server,
        "POST",
        "/api/admin/bans",
        Some(json!({"name": "cy", "room": "Not A Room"})),
    )
    .await;
    assert_eq!(bad.status, 400);
    server.stop().await;
}

async fn the_operator_deletes_anyones_message(backend: Backend) {
    let server = start(&backend).await;
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let (mut bob, _) = server.join("/ws?name=bob").await;
    bob.send_json(json!({"type": "message", "text": "something awful", "client_id": "b1"}))
        .await;
    let seq = loop {
        if let ServerEvent::Message { seq, .. } = ann.event().await {
            break seq;
        }
    };
    let deleted = admin(
        &server,
        "DELETE",
        &format!("/api/admin/rooms/general/messages/{seq}"),
        None,
    )
    .await;
    assert_eq!(
        deleted.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&deleted.body)
    );
    // Everyone sees the delete, by the operator.
    loop {
        if let ServerEvent::Message {
            kind, target, from, ..
        } = ann.event().await
        {
            assert_eq!(
                (kind, target, from.as_str()),
                (EntryKind::Delete, Some(seq), "operator")
            );
            break;
        }
    }
    let missing = admin(
        &server,
        "DELETE",
        &format!("/api/admin/rooms/general/messages/{seq}"),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    let history = server.http_get("/api/history?room=general").await;
    assert!(!history.contains("something awful"), "{history}");
    drop(bob);
    server.stop().await;
}
