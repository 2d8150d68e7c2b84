//! The HTTP side of `/ws`: who may open a chat socket, under which name.
//!
//! Checks run before the upgrade, so a refused client gets a plain HTTP status:
//! - **Origin** (cross-site WebSocket hijacking, DNS rebinding): a browser always sends `Origin`; only
//!   the server's own host names (see `hosts.rs`; never just "the same as the request's Host", which a
//!   rebound name satisfies) and `--allowed-origins` are accepted, others get 403. Clients that send no
//!   `Origin` (terminal clients, bots) are not browsers acting for someone else: accepted.
//! - **Capacity**: a connection holds a permit of a `Semaphore` sized `--max-connections` for its whole
//!   life; with none left, 503.
//!
//! Who: the `chat_session` cookie (see `session.rs`) names the person and the name they had; `?name=`
//! asks for a name explicitly. Which room to follow at once: `?room=` (default `general`; empty for
//! none, as the page does: it joins its rooms itself, saying what it already has of each).
//!
//! `/ws/{client_id}` is the original FastAPI chat's route, for its clients as they are: the name
//! `Client #{client_id}`, the room `general`, and by default the original's wire format, plain text
//! lines ([`WireFormat::Legacy`]); `?format=json` gives it the JSON protocol of `/ws` instead.

use axum::extract::{Path, Query, State};
use axum::Extension;
use futures::FutureExt;
use std::sync::Arc;

use axum::http::header::{COOKIE, ORIGIN};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::Deserialize;

use super::connection;
use super::error::ChatError;
use super::frame::WireFormat;
use super::hosts::HostPolicy;
use super::metrics as m;
use super::names::LEGACY_PREFIX;
use super::registry::Identity;
use super::session::Sessions;
use super::websocket::Handshake;
use super::AppState;
use crate::protocol::DEFAULT_ROOM;

#[derive(Deserialize)]
pub struct WsQuery {
    name: Option<String>,
    room: Option<String>,
}

/// `/ws`, `/ws?name=alice`, `/ws?room=dev`, `/ws?room=`.
pub async fn chat_socket(
    upgrade: Handshake,
    Query(query): Query<WsQuery>,
    hosts: Option<Extension<Arc<HostPolicy>>>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let identity = Identity {
        session: session(&headers, &state.chat.sessions),
        chosen: query.name,
        legacy: false,
    };
    let first_room = match query.room {
        None => Some(DEFAULT_ROOM.to_owned()),
        Some(room) if room.is_empty() => None,
        Some(room) => Some(room),
    };
    let socket = Socket {
        identity,
        format: WireFormat::Json,
        first_room,
    };
    accept(upgrade, &headers, hosts, state, socket)
}

#[derive(Deserialize)]
pub struct LegacyQuery {
    #[serde(default)]
    format: LegacyFormat,
}

/// `?format=` of `/ws/{client_id}`; any other value is refused (400) before the upgrade.
#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LegacyFormat {
    /// The original chat's text lines.
    #[default]
    Text,
    /// The JSON protocol of `/ws`.
    Json,
}

/// `/ws/{client_id}`, the reference chat's route: the name is `Client #{client_id}`, in `general`,
/// speaking the reference chat's text lines unless `?format=json`.
pub async fn legacy_chat_socket(
    upgrade: Handshake,
    Path(client_id): Path<String>,
    Query(query): Query<LegacyQuery>,
    hosts: Option<Extension<Arc<HostPolicy>>>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let identity = Identity {
        session: None,
        chosen: Some(format!("{LEGACY_PREFIX}{client_id}")),
        legacy: true,
    };
    let format = match query.format {
        LegacyFormat::Text => WireFormat::Legacy,
        LegacyFormat::Json => WireFormat::Json,
    };
    let socket = Socket {
        identity,
        format,
        first_room: Some(DEFAULT_ROOM.to_owned()),
    };
    accept(upgrade, &headers, hosts, state, socket)
}

/// What an accepted socket is: who, speaking what, following which room at once.
struct Socket {
    identity: Identity,
    format: WireFormat,
    first_room: Option<String>,
}

/// The session a valid `chat_session` cookie names; an invalid one is ignored (a new person).
fn session(headers: &HeaderMap, sessions: &Sessions) -> Option<super::session::Session> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(Sessions::from_cookie_header)
        .and_then(|token| sessions.verify(token))
}

fn accept(
    upgrade: Handshake,
    headers: &HeaderMap,
    hosts: Option<Extension<Arc<HostPolicy>>>,
    state: AppState,
    socket: Socket,
) -> Response {
    if let Err(error) = check_origin(headers, hosts.as_deref().map(Arc::as_ref)) {
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        return error.into_response();
    }
    let Ok(permit) = state.connection_permits.clone().try_acquire_owned() else {
        let error = ChatError::TooManyConnections;
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        return error.into_response();
    };
    let tracked = state.sockets.token();
    let Socket {
        identity,
        format,
        first_room,
    } = socket;
    upgrade.accept(move |upgraded| {
        // Held until the connection ends: the permit bounds live connections, the token lets shutdown
        // wait for them. Dropped by a `map` on `serve`'s future, not after it in an async block: the
        // block would keep a copy of `serve`'s arguments beside it for as long as the socket is open.
        connection::serve(upgraded, state.chat, identity, format, first_room)
            .map(move |()| drop((permit, tracked)))
    })
}

/// Accepts a request without `Origin`, or from an origin `hosts` allows. Without a policy (the router
/// was built without the host check) no browser origin is accepted.
fn check_origin(headers: &HeaderMap, hosts: Option<&HostPolicy>) -> Result<(), ChatError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    if hosts.is_some_and(|hosts| hosts.allows_origin(origin)) {
        Ok(())
    } else {
        Err(ChatError::ForbiddenOrigin(origin.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins() {
        let config = super::super::Config {
            allowed_origins: vec!["https://chat.example.com/".into()],
            ..Default::default()
        };
        let hosts = HostPolicy::new("127.0.0.1:3000".parse().unwrap(), &config);
        let ok = |origin: Option<&'static str>, hosts: Option<&HostPolicy>| {
            let mut headers = HeaderMap::new();
            if let Some(origin) = origin {
                headers.insert(ORIGIN, HeaderValue::from_static(origin));
            }
            check_origin(&headers, hosts).is_ok()
        };
        assert!(ok(None, Some(&hosts)));
        assert!(ok(None, None));
        assert!(ok(Some("http://127.0.0.1:3000"), Some(&hosts)));
        assert!(ok(Some("https://Chat.Example.com"), Some(&hosts)));
        assert!(!ok(Some("http://evil.example"), Some(&hosts)));
        assert!(!ok(Some("http://127.0.0.1:3001"), Some(&hosts)));
        assert!(!ok(Some("null"), Some(&hosts)));
        assert!(!ok(Some("http://127.0.0.1:3000"), None));
    }
}
