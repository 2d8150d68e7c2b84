//! What goes out on a chat socket, below everything else in the server: the two wire formats a
//! connection may speak ([`WireFormat`]), an event encoded once per format as a complete WebSocket
//! frame ([`Frame`]), and why the server closes a socket ([`Kick`], with the close codes it uses).
//!
//! Every module that queues, logs or writes frames (fanout, outbox, rooms, connection) depends on this
//! one and on nothing above it.

use crate::protocol::{EntryKind, ServerEvent};

/// One event, encoded once as a complete WebSocket frame and shared by every recipient: cloning it bumps a
/// reference count, it copies nothing.
pub type Frame = bytes::Bytes;

/// What a connection reads on the wire. Chosen at the handshake, for the connection's whole life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WireFormat {
    /// The JSON events of [`crate::protocol`]: every `/ws` connection, and `/ws/{client_id}?format=json`.
    #[default]
    Json,
    /// The original FastAPI chat's text lines, what `/ws/{client_id}` speaks by default: `{name} says:
    /// {text}` for every message (the sender's own too) and `{name} left the chat`, nothing else (see
    /// [`encode_legacy`]). Every frame the client sends is message text.
    Legacy,
}

/// Serializes an event into a WebSocket text frame.
pub fn encode(event: &ServerEvent) -> Frame {
    // `ServerEvent` has only string keys and plain data, so serializing cannot fail; were it ever to,
    // an `unavailable` error frame is still a valid frame, and no client input can reach this.
    let json = serde_json::to_string(event).unwrap_or_else(|error| {
        tracing::error!(%error, "an event did not serialize");
        r#"{"type":"error","code":"unavailable","message":"internal error"}"#.to_owned()
    });
    super::websocket::text_frame(&json)
}

/// The event as the original chat would have said it, as a WebSocket text frame; `None` for events it
/// had no words for. Its server broadcast exactly two lines, `Client #{client_id} says: {data}` for
/// every message it received (to the sender too) and `Client #{client_id} left the chat` when a client
/// went (`shared/seeds/000_*.txt`); it announced no one's arrival, and had no welcome, acknowledgement,
/// history, typing or error frames. Names of people on the new page stand where `Client #{id}` stood.
pub fn encode_legacy(event: &ServerEvent) -> Option<Frame> {
    let line = match event {
        // Edits and deletes have no words there: the original's clients see messages as first said.
        ServerEvent::Message {
            from,
            text,
            kind: EntryKind::Message,
            ..
        } => format!("{from} says: {text}"),
        ServerEvent::Leave { name, .. } => format!("{name} left the chat"),
        _ => return None,
    };
    Some(super::websocket::text_frame(&line))
}

/// RFC 6455 close codes the server sends.
pub mod close {
    /// Normal end (also the answer to a client's close without a code).
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown), or the peer stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer sent a kind of data this endpoint does not take (a binary frame on the original
    /// format, which cannot say so in an error frame).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// The peer broke a rule of this endpoint (bad name, flooding).
    pub const POLICY: u16 = 1008;
    /// The peer sent a message larger than allowed.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: the peer could not keep up.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Why the server ends a connection on its own initiative: sent as the WebSocket close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

impl Kick {
    /// The client could not keep up with the room, or let its personal frames pile up.
    pub const TOO_SLOW: Kick = Kick {
        code: close::TRY_AGAIN_LATER,
        reason: "too slow: outbound queue full",
    };
    /// The server is stopping.
    pub const SHUTDOWN: Kick = Kick {
        code: close::GOING_AWAY,
        reason: "server shutting down",
    };
    /// The operator banned this person or name from the server.
    pub const BANNED: Kick = Kick {
        code: close::POLICY,
        reason: "banned from this server",
    };
    /// The client did not answer a ping in time.
    pub const PING_TIMEOUT: Kick = Kick {
        code: close::GOING_AWAY,
        reason: "ping timeout",
    };
}
