//! The floor of `make bench`: the least a WebSocket broadcast server can do per delivery, to set this
//! server's figures against. axum's WebSocket and one `tokio::sync::broadcast` channel, nothing else: no
//! rooms, no history, no store, no JSON, no bounds beyond the channel's. Each message is formatted once and
//! shared (`Utf8Bytes` is a reference-counted buffer); each delivery is one frame written and flushed to
//! one socket: one `write` system call, and on loopback the kernel's work of waking the reader.
//!
//! It speaks the seed's FastAPI chat's wire format (`bench/reference/app.py`): `/ws/{client_id}`, every
//! text frame broadcast to everyone as `Client #{client_id} says: {text}`, so the load generator drives it
//! with `--target reference`.
//!
//! ```text
//! cargo run --release --features ssr --example floor -- 127.0.0.1:3402
//! ```

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Messages the channel keeps for its slowest reader. A reader that falls further behind skips what it
/// missed (the load generator counts it as lost): the floor makes no promise a real chat must keep.
const BACKLOG: usize = 4096;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3402".into());
    let (room, _) = broadcast::channel::<Utf8Bytes>(BACKLOG);
    let app = Router::new()
        .route("/ws/{client_id}", get(upgrade))
        .with_state(room);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Path(client_id): Path<u64>,
    State(room): State<broadcast::Sender<Utf8Bytes>>,
) -> Response {
    ws.on_upgrade(move |socket| connection(socket, client_id, room))
}

/// axum's chat example's shape: subscribe first (so nothing said after the handshake is missed), then a
/// writer task that owns the sink and a reader task that broadcasts; whichever ends first stops the other.
async fn connection(socket: WebSocket, client_id: u64, room: broadcast::Sender<Utf8Bytes>) {
    let mut inbox = room.subscribe();
    let (mut sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(async move {
        loop {
            match inbox.recv().await {
                // `send` flushes: one write per frame, the cost this server exists to show.
                Ok(text) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
    let speaker = room.clone();
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                // `send` fails only when no one listens; the speaker's own inbox does.
                let _ = speaker.send(format!("Client #{client_id} says: {}", text.as_str()).into());
            }
        }
    });
    tokio::select! {
        _ = &mut writer => reader.abort(),
        _ = &mut reader => writer.abort(),
    }
    let _ = room.send(format!("Client #{client_id} left the chat").into());
}
