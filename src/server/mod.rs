//! The server (feature `ssr`): the axum router that renders the Leptos pages and hosts the `/ws` endpoint.
//!
//! The path of one message, top to bottom:
//! `routes` (here: HTTP upgrade) → [`connection`] (reader task: socket → [`crate::protocol`]) →
//! [`manager`] (names, order, fan-out into each connection's queue) → [`connection`] (writer task:
//! queue → socket).

pub mod config;
pub mod connection;
pub mod error;
pub mod manager;
pub mod names;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::app::{shell, App};
pub use config::Config;
pub use manager::ConnectionManager;
use manager::Kick;
use names::NameRequest;

/// Everything a request handler may need; cloned per request, so every field is cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub manager: Arc<ConnectionManager>,
    pub config: Arc<Config>,
}

impl AppState {
    pub fn new(leptos_options: LeptosOptions, config: Config) -> Self {
        AppState {
            leptos_options,
            manager: Arc::new(ConnectionManager::new(config.queue_frames)),
            config: Arc::new(config),
        }
    }
}

/// The whole HTTP surface: Leptos pages, static files from the site root, and the chat sockets.
pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    Router::new()
        .route("/ws", get(ws_assigned_or_chosen))
        .route("/ws/{client_id}", get(ws_legacy))
        .leptos_routes(&state, routes, move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` completes, then closes every chat socket with 1001.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let manager = state.manager.clone();
    // axum's graceful shutdown does not track upgraded connections, so the sockets get their own signal.
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    manager.kick_all(Kick::SHUTDOWN);
    Ok(())
}

#[derive(Deserialize)]
struct WsQuery {
    name: Option<String>,
}

/// `/ws` and `/ws?name=alice`.
async fn ws_assigned_or_chosen(
    upgrade: WebSocketUpgrade,
    Query(query): Query<WsQuery>,
    State(state): State<AppState>,
) -> Response {
    let request = match query.name {
        Some(name) => NameRequest::Chosen(name),
        None => NameRequest::Assign,
    };
    accept(upgrade, state, request)
}

/// `/ws/{client_id}`, the reference chat's route: the name is `Client #{client_id}`.
async fn ws_legacy(
    upgrade: WebSocketUpgrade,
    Path(client_id): Path<String>,
    State(state): State<AppState>,
) -> Response {
    accept(
        upgrade,
        state,
        NameRequest::Chosen(format!("Client #{client_id}")),
    )
}

fn accept(upgrade: WebSocketUpgrade, state: AppState, request: NameRequest) -> Response {
    upgrade
        .max_message_size(state.config.max_message_bytes)
        .max_frame_size(state.config.max_message_bytes)
        .on_upgrade(move |socket| connection::serve(socket, state.manager, request))
}
