//! Test support: the real server on 127.0.0.1:0 and a small WebSocket client for it, and the history
//! store it runs on ([`Backend`]: SQLite in its data directory, or a private PostgreSQL server).

#![allow(dead_code)] // each test file uses a different part of this module

pub mod postgres;
pub mod redis;

/// Runs each test body (an `async fn(Backend)`) on both engines: as `<body>::sqlite` and
/// `<body>::postgres`. (`#[macro_use] mod common;`, with `Backend` in scope.)
#[allow(unused_macros)]
macro_rules! on_both_engines {
    ($($body:ident),* $(,)?) => {$(
        mod $body {
            #[tokio::test]
            async fn sqlite() {
                super::$body(super::Backend::sqlite().await).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$body(super::Backend::postgres().await).await
            }
        }
    )*};
}

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};

use groupchat::protocol::{ChatMessage, ErrorCode, FrameRef, ReadPosition, ServerEvent};
use groupchat::server::{run, AppState, Config};
use leptos::prelude::LeptosOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once before it calls it a failure.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Settings with the per-connection rate limit out of the way, for tests whose clients send faster
/// than any person.
pub fn unlimited_rate() -> Config {
    Config {
        msg_rate: 1e6,
        msg_burst: 1e6,
        ..Config::default()
    }
}

/// A session token with its signature's last hex digit changed: same shape, wrong signature,
/// whatever digits the real one happens to hold.
pub fn forge(token: &str) -> String {
    let mut forged = token.to_owned();
    let last = forged.pop().expect("a token");
    forged.push(if last == '0' { '1' } else { '0' });
    forged
}

/// A plain `GET path` to the server at `addr` over HTTP/1.1; the whole response, head and body.
pub async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // `Host` as a browser would send it: the server answers only to its own names (`hosts.rs`).
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// A response read off the wire: status, headers (names in lower case) and the body, de-chunked but
/// otherwise as sent (still compressed, if it was).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of header `name` (lower case), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `GET path` to the server at `addr` over HTTP/1.1 with the extra request `headers`; the response as
/// sent.
pub async fn http_get_raw(addr: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    http_request(addr, "GET", path, headers, None).await
}

/// A `method path` request with `headers` and, if given, a JSON `body`; the response, dechunked.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&response[..end]).expect("a readable head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = response[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// The data of a chunked HTTP/1.1 body (chunk extensions and trailers ignored).
fn dechunk(mut chunked: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let line_end = chunked
            .windows(2)
            .position(|window| window == b"\r\n")
            .expect("a chunk size line");
        let size_line = std::str::from_utf8(&chunked[..line_end]).expect("a readable chunk size");
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).expect("a hexadecimal chunk size");
        if size == 0 {
            return data;
        }
        let start = line_end + 2;
        data.extend_from_slice(&chunked[start..start + size]);
        chunked = &chunked[start + size + 2..];
    }
}

/// The engine a test server keeps its history in.
pub enum Backend {
    /// SQLite, in the server's data directory (the default).
    Sqlite,
    /// A fresh database on a private PostgreSQL server started for this test, stopped (and its files
    /// removed) when this drops.
    Postgres {
        server: postgres::PgServer,
        url: String,
    },
}

impl Backend {
    pub async fn sqlite() -> Backend {
        Backend::Sqlite
    }

    pub async fn postgres() -> Backend {
        let server = postgres::PgServer::start().await;
        let url = server.create_database().await;
        Backend::Postgres { server, url }
    }

    /// `--database-url` for a server on this backend.
    pub fn database_url(&self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres { url, .. } => Some(url.clone()),
        }
    }

    /// `config`, with its history on this backend.
    pub fn config(&self, config: Config) -> Config {
        Config {
            database_url: self.database_url(),
            ..config
        }
    }

    /// The data directory for a server started after one on `used`: the same one on SQLite, where the
    /// history is; a new one on PostgreSQL, as another node would have (the database keeps history and
    /// session key alike).
    pub fn data_dir_after(&self, used: Arc<tempfile::TempDir>) -> Arc<tempfile::TempDir> {
        match self {
            Backend::Sqlite => used,
            Backend::Postgres { .. } => {
                Arc::new(tempfile::tempdir().expect("a temporary directory"))
            }
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The server's data directory (its SQLite file, its session key), removed when the test ends.
    pub data_dir: Arc<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    /// A server with `config`, on a fresh data directory.
    pub async fn start_with(config: Config) -> TestServer {
        let data_dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        Self::start_in(config, data_dir).await
    }

    /// A server with `config` on `data_dir`, e.g. the one a stopped server used.
    pub async fn start_in(config: Config, data_dir: Arc<tempfile::TempDir>) -> TestServer {
        Self::start_serving(config, data_dir, Path::new("target/site")).await
    }

    /// A server with `config` whose static files are those in `site_root` rather than the build's
    /// `target/site`, on a fresh data directory.
    pub async fn start_with_site(config: Config, site_root: &Path) -> TestServer {
        let data_dir = Arc::new(tempfile::tempdir().expect("a temporary directory"));
        Self::start_serving(config, data_dir, site_root).await
    }

    async fn start_serving(
        mut config: Config,
        data_dir: Arc<tempfile::TempDir>,
        site_root: &Path,
    ) -> TestServer {
        config.data_dir = data_dir.path().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let options = LeptosOptions::builder()
            .output_name("groupchat")
            .site_root(site_root.to_str().expect("a UTF-8 site root"))
            .build();
        let state = AppState::new(options, config)
            .await
            .expect("the server starts");
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, state.clone(), async {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            state,
            shutdown: Some(shutdown),
            task,
            data_dir,
        }
    }

    /// Opens a WebSocket on `path` (e.g. `/ws`, `/ws?name=ann`, `/ws/7`).
    pub async fn connect(&self, path: &str) -> Client {
        self.connect_with_cookie(path, None).await
    }

    /// Opens a WebSocket on `path`, sending `session` as the `chat_session` cookie (as a browser tab
    /// of the same person would).
    pub async fn connect_with_cookie(&self, path: &str, session: Option<&str>) -> Client {
        connect_to(&self.addr.to_string(), path, session).await
    }

    /// Connects on `path`, which follows `general` at once (any `/ws` path without `room=`), and reads
    /// the welcome and the room's `joined`; returns the client and its name.
    pub async fn join(&self, path: &str) -> (Client, String) {
        let mut client = self.connect(path).await;
        let (name, _) = client.welcome().await;
        client.joined("general").await;
        (client, name)
    }

    /// Connects `n` clients with assigned names and drains the join events among them, so every returned
    /// client's next event is whatever happens next.
    pub async fn join_many(&self, n: usize) -> Vec<(Client, String)> {
        let mut clients: Vec<(Client, String)> = Vec::new();
        for _ in 0..n {
            let (newcomer, name) = self.join("/ws").await;
            for (client, _) in clients.iter_mut() {
                assert!(
                    matches!(client.event().await, ServerEvent::Join { name: ref joined, .. } if *joined == name)
                );
            }
            clients.push((newcomer, name));
        }
        clients
    }

    /// A plain `GET path` over HTTP/1.1; the whole response, head and body.
    pub async fn http_get(&self, path: &str) -> String {
        http_get(&self.addr.to_string(), path).await
    }

    /// `GET path` with the extra request `headers`; the response as sent.
    pub async fn http_get_raw(&self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        http_get_raw(&self.addr.to_string(), path, headers).await
    }

    /// Waits (bounded) until the manager holds exactly `n` connections.
    pub async fn wait_for_connections(&self, n: usize) {
        let manager = self.state.chat.clone();
        let waited = tokio::time::timeout(PATIENCE, async {
            while manager.connection_count() != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "expected {n} connections, the manager holds {}",
            manager.connection_count()
        );
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server ran cleanly");
    }
}

/// Opens a WebSocket to the server at `addr` on `path`, sending `session` (if any) as the
/// `chat_session` cookie.
pub async fn connect_to(addr: &str, path: &str, session: Option<&str>) -> Client {
    let url = format!("ws://{addr}{path}");
    let mut request = url.as_str().into_client_request().expect("a request");
    if let Some(session) = session {
        request.headers_mut().insert(
            "cookie",
            format!("chat_session={session}").parse().expect("a header"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    Client::new(ws)
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `room_counts` events that came, oldest first: the server pushes them whenever some room's
    /// online count changed, so they are kept aside and not returned as frames (see
    /// [`Client::room_counts`]).
    pub counts: VecDeque<BTreeMap<String, usize>>,
    /// The `read_positions` events that came, oldest first: one follows every welcome at a moment of
    /// its own (a store read), so they are kept aside too (see [`Client::read_positions`]).
    pub positions: VecDeque<BTreeMap<String, ReadPosition>>,
}

/// A `joined` event's contents.
#[derive(Debug)]
pub struct Joined {
    pub recovered: bool,
    pub messages: Vec<ChatMessage>,
    pub oldest_seq: u64,
    pub online: Vec<String>,
    pub online_count: usize,
}

impl Client {
    /// A client on an open WebSocket.
    pub fn new(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            counts: VecDeque::new(),
            positions: VecDeque::new(),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next frame, whatever it is (pings are answered by tungstenite and skipped here).
    pub async fn frame(&mut self) -> Message {
        self.frame_within(PATIENCE).await
    }

    /// The next frame, waiting up to `patience` for it.
    pub async fn frame_within(&mut self, patience: Duration) -> Message {
        loop {
            let next = tokio::time::timeout(patience, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is still open")
                .expect("a readable frame");
            if matches!(next, Message::Ping(_) | Message::Pong(_)) {
                continue;
            }
            if let Message::Text(text) = &next {
                match serde_json::from_str(text.as_str()) {
                    Ok(ServerEvent::RoomCounts { counts }) => {
                        self.counts.push_back(counts);
                        continue;
                    }
                    Ok(ServerEvent::ReadPositions { rooms }) => {
                        self.positions.push_back(rooms);
                        continue;
                    }
                    _ => {}
                }
            }
            return next;
        }
    }

    /// The next `room_counts` event (one that came already, or the next to come within `patience`);
    /// other frames read meanwhile are dropped.
    pub async fn room_counts(&mut self, patience: Duration) -> BTreeMap<String, usize> {
        if let Some(counts) = self.counts.pop_front() {
            return counts;
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no room_counts within {patience:?}"))
                .expect("the socket is still open")
                .expect("a readable frame");
            if let Message::Text(text) = &next {
                if let Ok(ServerEvent::RoomCounts { counts }) = serde_json::from_str(text.as_str())
                {
                    return counts;
                }
            }
        }
    }

    /// The next `error` event, skipping other events: its code and the frame it names.
    pub async fn refused(&mut self) -> (ErrorCode, Option<FrameRef>) {
        loop {
            if let ServerEvent::Error { code, answers, .. } = self.event().await {
                return (code, answers);
            }
        }
    }

    /// The room log's entry `seq` (a message or a change to one), skipping other events.
    pub async fn entry(&mut self, seq: u64) -> ServerEvent {
        loop {
            let event = self.event().await;
            if matches!(&event, ServerEvent::Message { seq: got, .. } if *got == seq) {
                return event;
            }
        }
    }

    /// The next `read_positions` event's rooms (one that came already, or the next to come); other
    /// frames read meanwhile are dropped.
    pub async fn read_positions(&mut self) -> BTreeMap<String, ReadPosition> {
        if let Some(rooms) = self.positions.pop_front() {
            return rooms;
        }
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("read_positions in time")
                .expect("the socket is still open")
                .expect("a readable frame");
            if let Message::Text(text) = &next {
                if let Ok(ServerEvent::ReadPositions { rooms }) =
                    serde_json::from_str(text.as_str())
                {
                    return rooms;
                }
            }
        }
    }

    /// The next frame, which must be a JSON event.
    pub async fn event(&mut self) -> ServerEvent {
        self.event_within(PATIENCE).await
    }

    /// The next frame, which must be a JSON event, waiting up to `patience` for it.
    pub async fn event_within(&mut self, patience: Duration) -> ServerEvent {
        match self.frame_within(patience).await {
            Message::Text(text) => serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("unreadable event {text:?}: {e}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next event that is not an acknowledgement of this client's own message.
    pub async fn said(&mut self) -> ServerEvent {
        loop {
            match self.event().await {
                ServerEvent::Ack { .. } => {}
                other => return other,
            }
        }
    }

    /// Reads the welcome; returns the name and the session token.
    pub async fn welcome(&mut self) -> (String, String) {
        match self.event().await {
            ServerEvent::Welcome { name, session, .. } => (name, session),
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    /// Reads events up to the `joined` of `room` (skipping e.g. acks); returns it.
    pub async fn joined(&mut self, room: &str) -> Joined {
        loop {
            match self.event().await {
                ServerEvent::Joined {
                    room: got,
                    recovered,
                    messages,
                    oldest_seq,
                    online,
                    online_count,
                } if got == room => {
                    return Joined {
                        recovered,
                        messages,
                        oldest_seq,
                        online,
                        online_count,
                    }
                }
                ServerEvent::Ack { .. } | ServerEvent::Typing { .. } => {}
                other => panic!("expected joined {room}, got {other:?}"),
            }
        }
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, frame: serde_json::Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// The next frame, which must be a close frame; returns it.
    pub async fn closed(&mut self) -> CloseFrame {
        match self.frame().await {
            Message::Close(Some(frame)) => frame,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The real binary, listening on a free port, keeping its data in `data_dir`. Killed (SIGKILL) when
/// dropped.
pub struct Binary {
    pub child: Child,
    pub addr: String,
}

impl Binary {
    /// The binary on `data_dir`, and on `database_url` if given (else SQLite in `data_dir`, whatever the
    /// environment says).
    pub fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> Binary {
        match database_url {
            Some(url) => Binary::start_with(data_dir, &[("DATABASE_URL", url)]),
            None => Binary::start_with(data_dir, &[]),
        }
    }

    /// The binary on `data_dir` with extra environment settings (`DATABASE_URL`, `REDIS_URL`, …); none
    /// of the test process's own `DATABASE_URL` or `REDIS_URL`.
    pub fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_groupchat"));
        command.env_remove("DATABASE_URL").env_remove("REDIS_URL");
        command.envs(env.iter().copied());
        let mut child = command
            .env("DATA_DIR", data_dir)
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("LEPTOS_OUTPUT_NAME", "groupchat")
            .env("LEPTOS_SITE_ROOT", "target/site")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        // The binary logs "listening on http://ADDR" once bound.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server logs its address")
                .expect("readable log");
            if let Some((_, addr)) = line.split_once("listening on http://") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Binary { child, addr }
    }
}

impl Binary {
    /// Opens a WebSocket to this server on `path`.
    pub async fn connect(&self, path: &str) -> Client {
        connect_to(&self.addr, path, None).await
    }

    /// Kills the process at once (SIGKILL): no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
