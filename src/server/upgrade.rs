//! The HTTP side of `/ws`: who may open a chat socket, under which name.
//!
//! Checks run before the upgrade, so a refused client gets a plain HTTP status:
//! - **Origin** (cross-site WebSocket hijacking): a browser always sends `Origin`; only the site's own
//!   (same host as the request) and the configured extra origins are accepted, others get 403. Clients
//!   that send no `Origin` (terminal clients, bots) are not browsers acting for someone else: accepted.
//! - **Capacity**: a connection holds a permit of a `Semaphore` sized `--max-connections` for its whole
//!   life; with none left, 503.
//!
//! Who: the `chat_session` cookie (see `session.rs`) names the person and the name they had; `?name=`
//! asks for a name explicitly. Which room to follow at once: `?room=` (default `general`; empty for
//! none, as the page does: it joins its rooms itself, saying what it already has of each).

use axum::extract::{Path, Query, State};
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::Deserialize;

use super::connection;
use super::error::ChatError;
use super::manager::Identity;
use super::metrics as m;
use super::names::LEGACY_PREFIX;
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
    accept(upgrade, &headers, state, identity, first_room)
}

/// `/ws/{client_id}`, the reference chat's route: the name is `Client #{client_id}`, in `general`.
pub async fn legacy_chat_socket(
    upgrade: Handshake,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let identity = Identity {
        session: None,
        chosen: Some(format!("{LEGACY_PREFIX}{client_id}")),
        legacy: true,
    };
    accept(
        upgrade,
        &headers,
        state,
        identity,
        Some(DEFAULT_ROOM.to_owned()),
    )
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
    state: AppState,
    identity: Identity,
    first_room: Option<String>,
) -> Response {
    if let Err(error) = check_origin(headers, &state.chat.config.allowed_origins) {
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        return error.into_response();
    }
    let Ok(permit) = state.connection_permits.clone().try_acquire_owned() else {
        let error = ChatError::TooManyConnections;
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        return error.into_response();
    };
    let tracked = state.sockets.token();
    upgrade.accept(move |socket| async move {
        connection::serve(socket, state.chat, identity, first_room).await;
        // Held until here: the permit bounds live connections, the token lets shutdown wait for them.
        drop((permit, tracked));
    })
}

/// Accepts a request without `Origin`, from the request's own host, or from a configured origin.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ChatError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let same_site = origin_host.is_some()
        && origin_host.map(str::to_ascii_lowercase) == host.map(str::to_ascii_lowercase);
    let listed = allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if same_site || listed {
        Ok(())
    } else {
        Err(ChatError::ForbiddenOrigin(origin.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_static(origin));
        }
        headers
    }

    #[test]
    fn origins() {
        let extra = vec!["https://chat.example.com/".to_string()];
        let ok = |origin, host| check_origin(&headers(origin, host), &extra).is_ok();
        assert!(ok(None, "127.0.0.1:3000"));
        assert!(ok(Some("http://127.0.0.1:3000"), "127.0.0.1:3000"));
        assert!(ok(Some("https://Chat.Example.com"), "10.0.0.1:3000"));
        assert!(!ok(Some("http://evil.example"), "127.0.0.1:3000"));
        assert!(!ok(Some("http://127.0.0.1:3001"), "127.0.0.1:3000"));
        assert!(!ok(Some("null"), "127.0.0.1:3000"));
    }
}
