//! The operator's HTTP API, on when `--admin-token` is set (`Authorization: Bearer <token>`):
//!
//! - `GET /api/admin/bans`: every ban;
//! - `POST /api/admin/bans` `{"name": "bob", "scope": "person" | "name", "room": "dev", "reason": "…"}`:
//!   bans the person going by that name (`person`, the default: their session, whatever name they take
//!   next) or the name itself (`name`: no one may use it), from `room` or, without one, the server;
//! - `DELETE /api/admin/bans/{id}`: lifts a ban;
//! - `DELETE /api/admin/rooms/{room}/messages/{seq}`: deletes anyone's message (an entry of the room's
//!   log like its author's delete, by "operator").
//!
//! No token set: 404, as if there were no such API. A request without the bearer token: 401; with a
//! wrong one: 403. Every action is logged (`moderation:`) with what was done and when; the operator is
//! whoever holds the token. Bans are stored, applied on this node at once (sockets of a banned person
//! closed with 1008, members of a room they are banned from removed), and every other node reads them
//! again when told over the bus (and every `bans::RELOAD_EVERY` anyway).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::clock::now_ms;
use super::history::Submission;
use super::manager::ConnectionManager;
use super::names::name_key;
use super::store::{Ban, NewMessage, Refusal, Store, Stored, OPERATOR};
use super::{AppState, Chat};
use crate::protocol::{validate_room, EntryKind};

/// Longest name, room and reason the API takes, in bytes.
const MAX_FIELD_BYTES: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/bans", get(list_bans).post(add_ban))
        .route("/api/admin/bans/{id}", delete(lift_ban))
        .route(
            "/api/admin/rooms/{room}/messages/{seq}",
            delete(delete_message),
        )
}

/// Reads the bans from `store` and applies them on this node.
pub async fn reload_bans(store: Store, manager: Arc<ConnectionManager>) {
    // One reload at a time, each read and applied in turn: otherwise a reload that read before a ban
    // was stored (the periodic one, or one a peer asked for) could finish after the reload that read
    // it, and put the old bans back for a while. A process-wide lock: reloads are rare and short.
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = TURN.lock().await;
    match store.bans().await {
        Ok(bans) => manager.set_bans(bans),
        Err(error) => tracing::warn!(%error, "the bans could not be read"),
    }
}

/// The request's bearer token against the configured one (compared in constant time): the refusal,
/// if it is not the operator's.
fn refusal(chat: &Chat, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = chat.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
        return Some(StatusCode::NOT_FOUND.into_response());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "the admin API needs Authorization: Bearer <token>"})),
            )
                .into_response(),
        );
    };
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0;
    if !same {
        tracing::warn!("moderation: a request with a wrong admin token was refused");
        return Some(error(StatusCode::FORBIDDEN, "wrong admin token"));
    }
    None
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn unavailable(err: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %err, "admin API: the store failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store could not be reached",
    )
}

async fn list_bans(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&state.chat, &headers) {
        return refused;
    }
    match state.chat.store.bans().await {
        Ok(bans) => Json(bans).into_response(),
        Err(err) => unavailable(err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    name: String,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    reason: String,
}

#[derive(Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Scope {
    /// The person going by the name now (or who last wrote as it): their session.
    #[default]
    Person,
    /// The name itself, whoever takes it.
    Name,
}

async fn add_ban(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<BanRequest>,
) -> Response {
    if let Some(refused) = refusal(&state.chat, &headers) {
        return refused;
    }
    let chat = &state.chat;
    let BanRequest {
        name,
        scope,
        room,
        reason,
    } = request;
    let too_long = [Some(&name), room.as_ref(), Some(&reason)]
        .into_iter()
        .flatten()
        .any(|field| field.len() > MAX_FIELD_BYTES);
    if name.trim().is_empty() || too_long {
        return error(
            StatusCode::BAD_REQUEST,
            "a name (and room and reason) of 1 to 500 bytes",
        );
    }
    if let Some(room) = &room {
        if let Err(why) = validate_room(room) {
            return error(StatusCode::BAD_REQUEST, &why);
        }
    }
    let (person, name_key) = match scope {
        Scope::Name => (None, Some(name_key(&name))),
        Scope::Person => {
            // Online here; else online on another node (its name lease says who); else whoever
            // last wrote as it.
            let mut person = chat.manager.person_named(&name);
            if let (None, Some(cluster)) = (person, &chat.cluster) {
                person = cluster.holder_of(super::names::name_key(&name)).await;
            }
            if person.is_none() {
                person = match chat.store.last_author(&name).await {
                    Ok(person) => person,
                    Err(err) => return unavailable(err),
                };
            }
            let Some(person) = person else {
                return error(
                    StatusCode::NOT_FOUND,
                    "no one goes by that name here, or ever wrote as it",
                );
            };
            (Some(person), None)
        }
    };
    let ban = Ban {
        id: 0,
        person,
        name_key,
        name,
        room,
        reason,
        ts: now_ms(),
    };
    let ban = match chat.store.add_ban(ban).await {
        Ok(ban) => ban,
        Err(err) => return unavailable(err),
    };
    tracing::info!(
        action = "ban",
        id = ban.id,
        name = ban.name,
        person = ?ban.person,
        room = ?ban.room,
        reason = ban.reason,
        ts = ban.ts,
        by = "operator",
        "moderation: banned"
    );
    applied(chat).await;
    (StatusCode::CREATED, Json(ban)).into_response()
}

async fn lift_ban(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    if let Some(refused) = refusal(&state.chat, &headers) {
        return refused;
    }
    match state.chat.store.remove_ban(id).await {
        Ok(true) => {
            tracing::info!(
                action = "unban",
                id,
                ts = now_ms(),
                by = "operator",
                "moderation: ban lifted"
            );
            applied(&state.chat).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no such ban"),
        Err(err) => unavailable(err),
    }
}

/// The bans changed: applied here now, and on the other nodes when they hear of it.
async fn applied(chat: &Arc<Chat>) {
    reload_bans(chat.store.clone(), chat.manager.clone()).await;
    chat.manager.bans_changed();
}

async fn delete_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, u64)>,
) -> Response {
    if let Some(refused) = refusal(&state.chat, &headers) {
        return refused;
    }
    if let Err(why) = validate_room(&room) {
        return error(StatusCode::BAD_REQUEST, &why);
    }
    let (reply, outcome) = oneshot::channel();
    let submission = Submission {
        // No connection has id 0: the acknowledgement goes nowhere; the outcome comes on `reply`.
        sender: 0,
        message: NewMessage {
            room: room.clone(),
            author_id: OPERATOR,
            author: "operator".into(),
            text: String::new(),
            ts: now_ms(),
            client_id: None,
            kind: EntryKind::Delete,
            target: Some(seq),
        },
        reply: Some(reply),
    };
    if state.chat.writer.submit(submission).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy: try again",
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), outcome).await {
        Ok(Ok(Stored::New(entry))) => {
            tracing::info!(
                action = "delete",
                room,
                seq,
                entry = entry.seq,
                ts = entry.ts,
                by = "operator",
                "moderation: message deleted"
            );
            Json(json!({"room": room, "seq": seq, "entry": entry.seq})).into_response()
        }
        Ok(Ok(Stored::Refused(Refusal::NoSuchMessage))) => {
            error(StatusCode::NOT_FOUND, "no such message (or it was deleted)")
        }
        Ok(Ok(_)) => error(StatusCode::CONFLICT, "not deleted"),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store could not be written: try again",
        ),
    }
}
