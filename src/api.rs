//! The HTTP API, as Leptos server functions: called directly while the server renders a page, and over
//! HTTP (`GET /api/...`, JSON) by the browser and anyone else.
//!
//! - `GET /api/history?room=general&before=120&limit=50`: a page of a room's history, oldest first:
//!   the `limit` (default 50, at most 200) messages before sequence number `before` (default: the newest).
//! - `GET /api/rooms`: rooms with people in them or stored history, busiest first.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;
use serde::{Deserialize, Serialize};

use crate::protocol::ChatMessage;

/// Most messages one history page may hold.
pub const MAX_PAGE: usize = 200;

/// Messages in a history page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 50;

/// One page of a room's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub room: String,
    /// Oldest first.
    pub messages: Vec<ChatMessage>,
    /// The room's oldest stored sequence number (0: it has none): paging can stop there.
    pub oldest_seq: u64,
}

/// A room in the room list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: String,
    /// People in it now.
    pub online: usize,
    /// Messages it has ever stored (its last sequence number).
    pub messages: u64,
}

/// A page of `room`'s history: the messages before `before` (the newest if not given).
#[server(endpoint = "history", input = GetUrl)]
pub async fn room_history(
    room: String,
    before: Option<u64>,
    limit: Option<usize>,
) -> Result<HistoryPage, ServerFnError> {
    crate::protocol::validate_room(&room).map_err(ServerFnError::new)?;
    let chat = chat()?;
    let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let messages = chat
        .store
        .before(&room, before, limit)
        .await
        .map_err(store_error)?;
    let oldest_seq = chat
        .store
        .bounds(&room)
        .await
        .map_err(store_error)?
        .oldest_seq;
    Ok(HistoryPage {
        room,
        messages,
        oldest_seq,
    })
}

/// The rooms worth listing: those with people in them or stored history, busiest first.
#[server(endpoint = "rooms", input = GetUrl)]
pub async fn list_rooms() -> Result<Vec<RoomSummary>, ServerFnError> {
    use std::collections::BTreeMap;
    let chat = chat()?;
    let mut rooms: BTreeMap<String, RoomSummary> = BTreeMap::new();
    for (name, messages) in chat.store.rooms(500).await.map_err(store_error)? {
        rooms.insert(
            name.clone(),
            RoomSummary {
                name,
                online: 0,
                messages,
            },
        );
    }
    for (name, online) in chat.manager.room_counts() {
        rooms
            .entry(name.clone())
            .or_insert(RoomSummary {
                name,
                online: 0,
                messages: 0,
            })
            .online = online;
    }
    let mut rooms: Vec<RoomSummary> = rooms.into_values().collect();
    rooms.sort_by(|a, b| b.online.cmp(&a.online).then(a.name.cmp(&b.name)));
    Ok(rooms)
}

#[cfg(feature = "ssr")]
fn chat() -> Result<std::sync::Arc<crate::server::Chat>, ServerFnError> {
    use_context::<crate::server::AppState>()
        .map(|state| state.chat)
        .ok_or_else(|| ServerFnError::new("the chat service is missing from the context"))
}

#[cfg(feature = "ssr")]
fn store_error(error: sqlx::Error) -> ServerFnError {
    tracing::error!(%error, "reading history failed");
    ServerFnError::new("history is unavailable right now")
}
