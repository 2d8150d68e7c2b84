//! The one error type of the chat service: every refusal a client can meet, with the `error` event it is
//! told about and, when the refusal ends the connection, the WebSocket close code.

use crate::protocol::{ErrorCode, FrameError, ServerEvent};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("bad name: {0}")]
    BadName(String),
    #[error("the name {0:?} is already in use")]
    NameTaken(String),
    #[error("malformed JSON: {0}")]
    BadJson(String),
    #[error("unknown frame: {0}")]
    UnknownType(String),
    #[error("binary frames are not supported: send JSON or plain text")]
    BinaryFrame,
    #[error("empty message: there is nothing to send")]
    EmptyMessage,
}

/// RFC 6455 close code 1008: the peer broke a rule of this endpoint.
pub const CLOSE_POLICY: u16 = 1008;

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::BadName(_) => ErrorCode::BadName,
            ChatError::NameTaken(_) => ErrorCode::NameTaken,
            ChatError::BadJson(_) => ErrorCode::BadJson,
            ChatError::UnknownType(_) => ErrorCode::UnknownType,
            ChatError::BinaryFrame => ErrorCode::BinaryFrame,
            ChatError::EmptyMessage => ErrorCode::EmptyMessage,
        }
    }

    /// The `error` event that tells the client what went wrong.
    pub fn event(&self) -> ServerEvent {
        ServerEvent::Error {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// `Some(code)` when the connection cannot go on after this error. A refused name ends it (the client
    /// must reconnect with another); a bad frame does not (the next frame may be fine).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ChatError::BadName(_) | ChatError::NameTaken(_) => Some(CLOSE_POLICY),
            _ => None,
        }
    }
}

impl From<FrameError> for ChatError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::BadJson(why) => ChatError::BadJson(why),
            FrameError::UnknownType(why) => ChatError::UnknownType(why),
        }
    }
}
