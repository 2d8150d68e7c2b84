//! Test support: the real server on 127.0.0.1:0 and a small WebSocket client for it.

#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use groupchat::protocol::ServerEvent;
use groupchat::server::{run, AppState, Config};
use leptos::prelude::LeptosOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once before it calls it a failure.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let options = LeptosOptions::builder()
            .output_name("groupchat")
            .site_root("target/site")
            .build();
        let state = AppState::new(options, config);
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, state.clone(), async {
            let _ = stop.await;
        }));
        TestServer {
            addr,
            state,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Opens a WebSocket on `path` (e.g. `/ws`, `/ws?name=ann`, `/ws/7`).
    pub async fn connect(&self, path: &str) -> Client {
        let url = format!("ws://{}{}", self.addr, path);
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Client { ws }
    }

    /// Connects and reads the welcome; returns the client and its name.
    pub async fn join(&self, path: &str) -> (Client, String) {
        let mut client = self.connect(path).await;
        match client.event().await {
            ServerEvent::Welcome { name, .. } => (client, name),
            other => panic!("expected a welcome, got {other:?}"),
        }
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
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    /// Waits (bounded) until the manager holds exactly `n` connections.
    pub async fn wait_for_connections(&self, n: usize) {
        let manager = self.state.manager.clone();
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

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next frame, whatever it is (pings are answered by tungstenite and skipped here).
    pub async fn frame(&mut self) -> Message {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is still open")
                .expect("a readable frame");
            if !matches!(next, Message::Ping(_) | Message::Pong(_)) {
                return next;
            }
        }
    }

    /// The next frame, which must be a JSON event.
    pub async fn event(&mut self) -> ServerEvent {
        match self.frame().await {
            Message::Text(text) => serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("unreadable event {text:?}: {e}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
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
