//! The one error type of the chat service: every refusal a client can meet, with the `error` event it is
//! told about, the WebSocket close code when the refusal ends the connection, and the HTTP status when it
//! happens before the upgrade.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::frame::{close, Kick};
use crate::protocol::{ErrorCode, FrameError, FrameRef, ServerEvent};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("bad name: {0}")]
    BadName(String),
    #[error("the name {0:?} is already in use")]
    NameTaken(String),
    #[error("bad room name: {0}")]
    BadRoom(String),
    #[error("you are not in room {0:?}: join it first")]
    NotJoined(String),
    #[error("you are already in room {0:?}")]
    AlreadyJoined(String),
    #[error("too many rooms: one connection may follow at most {0}")]
    TooManyRooms(usize),
    #[error("too many new rooms: try again in a minute, or join an existing room")]
    TooManyNewRooms,
    #[error(
        "a client_id has 1 to {} bytes and no control characters",
        crate::protocol::MAX_CLIENT_ID_BYTES
    )]
    BadClientId,
    #[error("the server is busy: send that again in a moment")]
    Busy,
    #[error("the server could not store or read history: try again in a moment")]
    StoreFailed,
    #[error("malformed JSON: {0}")]
    BadJson(String),
    #[error("unknown frame: {0}")]
    UnknownType(String),
    #[error("binary frames are not supported: send JSON or plain text")]
    BinaryFrame,
    #[error("empty message: there is nothing to send")]
    EmptyMessage,
    #[error("bad text: {0}")]
    BadText(String),
    #[error("slow down: too many frames, this one was dropped")]
    RateLimited,
    #[error("flooding: too many frames refused")]
    Flooding,
    #[error("message too big: at most {0} bytes")]
    TooBig(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("too many connections, try again later")]
    TooManyConnections,
    #[error("origin {0:?} may not open a chat socket here")]
    ForbiddenOrigin(String),
    #[error("this server does not answer to the host name {0:?} (see --allowed-hosts)")]
    ForbiddenHost(String),
    #[error("message {0} is not yours: only its author may change it")]
    NotAuthor(u64),
    #[error("room {0:?} has no message {1} (or it was deleted)")]
    NoSuchMessage(String, u64),
    #[error("bad reaction: {0}")]
    BadReaction(String),
    #[error("banned: {0}")]
    Banned(String),
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::BadName(_) => ErrorCode::BadName,
            ChatError::NameTaken(_) => ErrorCode::NameTaken,
            ChatError::BadJson(_) => ErrorCode::BadJson,
            ChatError::UnknownType(_) => ErrorCode::UnknownType,
            ChatError::BinaryFrame => ErrorCode::BinaryFrame,
            ChatError::EmptyMessage => ErrorCode::EmptyMessage,
            ChatError::BadText(_) => ErrorCode::BadText,
            ChatError::RateLimited | ChatError::Flooding => ErrorCode::RateLimited,
            ChatError::TooBig(_) => ErrorCode::TooBig,
            ChatError::BadRoom(_) => ErrorCode::BadRoom,
            ChatError::NotJoined(_) => ErrorCode::NotJoined,
            ChatError::AlreadyJoined(_) => ErrorCode::AlreadyJoined,
            ChatError::TooManyRooms(_) => ErrorCode::TooManyRooms,
            ChatError::TooManyNewRooms => ErrorCode::TooManyNewRooms,
            ChatError::BadClientId => ErrorCode::BadClientId,
            ChatError::ShuttingDown
            | ChatError::TooManyConnections
            | ChatError::Busy
            | ChatError::StoreFailed => ErrorCode::Unavailable,
            ChatError::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            ChatError::ForbiddenHost(_) => ErrorCode::ForbiddenHost,
            ChatError::NotAuthor(_) => ErrorCode::NotAuthor,
            ChatError::NoSuchMessage(..) => ErrorCode::NoSuchMessage,
            ChatError::BadReaction(_) => ErrorCode::BadReaction,
            ChatError::Banned(_) => ErrorCode::Banned,
        }
    }

    /// A short label for logs and the `reason` of the rejected-frames metric.
    pub fn label(&self) -> &'static str {
        match self.code() {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::EmptyMessage => "empty_message",
            ErrorCode::BadText => "bad_text",
            ErrorCode::BadName => "bad_name",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::TooManyNewRooms => "too_many_new_rooms",
            ErrorCode::BadClientId => "bad_client_id",
            ErrorCode::RateLimited if *self == ChatError::Flooding => "flooding",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooBig => "too_big",
            ErrorCode::Unavailable if *self == ChatError::Busy => "busy",
            ErrorCode::Unavailable if *self == ChatError::StoreFailed => "store_failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::ForbiddenHost => "forbidden_host",
            ErrorCode::NotAuthor => "not_author",
            ErrorCode::NoSuchMessage => "no_such_message",
            ErrorCode::BadReaction => "bad_reaction",
            ErrorCode::Banned => "banned",
        }
    }

    /// The `error` event that tells the client what went wrong (with the frame it `answers`, if any).
    pub fn event(&self, answers: Option<FrameRef>) -> ServerEvent {
        ServerEvent::Error {
            code: self.code(),
            message: self.to_string(),
            answers,
        }
    }

    /// `Some(code)` when the connection cannot go on after this error. A refused name ends it (the client
    /// must reconnect with another); a bad frame does not (the next frame may be fine).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ChatError::BadName(_)
            | ChatError::NameTaken(_)
            | ChatError::Flooding
            | ChatError::Banned(_) => Some(close::POLICY),
            ChatError::TooBig(_) => Some(close::TOO_BIG),
            ChatError::ShuttingDown => Some(close::GOING_AWAY),
            ChatError::TooManyConnections => Some(close::TRY_AGAIN_LATER),
            ChatError::ForbiddenOrigin(_) => Some(close::POLICY),
            _ => None,
        }
    }

    /// How the server closes a connection over this error: with [`ChatError::close_code`], or, for an
    /// error that leaves a JSON connection open, the code nearest its meaning (a connection on the
    /// original chat's format cannot be told it in an `error` event, so it is closed instead); and a
    /// short reason naming it.
    pub fn kick(&self) -> Kick {
        let code = self.close_code().unwrap_or(match self {
            ChatError::BinaryFrame => close::UNSUPPORTED_DATA,
            ChatError::Busy | ChatError::StoreFailed | ChatError::TooManyNewRooms => {
                close::TRY_AGAIN_LATER
            }
            _ => close::POLICY,
        });
        let reason = match self {
            ChatError::Flooding => "flooding",
            ChatError::TooBig(_) => "message too big",
            ChatError::RateLimited => "rate limited: too many messages",
            ChatError::BinaryFrame => "binary frames are not supported",
            ChatError::BadText(_) => "control characters in the text",
            ChatError::Busy => "server busy: send again later",
            ChatError::StoreFailed => "history unavailable: send again later",
            ChatError::ShuttingDown => "server shutting down",
            _ => "refused",
        };
        Kick { code, reason }
    }

    /// The HTTP status for refusals that happen before the WebSocket upgrade.
    pub fn status(&self) -> StatusCode {
        match self {
            ChatError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            // 421 Misdirected Request: "this server is not the one for that name".
            ChatError::ForbiddenHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ChatError::TooManyConnections | ChatError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
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
