//! The HTTP API, as Leptos server functions: called directly while the server renders a page, and over
//! HTTP (`GET /api/...`, JSON) by the browser and anyone else.
//!
//! - `GET /api/history?room=general&before=120&limit=50`: a page of a room's history, oldest first:
//!   the `limit` (default 50, at most 200) messages before sequence number `before` (default: the newest),
//!   and no more than [`MAX_PAGE_BYTES`] of them: a page of large messages is shorter (never empty while
//!   older messages exist), and a client pages on from the oldest `seq` it got.
//! - `GET /api/rooms?limit=100&offset=0`: rooms with people in them (most people first), then rooms with
//!   stored history (most messages first), a page at a time (at most [`MAX_ROOMS_PAGE`]); a page shorter
//!   than `limit` is the last.
//! - `GET /api/search?q=hello%20world&room=general&before=…&limit=20`: messages whose text has every
//!   word of `q` (all rooms, or only `room`), newest first, a page at a time (at most
//!   [`MAX_SEARCH_PAGE`] hits and [`MAX_PAGE_BYTES`]); each with the byte ranges of its text that
//!   matched. Page on with `before` = the page's `next`. A query that is empty, has no word or is
//!   longer than [`MAX_SEARCH_QUERY_BYTES`], a bad room or a bad cursor: HTTP 400.
//! - `POST /api/session` (form field `token`): sets the `chat_session` cookie to a welcome's token;
//!   the page calls it after every welcome (see `server/session.rs`).

use leptos::prelude::*;
use leptos::server_fn::codec::{GetUrl, Post};
use leptos::server_fn::{Bytes, ContentType, Decodes, Encodes, Format, FormatType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::protocol::ChatMessage;

/// The answers of the server functions below: JSON, exactly as server_fn's own `Json` writes it, but
/// read by the page from the body as text. The page reads all its other JSON (the socket's events,
/// the resources in the page) from text too, so its WASM holds one copy of serde_json's reader of
/// each answer's types instead of a second one for bytes (1.7 KB with brotli).
pub type JsonText = Post<JsonTextEncoding>;

/// How [`JsonText`] writes and reads an answer.
pub struct JsonTextEncoding;

impl ContentType for JsonTextEncoding {
    const CONTENT_TYPE: &'static str = "application/json";
}

impl FormatType for JsonTextEncoding {
    const FORMAT_TYPE: Format = Format::Text;
}

impl<T: Serialize> Encodes<T> for JsonTextEncoding {
    type Error = serde_json::Error;

    fn encode(output: &T) -> Result<Bytes, Self::Error> {
        serde_json::to_vec(output).map(Bytes::from)
    }
}

impl<T: DeserializeOwned> Decodes<T> for JsonTextEncoding {
    type Error = serde_json::Error;

    fn decode(bytes: Bytes) -> Result<T, Self::Error> {
        let text = std::str::from_utf8(&bytes).map_err(serde::de::Error::custom)?;
        serde_json::from_str(text)
    }
}

/// Most messages one history page may hold.
pub const MAX_PAGE: usize = 200;

/// Messages in a history page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 50;

/// Most bytes of messages one history page may hold: 200 messages at the 64 KiB size limit would be
/// 12.5 MiB in one response. Counted as stored (text, sender, client id, and [`PAGE_BYTES_PER_MESSAGE`]
/// for the rest of each message's JSON), before JSON escaping.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// What one message's JSON costs besides its text, sender and client id (field names, numbers).
pub const PAGE_BYTES_PER_MESSAGE: usize = 100;

/// Rooms in a room list page unless asked otherwise.
pub const DEFAULT_ROOMS_PAGE: usize = 100;

/// Most rooms one room list page may hold.
pub const MAX_ROOMS_PAGE: usize = 500;

/// Longest search query, in bytes.
pub const MAX_SEARCH_QUERY_BYTES: usize = 200;

/// Hits in a search page unless asked otherwise.
pub const DEFAULT_SEARCH_PAGE: usize = 20;

/// Most hits one search page may hold.
pub const MAX_SEARCH_PAGE: usize = 50;

/// Most match ranges one hit carries (the first ones): a message of one word repeated could otherwise
/// bring thousands, each costing more JSON than the word.
pub const MAX_MATCHES_PER_HIT: usize = 32;

/// What one hit's JSON costs besides its text, sender and room: field names, numbers, and its match
/// ranges (at most [`MAX_MATCHES_PER_HIT`], up to 14 bytes each: `[65535,65536],`).
pub const SEARCH_BYTES_PER_HIT: usize = 100 + MAX_MATCHES_PER_HIT * 14;

/// One message a search found, as it is now (edited text; deleted messages are never found).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub text: String,
    /// Server time the message was stored, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// Where `text` matched: half-open byte ranges `[start, end)` of its UTF-8, in order, not
    /// overlapping, on character boundaries; at most [`MAX_MATCHES_PER_HIT`] (the first ones). Empty
    /// if the store could not say (the hit still matched).
    pub matches: Vec<(usize, usize)>,
}

impl SearchHit {
    /// Where the page after this hit starts.
    pub fn cursor(&self) -> SearchCursor {
        SearchCursor {
            ts: self.ts,
            room: self.room.clone(),
            seq: self.seq,
        }
    }
}

/// One page of search hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    /// Newest first (by `ts`, then room and `seq`, both descending).
    pub hits: Vec<SearchHit>,
    /// `before` for the next page; `None`: this was the last.
    pub next: Option<String>,
}

/// A place in search results (newest first): hits strictly after it are older, by (`ts`, `room`,
/// `seq`) descending. Written `{ts}.{seq}.{room}`, e.g. `1795500000000.42.general`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchCursor {
    pub ts: u64,
    pub room: String,
    pub seq: u64,
}

impl std::fmt::Display for SearchCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.ts, self.seq, self.room)
    }
}

impl std::str::FromStr for SearchCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<SearchCursor, String> {
        let bad = || format!("not a search cursor: {s:?} (use a page's `next`)");
        let mut parts = s.splitn(3, '.');
        let (Some(ts), Some(seq), Some(room)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        crate::protocol::validate_room(room).map_err(|_| bad())?;
        Ok(SearchCursor {
            ts: ts.parse().map_err(|_| bad())?,
            room: room.to_owned(),
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

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
#[server(endpoint = "history", input = GetUrl, output = JsonText)]
pub async fn room_history(
    room: String,
    before: Option<u64>,
    limit: Option<usize>,
) -> Result<HistoryPage, ServerFnError> {
    crate::protocol::validate_room(&room).map_err(ServerFnError::new)?;
    let chat = chat()?;
    let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    // The page's own fields (room, oldest_seq) come off the budget too.
    let messages = chat
        .store
        .before_within(
            &room,
            before,
            limit,
            MAX_PAGE_BYTES - 256,
            PAGE_BYTES_PER_MESSAGE,
        )
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

/// Messages whose text has every word of `q`, in `room` or in all rooms, newest first: the page before
/// `before` (a previous page's `next`; the newest if not given). Refusals are HTTP 400 with a reason.
#[server(endpoint = "search", input = GetUrl, output = JsonText)]
pub async fn search(
    /// Missing: as empty (refused, with the reason, rather than failing to read the request).
    #[server(default)]
    q: String,
    room: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
) -> Result<SearchPage, ServerFnError> {
    use crate::server::store::SearchQuery;

    let refuse = |why: String| {
        expect_context::<leptos_axum::ResponseOptions>()
            .set_status(axum::http::StatusCode::BAD_REQUEST);
        ServerFnError::new(why)
    };
    let room = room.filter(|room| !room.is_empty());
    if let Some(room) = &room {
        crate::protocol::validate_room(room).map_err(refuse)?;
    }
    let before: Option<SearchCursor> = match before.filter(|before| !before.is_empty()) {
        Some(before) => Some(before.parse().map_err(refuse)?),
        None => None,
    };
    let query = SearchQuery::parse(&q).map_err(|bad| refuse(bad.to_string()))?;
    let limit = limit
        .unwrap_or(DEFAULT_SEARCH_PAGE)
        .clamp(1, MAX_SEARCH_PAGE);
    let chat = chat()?;
    // The page's own fields (`next`) come off the budget too.
    let found = chat
        .store
        .search(
            &query,
            room.as_deref(),
            before.as_ref(),
            limit,
            MAX_PAGE_BYTES - 256,
            SEARCH_BYTES_PER_HIT,
        )
        .await
        .map_err(store_error)?;
    let next = match (found.more, found.hits.last()) {
        (true, Some(last)) => Some(last.cursor().to_string()),
        _ => None,
    };
    Ok(SearchPage {
        hits: found.hits,
        next,
    })
}

/// The rooms worth listing, a page at a time: those with people in them first (most people first),
/// then those with stored history (most messages first).
///
/// Online counts live in the manager's memory, history in the store: the online rooms are ordered here
/// and take the first places, and the store orders and pages the rest, leaving the online ones out. So
/// however many rooms exist (spam included), the busy ones come first.
#[server(endpoint = "rooms", input = GetUrl, output = JsonText)]
pub async fn list_rooms(
    limit: Option<usize>,
    offset: Option<usize>,
) -> Result<Vec<RoomSummary>, ServerFnError> {
    use std::collections::HashMap;
    let chat = chat()?;
    let limit = limit.unwrap_or(DEFAULT_ROOMS_PAGE).clamp(1, MAX_ROOMS_PAGE);
    let offset = offset.unwrap_or(0);
    let mut online = chat.manager.room_counts();
    online.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let on_page: Vec<(String, usize)> = online.iter().skip(offset).take(limit).cloned().collect();
    let names: Vec<String> = on_page.iter().map(|(name, _)| name.clone()).collect();
    let sizes: HashMap<String, u64> = chat
        .store
        .room_sizes(&names)
        .await
        .map_err(store_error)?
        .into_iter()
        .collect();
    let mut rooms: Vec<RoomSummary> = on_page
        .into_iter()
        .map(|(name, online)| RoomSummary {
            messages: sizes.get(&name).copied().unwrap_or(0),
            name,
            online,
        })
        .collect();
    if rooms.len() < limit {
        let all_online: Vec<String> = online.into_iter().map(|(name, _)| name).collect();
        let stored = chat
            .store
            .rooms_by_messages(
                &all_online,
                limit - rooms.len(),
                offset.saturating_sub(all_online.len()),
            )
            .await
            .map_err(store_error)?;
        rooms.extend(stored.into_iter().map(|(name, messages)| RoomSummary {
            name,
            online: 0,
            messages,
        }));
    }
    Ok(rooms)
}

/// Keeps the welcome's session `token` in the browser: answers with the `chat_session` cookie, set by
/// the server so that it can be `HttpOnly` (see `server/session.rs` for why this way). The page calls
/// it after every welcome; the cookie is rewritten only when the browser's is another person's or
/// past half its life.
#[server(endpoint = "session", output = JsonText)]
pub async fn keep_session(token: String) -> Result<(), ServerFnError> {
    set_session_cookie(token).await
}

#[cfg(feature = "ssr")]
async fn set_session_cookie(token: String) -> Result<(), ServerFnError> {
    use axum::http::header::{COOKIE, ORIGIN, SET_COOKIE};
    use axum::http::{request::Parts, HeaderValue, StatusCode};

    use crate::server::hosts::HostPolicy;
    use crate::server::session::{now_secs, Sessions};

    let chat = chat()?;
    let response = expect_context::<leptos_axum::ResponseOptions>();
    let refuse = |status: StatusCode, why: &str| {
        response.set_status(status);
        Err(ServerFnError::new(why))
    };
    let Some(request) = use_context::<Parts>() else {
        return refuse(StatusCode::BAD_REQUEST, "not an HTTP request");
    };
    // Only this server's own pages may set its cookie (a foreign page could otherwise plant its own
    // person's token in a visitor's browser).
    if let Some(origin) = request.headers.get(ORIGIN) {
        let allowed = request
            .extensions
            .get::<std::sync::Arc<HostPolicy>>()
            .is_some_and(|hosts| hosts.allows_origin(origin.to_str().unwrap_or_default()));
        if !allowed {
            return refuse(StatusCode::FORBIDDEN, "this origin may not set the session");
        }
    }
    let now = now_secs();
    let Some(session) = chat.sessions.verify_at(&token, now) else {
        return refuse(StatusCode::BAD_REQUEST, "not a valid session token");
    };
    let held = request
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(Sessions::from_cookie_header)
        .and_then(|held| chat.sessions.verify_at(held, now));
    let lifetime = chat.sessions.lifetime();
    if held.is_some_and(|held| {
        held.person == session.person
            && held.name == session.name
            && !held.needs_renewal(lifetime, now)
    }) {
        return Ok(());
    }
    let cookie = Sessions::cookie(&token, session.expires, now, served_over_https(&request));
    let cookie = HeaderValue::from_str(&cookie).map_err(ServerFnError::new)?;
    response.append_header(SET_COOKIE, cookie);
    Ok(())
}

/// The browser reached this server over HTTPS: directly (an absolute `https:` request target), or
/// through a TLS-terminating proxy that says so (`X-Forwarded-Proto: https`, `Forwarded: proto=https`).
#[cfg(feature = "ssr")]
fn served_over_https(request: &axum::http::request::Parts) -> bool {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    // The first proxy's word counts: the one the browser talked to.
    let forwarded_proto = header("x-forwarded-proto");
    let first_proto = forwarded_proto.split(',').next().unwrap_or_default().trim();
    let forwarded = header("forwarded");
    let first_hop = forwarded.split(',').next().unwrap_or_default();
    request.uri.scheme_str() == Some("https")
        || first_proto == "https"
        || first_hop
            .split(';')
            .any(|pair| pair.trim() == "proto=https")
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
