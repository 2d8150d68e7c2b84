//! # groupchat
//!
//! A real-time group chat: one Leptos app compiled twice, as an axum server (feature `ssr`) that renders
//! the page and hosts the `/ws` WebSocket, and as a WASM client (feature `hydrate`) that takes the page
//! over in the browser and talks to the server over that socket.
//!
//! ## Layout
//! - [`protocol`]: every frame on the wire, shared by both sides. Start here.
//! - `server` (`ssr`): the router and `run` entry (`server/mod.rs`, which lists its modules by layer),
//!   which sockets are served (`http_slots.rs`), the `/ws` admission checks (`upgrade.rs`), the host
//!   names it answers to (`hosts.rs`), session tokens and the cookie (`session.rs`), the WebSocket wire
//!   format (`websocket.rs`, `websocket/decode.rs`), one connection's task (`connection.rs`), the
//!   history writer and join replays (`history.rs`) over the
//!   history store (`store/`: SQLite, or PostgreSQL for several nodes), the connection
//!   manager (`manager.rs`) over who is connected (`registry.rs`), the rooms with presence and typing
//!   (`rooms.rs`) and the join protocol (`join.rs`), replay limits (`replay.rs`), each room's
//!   in-memory newest messages (`recent.rs`), the per-room log broadcasts fan out through
//!   (`fanout.rs`), each connection's cursors and personal frames (`outbox.rs`), encoded frames and
//!   close codes (`frame.rs`), flood control (`rate_limit.rs`), name rules (`names.rs`), the error
//!   type (`error.rs`), settings (`config.rs`), metric names (`metrics.rs`).
//! - [`api`]: `/api/history`, `/api/rooms` and `/api/session`, as server functions.
//! - [`app`]: the page, rendered on the server and hydrated in the browser.
//! - [`chat_state`]: the page's reactive state, and how each server event changes it.
//! - [`html`]: escaping text into HTML, for both sides.
//! - `socket` (`hydrate`): the browser's WebSocket (gloo-net), feeding events into the chat state,
//!   watching the link and reconnecting.
//!
//! The path of one message: browser input → `socket` → `/ws` (`upgrade`, `websocket`) → `connection`
//! (read) → `protocol` → `history` (stored by the writer in `store`) → `manager` (ack to the sender;
//! `rooms` encodes once and appends to the room's `fanout` log) → `connection` (each member's task takes it and
//! writes a batch) → each browser's `socket` → `chat_state` (shown once, by sequence number) → the
//! message list in `app` (`app/messages.rs`).

// The room's view type (src/app/room.rs: messages, composer, who is online) is deeper than rustc's
// default limit of 128 when the WASM is built with the `wasm-release` profile.
#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod chat_state;
pub mod html;
pub mod protocol;

#[cfg(feature = "ssr")]
pub mod server;

#[cfg(feature = "hydrate")]
pub mod socket;

/// The WASM entry point: takes over the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // `<html data-hydrated>`: the page is the app's from here on. What hydration left to effects
    // (e.g. times in the reader's zone) runs before the next frame; the browser tests check that.
    if let Some(html) = leptos::prelude::document().document_element() {
        let _ = html.set_attribute("data-hydrated", "");
    }
}
