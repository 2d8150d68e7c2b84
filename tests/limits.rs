//! The engine under abuse, over real sockets: slow and dead clients, oversized frames, floods, foreign
//! origins, too many connections, shutdown by signal. Each test proves the offender is dealt with *and*
//! everyone else is still served.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{unlimited_rate, Binary, Client, TestServer, PATIENCE};
use futures::{SinkExt, StreamExt};
use groupchat::protocol::{ErrorCode, ServerEvent};
use groupchat::server::Config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Reads events until a `leave` naming `name`; returns the message texts seen on the way.
async fn messages_until_leave_of(client: &mut Client, name: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        match client.event().await {
            ServerEvent::Message { text, .. } => texts.push(text),
            ServerEvent::Leave { name: left, .. } if left == name => return texts,
            _ => {}
        }
    }
}

/// Reads frames until the close frame, skipping whatever was queued before it.
async fn close_code(client: &mut Client) -> CloseCode {
    loop {
        match client.frame().await {
            Message::Close(Some(frame)) => return frame.code,
            Message::Close(None) => panic!("closed without a code"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_room_goes_on() {
    // The default 1 MiB bound: about 34 of the 30 KB messages below.
    let server = TestServer::start_with(Config {
        queue_frames: 64,
        ..unlimited_rate()
    })
    .await;
    let mut clients = server.join_many(3).await;
    let (mut stalled, stalled_name) = clients.pop().unwrap();
    // The stalled client reads nothing until it has been dropped; then it catches up, as a client back
    // from a freeze would, and finds how its connection ended.
    let (wake, woken) = tokio::sync::oneshot::channel::<()>();
    let stalled_end = tokio::spawn(async move {
        let _ = woken.await;
        close_code(&mut stalled).await
    });
    let (mut reader, _) = clients.pop().unwrap();
    let (sender, _) = clients.pop().unwrap();
    // The sender reads its own echoes, as any live client does: otherwise it would be a slow reader too.
    let (mut outgoing, mut echoes) = sender.ws.split();
    let draining = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });

    // 1,000 messages of 30 KB: far more than the stalled client's socket buffers (a few MB on loopback)
    // and its queue can hold. The sender keeps at most WINDOW messages ahead of the reader, as a live
    // conversation does; only the stalled client falls behind.
    const COUNT: usize = 1000;
    const WINDOW: usize = 8;
    let padding = "x".repeat(30_000);
    let mut seen: Vec<usize> = Vec::new();
    let mut stalled_left = false;
    let mut wake = Some(wake);
    let mut read_one = async |seen: &mut Vec<usize>| match reader.event().await {
        ServerEvent::Message { text, .. } => seen.push(text[..4].parse().unwrap()),
        ServerEvent::Leave { name, .. } if name == stalled_name => {
            stalled_left = true;
            if let Some(wake) = wake.take() {
                let _ = wake.send(());
            }
        }
        other => panic!("unexpected {other:?}"),
    };
    for i in 0..COUNT {
        let text = format!("{i:04} {padding}");
        outgoing.send(Message::Text(text.into())).await.unwrap();
        while seen.len() + WINDOW <= i {
            read_one(&mut seen).await;
        }
    }
    while seen.len() < COUNT {
        read_one(&mut seen).await;
    }
    // The reader got every message, in order, and saw the stalled client go.
    assert_eq!(seen, (0..COUNT).collect::<Vec<_>>());
    if !stalled_left {
        messages_until_leave_of(&mut reader, &stalled_name).await;
    }

    // The stalled client, once it reads again, finds it was closed with 1013.
    if let Some(wake) = wake.take() {
        let _ = wake.send(());
    }
    assert_eq!(stalled_end.await.unwrap(), CloseCode::Again);
    let metrics = server.http_get("/metrics").await;
    assert!(
        metrics.contains("chat_slow_consumers_dropped_total"),
        "{metrics}"
    );
    server.stop().await;
    draining.abort();
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_others_carry_on() {
    let server = TestServer::start_with(Config {
        max_message_bytes: 1024,
        ..Config::default()
    })
    .await;
    let mut clients = server.join_many(2).await;
    let (mut big, big_name) = clients.pop().unwrap();
    let (mut other, _) = clients.pop().unwrap();

    big.send_text(&"y".repeat(2048)).await;
    match big.event().await {
        ServerEvent::Error { code, .. } => assert_eq!(code, ErrorCode::TooBig),
        event => panic!("expected an error, got {event:?}"),
    }
    assert_eq!(close_code(&mut big).await, CloseCode::Size);

    assert!(messages_until_leave_of(&mut other, &big_name)
        .await
        .is_empty());
    other.send_text(&"z".repeat(1000)).await;
    assert!(matches!(other.said().await, ServerEvent::Message { text, .. } if text.len() == 1000));
    server.stop().await;
}

#[tokio::test]
async fn a_flood_gets_errors_then_a_1008_close() {
    let server = TestServer::start_with(Config {
        msg_rate: 1.0,
        msg_burst: 3.0,
        ..Config::default()
    })
    .await;
    let mut clients = server.join_many(2).await;
    let (mut flooder, flooder_name) = clients.pop().unwrap();
    let (mut other, _) = clients.pop().unwrap();

    for i in 0..50 {
        flooder.send_text(&format!("spam {i}")).await;
    }
    let mut refused = 0;
    let code = loop {
        match flooder.frame().await {
            Message::Text(text) => match serde_json::from_str(text.as_str()).unwrap() {
                ServerEvent::Ack { .. } | ServerEvent::Message { .. } => {}
                ServerEvent::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::RateLimited);
                    refused += 1;
                }
                event => panic!("unexpected {event:?}"),
            },
            Message::Close(Some(frame)) => break frame.code,
            frame => panic!("unexpected {frame:?}"),
        }
    };
    assert_eq!(code, CloseCode::Policy);
    assert!(refused >= 3, "errors before the close: {refused}");

    // The other client sees the flooder leave, and every message that was accepted: stored ones are
    // not lost because their sender was thrown out. The history writer keeps order, so all of them come
    // before the other client's next message.
    let mut seen = messages_until_leave_of(&mut other, &flooder_name).await;
    other.send_text("calm again").await;
    loop {
        match other.said().await {
            ServerEvent::Message { text, .. } if text == "calm again" => break,
            ServerEvent::Message { text, .. } => seen.push(text),
            event => panic!("unexpected {event:?}"),
        }
    }
    assert!(seen.len() >= 3, "the burst passes: {seen:?}");
    assert!(seen.len() < 50, "not the whole flood: {}", seen.len());
    let expected: Vec<String> = (0..seen.len()).map(|i| format!("spam {i}")).collect();
    assert_eq!(seen, expected, "the first ones, in order");
    server.stop().await;
}

#[tokio::test]
async fn pings_keep_a_live_client_and_drop_a_dead_one() {
    let server = TestServer::start_with(Config {
        ping_interval: Duration::from_millis(150),
        ping_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let mut clients = server.join_many(2).await;
    let (_dead, dead_name) = clients.pop().unwrap(); // never read again: never answers a ping
    let (mut live, _) = clients.pop().unwrap();

    // The live client reads, so tungstenite answers the pings it sees.
    let mut pings = 0;
    let left = loop {
        let frame = tokio::time::timeout(PATIENCE, live.ws.next())
            .await
            .expect("frames keep coming")
            .expect("still open")
            .expect("readable");
        match frame {
            Message::Ping(_) => pings += 1,
            Message::Text(text) => {
                if let ServerEvent::Leave { name, .. } =
                    serde_json::from_str(text.as_str()).unwrap()
                {
                    break name;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(left, dead_name, "the dead client was dropped");
    assert!(pings >= 1, "the live client was pinged");

    // Several ping periods on, the live client is still connected and served.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tokio::time::timeout(Duration::from_millis(1), live.ws.next()).await;
    }
    live.send_text("still alive").await;
    assert!(
        matches!(live.said().await, ServerEvent::Message { text, .. } if text == "still alive")
    );
    assert_eq!(server.state.chat.connection_count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_gets_403_and_the_own_origin_is_welcome() {
    let server = TestServer::start_with(Config {
        allowed_origins: vec!["https://chat.example.com".into()],
        ..Config::default()
    })
    .await;
    let connect = |origin: &str| {
        let mut request = format!("ws://{}/ws", server.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match connect("http://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let own = format!("http://{}", server.addr);
    assert!(connect(&own).await.is_ok());
    assert!(connect("https://chat.example.com").await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503() {
    let server = TestServer::start_with(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let mut clients = server.join_many(2).await;
    let url = format!("ws://{}/ws", server.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // A place frees up when someone leaves.
    clients.pop().unwrap().0.close().await;
    server.wait_for_connections(1).await;
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            if tokio_tungstenite::connect_async(&url).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "a connection is accepted again");
    server.stop().await;
}

/// A TCP connection to `server` from `source` (every 127.x.y.z address is this machine) that sends the
/// first line of a WebSocket handshake and never the rest.
async fn stalled_handshake(server: &TestServer, source: [u8; 4]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: ")
        .await
        .unwrap();
    stream
}

/// Waits until the server closes `stream` (whatever it says first); how long that took from `since`.
async fn closed_after(mut stream: tokio::net::TcpStream, since: tokio::time::Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

/// Ann and bob, from 127.0.0.1, can still connect, join and talk.
async fn two_people_still_chat(server: &TestServer) {
    let (mut ann, _) = server.join("/ws?name=ann").await;
    let (mut bob, _) = server.join("/ws?name=bob").await;
    ann.send_text("still here").await;
    loop {
        if let ServerEvent::Message { text, .. } = bob.event().await {
            assert_eq!(text, "still here");
            break;
        }
    }
    ann.close().await;
    bob.close().await;
}

#[tokio::test]
async fn stalled_handshakes_keep_no_one_out_and_are_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(Config {
        header_timeout,
        ..unlimited_rate()
    })
    .await;
    // 300 half-sent handshakes, 30 from each of ten addresses (within the per-address share).
    let opened = tokio::time::Instant::now();
    let mut stalled = Vec::new();
    for i in 0..300u32 {
        let source = [127, 0, 1, 2 + (i % 10) as u8];
        stalled.push(stalled_handshake(&server, source).await);
    }
    two_people_still_chat(&server).await;

    // Every one of them is closed: not before the timeout, and not long after it (a timeout that
    // never fired would leave them open for good).
    let waits = tokio::time::timeout(
        header_timeout + PATIENCE,
        futures::future::join_all(stalled.into_iter().map(|s| closed_after(s, opened))),
    )
    .await
    .expect("every stalled handshake is closed");
    let (first, last) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
    eprintln!("300 stalled handshakes closed between {first:?} and {last:?} after they opened");
    assert!(*first >= header_timeout, "one closed early: {first:?}");
    server.stop().await;
}

#[tokio::test]
async fn one_address_gets_a_share_of_the_sockets_and_the_server_a_total() {
    let header_timeout = Duration::from_secs(30);
    let server = TestServer::start_with(Config {
        header_timeout,
        max_http_per_ip: 20,
        max_http_connections: 50,
        ..unlimited_rate()
    })
    .await;
    // One address opens 100: 20 are held (they stay open), the other 80 are closed at once.
    let opened = tokio::time::Instant::now();
    let mut held = Vec::new();
    let mut turned_away = Vec::new();
    for _ in 0..100 {
        let stream = stalled_handshake(&server, [127, 0, 2, 1]).await;
        if turned_away.len() + held.len() < 20 {
            held.push(stream);
        } else {
            turned_away.push(stream);
        }
    }
    let waits = tokio::time::timeout(
        PATIENCE,
        futures::future::join_all(turned_away.into_iter().map(|s| closed_after(s, opened))),
    )
    .await
    .expect("sockets past the address's share are closed at once");
    assert_eq!(waits.len(), 80);
    // Others still get in.
    two_people_still_chat(&server).await;
    // Two more addresses take the server to its total (20 + 20 + 10 of 50): one more socket, from a
    // fourth address, is closed at once.
    for (source, count) in [([127, 0, 2, 2], 20), ([127, 0, 2, 3], 10)] {
        for _ in 0..count {
            held.push(stalled_handshake(&server, source).await);
        }
    }
    let fourth = stalled_handshake(&server, [127, 0, 2, 4]).await;
    tokio::time::timeout(PATIENCE, closed_after(fourth, opened))
        .await
        .expect("a socket past the server's total is closed at once");
    // The held ones are still open: a read finds nothing yet.
    for stream in &held {
        let mut probe = [0u8; 1];
        assert!(
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a socket within the shares stays open until its timeout"
        );
    }
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let server = TestServer::start().await;
    let (mut client, _) = server.join("/ws").await;
    client.send_text("count me").await;
    client.event().await;

    let health = server.http_get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""connections":1"#), "{health}");
    assert!(
        health.contains(r#""status":"ok""#),
        "the store answers: {health}"
    );

    let metrics = server.http_get("/metrics").await;
    for name in [
        "chat_connections",
        "chat_messages_in_total",
        "chat_deliveries_out_total",
        "chat_queue_depth_frames",
        "chat_messages_stored_total",
        "chat_store_commit_seconds",
        "chat_joins_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_exits() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = Binary::start(data_dir.path(), None);
    let mut clients = Vec::new();
    for i in 0..3 {
        let url = format!("ws://{}/ws?name=c{i}", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut client = Client::new(ws);
        assert!(matches!(client.event().await, ServerEvent::Welcome { .. }));
        clients.push(client);
    }
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());

    for client in clients.iter_mut() {
        assert_eq!(close_code(client).await, CloseCode::Away);
    }
    let exited = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server exits after SIGTERM");
    assert!(exited.success(), "{exited:?}");
}
