//! One WebSocket connection, from upgrade to goodbye.
//!
//! Each connection is two tasks (the shape of axum's chat example):
//! - the **writer** owns the socket's sending half and drains the connection's outbound queue, in batches:
//!   it feeds every frame that is waiting and flushes once, so a burst costs one write, not one per frame;
//! - the **reader** owns the receiving half, parses each frame and hands it to the [`ConnectionManager`].
//!
//! Whichever ends first (client gone, socket error, kicked by the manager) ends the other, then the
//! connection leaves the manager. The reader never writes to the socket itself: replies to this client go
//! through the same queue as broadcasts, so they keep their place in the order of events.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::error::ChatError;
use super::manager::{ConnId, ConnectionManager, Frame, Kick};
use super::names::NameRequest;
use crate::protocol::ClientFrame;

/// Most frames the writer takes from its queue per flush.
const WRITE_BATCH: usize = 64;

/// How long a goodbye (close frame) may take to leave; a peer that is not reading never takes it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs one upgraded socket to its end.
pub async fn serve(socket: WebSocket, manager: Arc<ConnectionManager>, request: NameRequest) {
    let joined = match manager.join(request) {
        Ok(joined) => joined,
        Err(error) => return refuse(socket, error).await,
    };
    let id = joined.id;
    tracing::debug!(conn = id, name = %joined.name, "connected");

    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(sink, joined.outbox, joined.kicked));
    let mut reader = tokio::spawn(read_loop(stream, id, manager.clone()));

    tokio::select! {
        _ = &mut writer => reader.abort(),
        _ = &mut reader => {
            // The client is gone or said goodbye. Leaving drops our queue's sender, which lets the writer
            // finish on its own (it sends a close frame if the socket still takes one).
            manager.leave(id);
            if tokio::time::timeout(CLOSE_GRACE, &mut writer).await.is_err() {
                writer.abort();
            }
        }
    }
    manager.leave(id);
    tracing::debug!(conn = id, "disconnected");
}

/// Tells a client why it cannot join (an `error` event), then closes with the error's close code.
async fn refuse(mut socket: WebSocket, error: ChatError) {
    tracing::debug!(%error, "connection refused");
    let event = super::manager::encode(&error.event());
    let close = Message::Close(Some(CloseFrame {
        code: error.close_code().unwrap_or(super::error::CLOSE_POLICY),
        reason: close_reason(&error.to_string()).into(),
    }));
    let goodbye = async {
        socket.send(Message::Text(event)).await?;
        socket.send(close).await
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
}

/// Sends every queued frame to the client until the queue closes or the manager kicks this connection.
async fn write_loop<S>(
    mut sink: S,
    mut outbox: mpsc::Receiver<Frame>,
    mut kicked: oneshot::Receiver<Kick>,
) where
    S: Sink<Message> + Unpin,
{
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let goodbye = loop {
        // `biased`: a kick wins over queued frames; a client being dropped for falling behind gets no more.
        let received = tokio::select! {
            biased;
            kick = &mut kicked => break kick.ok(),
            n = outbox.recv_many(&mut batch, WRITE_BATCH) => n,
        };
        if received == 0 {
            // The manager dropped this connection's queue: it left normally.
            break None;
        }
        let write = async {
            for frame in batch.drain(..) {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await
        };
        // A write can block for as long as the client does not read; a kick must still get through.
        tokio::select! {
            biased;
            kick = &mut kicked => break kick.ok(),
            written = write => if written.is_err() { return },
        }
    };
    let kick = goodbye.unwrap_or(Kick {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "bye",
    });
    let close = Message::Close(Some(CloseFrame {
        code: kick.code,
        reason: kick.reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close)).await;
}

/// Reads frames until the client closes or the socket fails, handing each to the manager.
async fn read_loop<S, E>(mut stream: S, id: ConnId, manager: Arc<ConnectionManager>)
where
    S: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    while let Some(received) = stream.next().await {
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(conn = id, %error, "read failed");
                return;
            }
        };
        let outcome = match message {
            Message::Text(text) => match ClientFrame::parse(text.as_str()) {
                Ok(ClientFrame::Message { text }) => manager.say(id, text),
                Err(error) => Err(error.into()),
            },
            Message::Binary(_) => Err(ChatError::BinaryFrame),
            Message::Close(_) => return,
            // tungstenite answers pings itself; pongs need nothing from us.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        };
        if let Err(error) = outcome {
            manager.reject(id, &error);
        }
    }
}

/// A close frame's reason is limited to 123 bytes: cut at a character boundary.
fn close_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
