//! What the server accepts from people and browsers: names that cannot pass for someone else's, message
//! text without control characters, requests only for this server's own host names, session cookies
//! the page cannot read, and listings and history pages of bounded size. The real server on
//! 127.0.0.1:0, driven over real sockets.

mod common;

use common::{forge, Client, TestServer};
use groupchat::api::{HistoryPage, MAX_PAGE_BYTES};
use groupchat::protocol::{EntryKind, ErrorCode, ServerEvent};
use groupchat::server::Config;
use groupchat::server::NewMessage;

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
        ServerEvent::Error {
            code: got, message, ..
        } => {
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
        "alice\u{200B}",                            // a zero-width space after it
        "\u{202E}ecila",                            // right-to-left override: shows "alice"
        "\u{0430}lice",                             // Cyrillic а
        "\u{FF21}\u{FF2C}\u{FF29}\u{FF23}\u{FF25}", // full-width ＡＬＩＣＥ
        "\u{200B}",                                 // nothing visible at all
        "Client #5",                                // the /ws/{client_id} route's names
        "\u{0421}lient #5",                         // …and a look-alike of them
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
    let (_legacy, name) = server.join("/ws/5?format=json").await;
    assert_eq!(name, "Client #5");
    server.stop().await;
}

#[tokio::test]
async fn control_characters_in_text_are_refused_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let (mut client, name) = server.join("/ws").await;
    let escapes = "\u{1}".repeat(1000);
    for text in [
        escapes.as_str(),
        "bell\u{7}",
        "\u{1b}[31mred",
        "carriage\rreturn",
    ] {
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
            assert_eq!(
                (from.as_str(), text.as_str()),
                (name.as_str(), "two\nlines\tand a tab")
            )
        }
        other => panic!("expected the message, got {other:?}"),
    }
    server.stop().await;
}

/// Sends `request` (a whole HTTP/1.1 request) to `server`; the whole response.
async fn raw_request(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("a response in time")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A `GET path` with these extra header lines (each ending in `\r\n`).
fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n")
}

/// The headers of a WebSocket handshake.
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_and_the_servers_own_names_work() {
    let server = TestServer::start().await;
    let port = server.addr.port();

    // DNS rebinding: evil.example now resolves to us; the browser sends its own name as Host, and
    // its page's origin, which "matches" that Host.
    let evil = format!("Host: evil.example:{port}\r\n");
    let page = raw_request(&server, &get("/", &evil)).await;
    assert_eq!(status(&page), 421, "{page}");
    assert!(
        page.contains("--allowed-hosts"),
        "the body says why: {page}"
    );
    assert_eq!(
        status(&raw_request(&server, &get("/healthz", &evil)).await),
        421
    );
    let evil_socket = format!("{evil}Origin: http://evil.example:{port}\r\n{UPGRADE}");
    assert_eq!(
        status(&raw_request(&server, &get("/ws", &evil_socket)).await),
        421
    );
    assert_eq!(
        status(&raw_request(&server, &get("/ws/7", &evil_socket)).await),
        421
    );

    // An allowed Host does not make a foreign Origin acceptable.
    let foreign_origin =
        format!("Host: 127.0.0.1:{port}\r\nOrigin: http://evil.example:{port}\r\n{UPGRADE}");
    assert_eq!(
        status(&raw_request(&server, &get("/ws", &foreign_origin)).await),
        403
    );

    // The server's own names: its address, and localhost (it is bound to loopback).
    for own in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let health = raw_request(&server, &get("/healthz", &format!("Host: {own}\r\n"))).await;
        assert_eq!(status(&health), 200, "{own}: {health}");
        let socket = format!("Host: {own}\r\nOrigin: http://{own}\r\n{UPGRADE}");
        let upgraded = raw_request_head(&server, &get("/ws?room=", &socket)).await;
        assert_eq!(status(&upgraded), 101, "{own}: {upgraded}");
    }
    server.stop().await;
}

/// Sends `request` and reads the response head only (an upgraded socket stays open).
async fn raw_request_head(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(common::PATIENCE, stream.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        assert_eq!(read, 1, "the response head ended early: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The JSON body of a `200` response.
fn json_body(response: &str) -> serde_json::Value {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn stored(room: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room.into(),
        author_id: 1,
        author: "spammer".into(),
        text: text.into(),
        ts: 1,
        client_id: None,
        kind: EntryKind::Message,
        target: None,
    }
}

#[tokio::test]
async fn the_room_list_puts_busy_rooms_first_however_many_rooms_exist() {
    let server = TestServer::start().await;
    let store = &server.state.chat.store();
    // 600 rooms of one message each, named to sort before the one that matters, then a busy room
    // created last.
    let spam: Vec<NewMessage> = (0..600)
        .map(|i| stored(&format!("aaa-{i:03}"), "spam"))
        .collect();
    store.append(&spam).await.unwrap();
    let busy: Vec<NewMessage> = (0..5).map(|_| stored("zz-busy", "hello")).collect();
    store.append(&busy).await.unwrap();

    let rooms = json_body(&server.http_get("/api/rooms").await);
    assert_eq!(rooms[0]["name"], "zz-busy", "{rooms}");
    assert_eq!(rooms[0]["messages"], 5);

    // Someone online comes before any history; an empty room with people in it is listed.
    let mut client = server.connect("/ws?room=zz-quiet").await;
    client.welcome().await;
    client.joined("zz-quiet").await;
    let rooms = json_body(&server.http_get("/api/rooms?limit=3").await);
    let names: Vec<&str> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zz-quiet", "zz-busy", "aaa-000"]);
    assert_eq!(rooms[0]["online"], 1);

    // Paging reaches every room exactly once, and a page is capped.
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let page = json_body(
            &server
                .http_get(&format!("/api/rooms?limit=1000&offset={offset}"))
                .await,
        );
        let page = page.as_array().unwrap();
        assert!(page.len() <= 500, "a page is capped");
        for room in page {
            assert!(seen.insert(room["name"].as_str().unwrap().to_owned()));
        }
        offset += page.len();
        if page.len() < 500 {
            break;
        }
    }
    assert_eq!(seen.len(), 602);
    server.stop().await;
}

#[tokio::test]
async fn a_history_page_is_capped_in_bytes_and_paging_reaches_every_message() {
    let server = TestServer::start_with(Config {
        max_message_bytes: 128 * 1024,
        ..common::unlimited_rate()
    })
    .await;
    let (mut client, _) = server.join("/ws").await;
    for i in 0..20u8 {
        let text = char::from(b'a' + i).to_string().repeat(64 * 1024);
        client.send_text(&text).await;
        assert!(matches!(client.said().await, ServerEvent::Message { .. }));
    }

    let mut seqs = Vec::new();
    let mut before: Option<u64> = None;
    let mut pages = 0;
    loop {
        let path = match before {
            Some(before) => format!("/api/history?room=general&limit=200&before={before}"),
            None => "/api/history?room=general&limit=200".to_owned(),
        };
        let response = server.http_get(&path).await;
        let (_, body) = response.split_once("\r\n\r\n").expect("a body");
        assert!(
            body.len() <= MAX_PAGE_BYTES,
            "a page of {} bytes",
            body.len()
        );
        let page: HistoryPage = serde_json::from_value(json_body(&response)).unwrap();
        pages += 1;
        assert!(!page.messages.is_empty(), "older messages remain");
        let mut got: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        got.extend(seqs);
        seqs = got;
        // As the page does: on from the oldest message received.
        before = Some(page.messages[0].seq);
        if page.messages[0].seq <= page.oldest_seq {
            break;
        }
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    assert!(
        pages >= 2,
        "the 1.25 MiB of messages took more than one page"
    );
    server.stop().await;
}

/// `POST /api/session` with `token`, and these extra header lines; the whole response.
async fn keep_session(server: &TestServer, token: &str, headers: &str) -> String {
    let body = format!("token={token}");
    let request = format!(
        "POST /api/session HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{headers}\
         Connection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    raw_request(server, &request).await
}

/// The `Set-Cookie` header of a response, if it has one.
fn set_cookie(response: &str) -> Option<String> {
    let (head, _) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("set-cookie")
            .then(|| value.trim().to_owned())
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_server_sets_the_session_cookie_http_only_and_secure_behind_https() {
    let server = TestServer::start().await;
    let mut client = server.connect("/ws?name=ann").await;
    let (_, token) = client.welcome().await;
    let origin = format!("Origin: http://{}\r\n", server.addr);

    let plain = keep_session(&server, &token, &origin).await;
    assert_eq!(status(&plain), 200, "{plain}");
    let cookie = set_cookie(&plain).expect("a Set-Cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(attributes[0], format!("chat_session={token}"));
    for wanted in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(&wanted), "{wanted} in {cookie}");
    }
    let max_age: u64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("a Max-Age")
        .parse()
        .unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&max_age), "{max_age}");
    assert!(
        !attributes.contains(&"Secure"),
        "not over plain HTTP: {cookie}"
    );

    let proxied = keep_session(&server, &token, "X-Forwarded-Proto: https\r\n").await;
    let cookie = set_cookie(&proxied).expect("a Set-Cookie");
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");

    // A forged token, or a foreign page, sets nothing.
    let forged = keep_session(&server, &forge(&token), "").await;
    assert_eq!(status(&forged), 400, "{forged}");
    assert_eq!(set_cookie(&forged), None);
    let foreign = keep_session(&server, &token, "Origin: http://evil.example\r\n").await;
    assert_eq!(status(&foreign), 403, "{foreign}");
    assert_eq!(set_cookie(&foreign), None);

    // The browser holds a fresh cookie of this person already: nothing to rewrite.
    let held = format!("Cookie: chat_session={token}\r\n");
    let again = keep_session(&server, &token, &held).await;
    assert_eq!(status(&again), 200, "{again}");
    assert_eq!(set_cookie(&again), None);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_ignored_and_one_near_expiry_is_renewed() {
    let server = TestServer::start().await;
    let sessions = &server.state.chat.sessions();
    let life = sessions.lifetime().as_secs();

    let expired = sessions.issue_at(7, "ann", now_secs() - life - 1);
    let mut client = server.connect_with_cookie("/ws", Some(&expired)).await;
    let (name, token) = client.welcome().await;
    assert_ne!(name, "ann", "an expired token names no one");
    assert_ne!(sessions.verify(&token).unwrap().person, 7);
    client.close().await;

    // An hour left: the same person and name, and a token good for the whole lifetime again.
    let ageing = sessions.issue_at(8, "bob", now_secs() - life + 3_600);
    let mut client = server.connect_with_cookie("/ws", Some(&ageing)).await;
    let (name, token) = client.welcome().await;
    assert_eq!(name, "bob");
    let renewed = sessions.verify(&token).unwrap();
    assert_eq!(renewed.person, 8);
    assert!(renewed.expires >= now_secs() + life - 60, "{renewed:?}");
    // …which the server writes into the browser's cookie in place of the ageing one.
    let held = format!("Cookie: chat_session={ageing}\r\n");
    let response = keep_session(&server, &token, &held).await;
    let cookie = set_cookie(&response).expect("the renewed token is set");
    assert!(
        cookie.starts_with(&format!("chat_session={token};")),
        "{cookie}"
    );
    server.stop().await;
}

#[tokio::test]
async fn rotating_the_session_key_invalidates_every_token() {
    let server = TestServer::start().await;
    let data_dir = server.data_dir.clone();
    let mut client = server.connect("/ws?name=ann").await;
    let (_, token) = client.welcome().await;
    client.close().await;
    server.stop().await;

    // A plain restart keeps the key: the token still names ann.
    let restarted = TestServer::start_in(Config::default(), data_dir.clone()).await;
    let mut client = restarted.connect_with_cookie("/ws", Some(&token)).await;
    assert_eq!(client.welcome().await.0, "ann");
    client.close().await;
    restarted.stop().await;

    let rotated = TestServer::start_in(
        Config {
            rotate_session_key: true,
            ..Config::default()
        },
        data_dir,
    )
    .await;
    assert_eq!(rotated.state.chat.sessions().verify(&token), None);
    let mut client = rotated.connect_with_cookie("/ws", Some(&token)).await;
    let (name, _) = client.welcome().await;
    assert_ne!(name, "ann", "the old token is refused: a new person");
    rotated.stop().await;
}
