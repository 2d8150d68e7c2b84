//! The wire protocol: every frame that crosses the `/ws` socket, defined once and compiled into both the
//! server (`ssr`) and the WASM client (`hydrate`), so the two cannot drift apart.
//!
//! Frames are JSON text frames tagged by `type`. `docs/protocol.md` shows an example of every one.
//! A client frame whose first non-blank character is not `{` is plain message text (see
//! [`ClientFrame::parse`]), which keeps `websocat ws://127.0.0.1:3000/ws` usable as a terminal client.

use serde::{Deserialize, Serialize};

/// Longest name a person may choose or be given, in characters (not bytes).
pub const MAX_NAME_CHARS: usize = 32;

/// A frame the client sends to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Say something to everyone in the chat.
    Message { text: String },
    /// Are you there? The server answers [`ServerEvent::Pong`]. Browsers cannot see WebSocket pings, so
    /// the page uses this to notice a dead link.
    Ping,
}

/// Why a client frame could not be understood; each maps to an [`ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame starts like a JSON object but is not valid JSON.
    BadJson(String),
    /// Valid JSON, but not a frame this server knows (missing or unknown `type`, wrong fields).
    UnknownType(String),
}

impl ClientFrame {
    /// Reads one text frame. JSON objects are parsed strictly; anything else is plain message text.
    pub fn parse(raw: &str) -> Result<ClientFrame, FrameError> {
        if !raw.trim_start().starts_with('{') {
            return Ok(ClientFrame::Message {
                text: raw.to_owned(),
            });
        }
        // Two steps, so that "this is not JSON" and "this is JSON we don't understand" get distinct
        // error codes: the first tells a client it has a serialization bug, the second a version skew.
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| FrameError::BadJson(e.to_string()))?;
        serde_json::from_value(value).map_err(|e| FrameError::UnknownType(e.to_string()))
    }
}

/// A frame the server sends to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// First frame on every accepted connection: who you are and who else is here.
    Welcome {
        /// Your name for as long as this connection lasts.
        name: String,
        /// Everyone connected now, you included, in the order they joined; in a room larger than the
        /// server's presence limit, only the first that many.
        online: Vec<String>,
        /// How many are connected now, you included.
        online_count: usize,
    },
    /// Someone said something. The sender receives its own message too: that is its confirmation.
    Message {
        /// Server-assigned, increasing in the order the server accepted events.
        id: u64,
        from: String,
        text: String,
        /// Server time the message was accepted, in milliseconds since the Unix epoch.
        ts: u64,
    },
    /// Someone connected (sent to everyone but the newcomer, who gets [`ServerEvent::Welcome`]). Not sent
    /// in rooms larger than the server's presence limit, where it would be noise (and quadratic work).
    Join { id: u64, name: String, ts: u64 },
    /// Someone disconnected.
    Leave { id: u64, name: String, ts: u64 },
    /// Something the client sent was refused; unless followed by a close frame the connection is fine.
    Error { code: ErrorCode, message: String },
    /// The answer to [`ClientFrame::Ping`].
    Pong,
}

/// Machine-readable reason carried by [`ServerEvent::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame looked like JSON but did not parse.
    BadJson,
    /// The JSON frame has a missing or unknown `type`, or fields that type does not take.
    UnknownType,
    /// A binary frame: this protocol is text only.
    BinaryFrame,
    /// A message with nothing but whitespace in it.
    EmptyMessage,
    /// The requested name is not 1–32 printable characters. The connection is then closed.
    BadName,
    /// Someone connected already uses that name. The connection is then closed.
    NameTaken,
    /// Too many frames too fast: this one was dropped. If it goes on, the connection is closed (1008).
    RateLimited,
    /// A message over the size limit. The connection is then closed (1009).
    TooBig,
    /// The server cannot take this connection now (shutting down, or full).
    Unavailable,
    /// The page's origin may not open a socket on this server.
    ForbiddenOrigin,
}

/// Checks a requested name and returns it trimmed: 1–`max_chars` characters (the server's setting,
/// [`MAX_NAME_CHARS`] by default), none of them control characters. Used by the server to accept a name
/// and by the client to refuse one before connecting.
pub fn validate_name(raw: &str, max_chars: usize) -> Result<String, String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err("a name needs at least one visible character".into());
    }
    if chars > max_chars {
        return Err(format!(
            "a name may have at most {max_chars} characters, this one has {chars}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a name may not contain control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_a_message() {
        assert_eq!(
            ClientFrame::parse("hello there"),
            Ok(ClientFrame::Message {
                text: "hello there".into()
            })
        );
        // JSON that is not an object is still someone's text, e.g. a quoted word or a number.
        assert_eq!(
            ClientFrame::parse("42"),
            Ok(ClientFrame::Message { text: "42".into() })
        );
    }

    #[test]
    fn json_frames_parse_strictly() {
        assert_eq!(
            ClientFrame::parse(r#" {"type":"message","text":"hi"}"#),
            Ok(ClientFrame::Message { text: "hi".into() })
        );
        assert!(matches!(
            ClientFrame::parse("{not json"),
            Err(FrameError::BadJson(_))
        ));
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"dance"}"#),
            Err(FrameError::UnknownType(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"text":"no type"}"#),
            Err(FrameError::UnknownType(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"message","text":"x","extra":1}"#),
            Err(FrameError::UnknownType(_))
        ));
    }

    #[test]
    fn events_are_tagged_by_type() {
        let json = serde_json::to_string(&ServerEvent::Error {
            code: ErrorCode::NameTaken,
            message: "taken".into(),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"name_taken","message":"taken"}"#
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let valid = |name: &str| validate_name(name, MAX_NAME_CHARS);
        assert_eq!(valid("  alice "), Ok("alice".into()));
        assert_eq!(valid("Zoë 🦀"), Ok("Zoë 🦀".into()));
        assert!(valid("   ").is_err());
        assert!(valid(&"x".repeat(33)).is_err());
        assert!(valid(&"é".repeat(32)).is_ok());
        assert!(valid("tab\tname").is_err());
        assert!(validate_name("alice", 4).is_err());
    }
}
