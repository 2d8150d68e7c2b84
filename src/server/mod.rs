//! The server (feature `ssr`): the axum router that renders the Leptos pages and hosts the `/ws` endpoint.
//!
//! The path of one message, top to bottom:
//! [`upgrade`] (admission, [`session`]) and [`websocket`] (handshake, framing) → [`connection`] (its
//! task reads: socket → [`crate::protocol`]) → [`history`] (the writer stores it in the [`store`], then)
//! → [`manager`] (acknowledges it, encodes it once into its room's [`fanout`] log) → [`connection`] (each
//! member's task takes from the log, and its [`outbox`], and writes).

// No panic may be reachable from client input: a panicking connection task loses its socket (its
// registration is still dropped, see `manager::Registration`). Where one of these is provably
// unreachable, an `allow` says why.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

// Private modules: the server's public API is this file's (`AppState`, `app`, `run`, `Config`, and the
// `Chat` queries tests and tools use). Grouped by layer, bottom up: each module imports only from its
// own layer's lower modules or from layers above it in this list, so there is no import cycle.

// Wire and plain values: frames, close codes, settings, time, limits, what responses are compressed.
mod clock;
mod compression;
mod config;
mod error;
mod frame;
mod metrics;
mod names;
mod rate_limit;
mod replay;
mod websocket;

// Queues and caches: a room's fan-out log, a connection's outbox, a room's newest messages.
mod fanout;
mod outbox;
mod recent;

// Storage and identity: history, sessions, which hosts and origins are ours.
pub(crate) mod hosts;
pub(crate) mod session;
pub(crate) mod store;

// The connection manager: its registry of connections and names, its rooms, the join protocol, the
// other nodes' presence, and the filling of gaps in a room's sequence.
mod bans;
mod gaps;
mod join;
mod manager;
mod peers;
mod presence;
mod registry;
mod room_counts;
mod rooms;

// Cluster mode: the Redis bus, presence and name leases.
mod bus;

// Message flow: the history writer, which sockets are served, one connection's task, the `/ws`
// admission; and the original chat's page for `/ws/{client_id}`.
mod admin;
mod classic;
mod connection;
mod history;
mod http_slots;
mod markdown;
mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use leptos::prelude::LeptosOptions;
use leptos_axum::{AxumRouteListing, LeptosRoutes};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;

use crate::app::shell;
pub use config::Config;
use manager::ConnectionManager;
pub use session::{Session, Sessions};
pub use store::{NewMessage, PruneReport, Pruned, Retention, Store};

/// The chat itself, shared by every connection (one `Arc` each) and every request.
pub struct Chat {
    pub(crate) config: Config,
    pub(crate) manager: Arc<ConnectionManager>,
    pub(crate) store: store::Store,
    writer: history::HistoryWriter,
    pub(crate) sessions: session::Sessions,
    /// The other nodes, in cluster mode.
    pub(crate) cluster: Option<peers::Cluster>,
}

impl Chat {
    /// The people in `room` now, in the order they came.
    pub fn online(&self, room: &str) -> Vec<String> {
        self.manager.online(room)
    }

    /// How many chat sockets are connected now.
    pub fn connection_count(&self) -> usize {
        self.manager.connection_count()
    }

    /// The history store (tools and tests write to it directly; the server only through its writer).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Issues and checks session tokens.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Deletes what `retention` no longer keeps, now (the server does it every minute); reports what
    /// went, room by room.
    pub async fn apply_retention(&self, retention: Retention) -> Result<PruneReport, sqlx::Error> {
        history::apply_retention(&self.store, &self.manager, retention).await
    }
}

/// Everything a request handler may need; cloned per request, so every field is cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub chat: Arc<Chat>,
    /// One permit per open chat socket: `--max-connections` of them.
    pub connection_permits: Arc<Semaphore>,
    /// Every chat socket's task holds a token of this tracker, so shutdown can wait for them: axum's own
    /// graceful shutdown does not track upgraded connections.
    pub sockets: TaskTracker,
}

impl AppState {
    /// Opens the store (`--database-url`, else SQLite in `--data-dir`) and the session key (creating
    /// them on first start, replacing the key with `--rotate-session-key`) and starts the history
    /// writer.
    pub async fn new(leptos_options: LeptosOptions, config: Config) -> anyhow::Result<Self> {
        if config.redis_url.is_some() && !config.database_url.as_deref().is_some_and(is_postgres) {
            anyhow::bail!(
                "--redis-url needs a shared database: give --database-url postgres://… as well \
                 (with SQLite every node would keep a history of its own)"
            );
        }
        let store = store::Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
        let sessions = session::Sessions::open(
            &store,
            &config.data_dir,
            config.session_lifetime,
            config.rotate_session_key,
        )
        .await?;
        if config.rotate_session_key {
            tracing::warn!("session key rotated: every session token issued so far is refused");
        }
        let manager = Arc::new(ConnectionManager::new(&config, sessions.clone()));
        let retention = store::Retention {
            max_messages: config.retain_messages,
            max_age: config.retain_days,
        };
        let gaps = gaps::start(store.clone(), manager.clone());
        let cluster = match &config.redis_url {
            Some(url) => {
                let node = config.node_name();
                metrics::label_node(&node);
                // The recorder now, not when serving starts: the bus's task may connect, and set its
                // gauge, before that, and a gauge set with no recorder is lost.
                metrics::handle();
                tracing::info!(node, "cluster mode: Redis at {url}");
                Some(bus::start(
                    url,
                    node,
                    manager.clone(),
                    store.clone(),
                    gaps.clone(),
                )?)
            }
            None => None,
        };
        manager.attach(gaps, cluster.clone());
        // The writer runs for as long as the `HistoryWriter` in `Chat` lives: the whole process.
        let (writer, _thread) = history::HistoryWriter::start(
            store.clone(),
            manager.clone(),
            retention,
            config.store_queue,
        )?;
        Ok(AppState {
            leptos_options,
            connection_permits: Arc::new(Semaphore::new(config.max_connections)),
            chat: Arc::new(Chat {
                config,
                manager,
                store,
                writer,
                sessions,
                cluster,
            }),
            sockets: TaskTracker::new(),
        })
    }
}

/// The whole HTTP surface: Leptos pages, static files from the site root, the chat sockets, the original
/// chat's page (`/classic`), health and metrics; each request only for a host name `hosts` allows.
pub fn app(state: AppState, hosts: hosts::HostPolicy) -> Router {
    // The page's two paths (see `app/nav.rs`), each rendered whole, its room's history awaited, before
    // anything is sent; every other path is the fallback's: a file of the site, or a 404 page.
    let routes = ["/", "/r/{room}"]
        .into_iter()
        .map(|path| {
            AxumRouteListing::new(
                path.to_owned(),
                leptos_router::SsrMode::Async,
                [leptos_router::Method::Get],
                [],
            )
        })
        .collect();
    let options = state.leptos_options.clone();
    Router::new()
        .route("/ws", get(upgrade::chat_socket))
        .route("/ws/{client_id}", get(upgrade::legacy_chat_socket))
        .route("/classic", get(classic::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus_metrics))
        .merge(admin::routes())
        .route("/r/{room}/", get(without_trailing_slash))
        .leptos_routes(&state, routes, move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        // Pages and JSON compressed on the fly; the site's files precompressed at build time, served
        // as they are (see `compression.rs`). Never the chat sockets' `101`.
        .layer(compression::layer())
        // Outside every route and the fallback: no request for a foreign host name gets anything.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            hosts::check_host,
        ))
        // A deadline for every response (a WebSocket's is its `101`, the socket then lives on): a
        // page whose render failed must not hold its visitor, or the connection, forever.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            RESPONSE_DEADLINE,
        ))
        .with_state(state)
}

/// `/r/{room}/` is that room's page at its one address, without the slash (the query kept): not a
/// second copy of the page, nor the 404 the fallback would send with it.
async fn without_trailing_slash(uri: axum::http::Uri) -> axum::response::Redirect {
    // The route is `/r/{room}/`: the path starts with `/r/`, so the target stays on this site.
    let path = uri.path().trim_end_matches('/');
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    axum::response::Redirect::permanent(&format!("{path}{query}"))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Longest a response may take to start.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` until `shutdown` completes. Then: stop accepting, close every chat socket
/// with 1001 (after what was queued for it), let HTTP requests in flight finish, and wait up to
/// `--shutdown-grace` for all of it.
///
/// The accept loop is hyper's HTTP/1 server rather than `axum::serve`, for one reason: an upgraded
/// connection must come out as the plain `TcpStream` (see `websocket.rs`), and `axum::serve` wraps it in
/// a private type. Browsers speak HTTP/1.1 to a plain-text server anyway.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Metrics are recorded from the first connection on, so the recorder must exist before it.
    metrics::handle();
    let manager = state.chat.manager.clone();
    let cluster = state.chat.cluster.clone();
    let sockets = state.sockets.clone();
    let grace = state.chat.config.shutdown_grace;
    let sweep_every = ping_sweep_period(&state.chat.config);
    let state_store = state.chat.store.clone();
    let counts_every = state
        .chat
        .config
        .room_counts_every
        .max(Duration::from_millis(100));
    let hosts = hosts::HostPolicy::new(listener.local_addr()?, &state.chat.config);
    let slots = http_slots::HttpSlots::new(&state.chat.config);
    let header_timeout = state.chat.config.header_timeout;
    let service = TowerToHyperService::new(app(state, hosts));
    // Plain HTTP connections, so shutdown can ask each to finish its request in flight and close.
    let http = TaskTracker::new();
    let stopping = CancellationToken::new();

    // One timer for every connection's heartbeat, rather than one per connection: each sweep nudges
    // every connection to ping a client quiet for `--ping-interval`, or drop one whose ping has gone
    // unanswered for `--ping-timeout`. Both are met to within half the shorter of the two.
    let sweep = tokio::spawn({
        let manager = manager.clone();
        async move {
            let mut ticks = tokio::time::interval(sweep_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                manager.nudge_all();
            }
        }
    });
    // Typing notices run out on the server (a page that closes mid-word sends no "stopped"): one timer
    // for all rooms, at a second's precision.
    let typing_sweep = tokio::spawn({
        let manager = manager.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                manager.expire_typing(tokio::time::Instant::now().into_std());
            }
        }
    });

    // Room lists follow the online counts without polling: one timer pushes what changed to every
    // page (see `room_counts.rs` for why a timer and not every join and leave).
    let counts_push = tokio::spawn({
        let manager = manager.clone();
        async move {
            let mut ticks = tokio::time::interval(counts_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                manager.push_room_counts();
            }
        }
    });

    // The operator's bans, read from the store at start and then every so often: another node's
    // change is usually heard over the bus at once, but a lost bus message must not leave a banned
    // person in.
    let bans_reload = tokio::spawn({
        let (store, manager) = (state_store.clone(), manager.clone());
        async move {
            let mut ticks = tokio::time::interval(bans::RELOAD_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                admin::reload_bans(store.clone(), manager.clone()).await;
            }
        }
    });

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Closed at once when its address, or the server, has no slot left (see `http_slots.rs`).
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                ::metrics::counter!(metrics::REJECTED, "reason" => full.label()).increment(1);
                drop(stream);
                continue;
            }
        };
        // Chat frames are small and latency-sensitive: without TCP_NODELAY, Nagle's algorithm meeting
        // the client's delayed ACK adds up to ~40 ms to a lone message.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        // Without a timer hyper never fires the header timeout. It covers a request's head and the idle
        // wait before one on a kept-alive connection; a slow body is cut by the response deadline.
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let stopping = stopping.clone();
        http.spawn(async move {
            // Held until the socket closes or upgrades: the upgraded socket then counts against
            // `--max-connections` instead.
            let _slot = slot;
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }

    drop(listener);
    sweep.abort();
    typing_sweep.abort();
    counts_push.abort();
    bans_reload.abort();
    manager.shut_down();
    if let Some(cluster) = &cluster {
        cluster.depart().await;
    }
    stopping.cancel();
    http.close();
    sockets.close();
    let drained = tokio::time::timeout(grace, async {
        tokio::join!(http.wait(), sockets.wait());
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sockets = sockets.len(),
            "connections still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// How often the heartbeat sweep runs: half the shorter of the ping interval and timeout.
fn ping_sweep_period(config: &Config) -> Duration {
    (config.ping_interval.min(config.ping_timeout) / 2).max(Duration::from_millis(10))
}

/// `GET /healthz`: the process is up and serving, and its store answers (503 if it does not, within a
/// second). In a cluster, "degraded" (still 200) while Redis is away: this node serves its own people,
/// and other nodes' messages arrive through the store.
async fn healthz(State(chat): State<Arc<Chat>>) -> impl IntoResponse {
    let store_ok = tokio::time::timeout(Duration::from_secs(1), chat.store.ping())
        .await
        .is_ok_and(|answered| answered.is_ok());
    let status = if store_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let bus_ok = chat
        .cluster
        .as_ref()
        .is_none_or(peers::Cluster::is_connected);
    let summary = match (store_ok, bus_ok) {
        (false, _) => "store unavailable",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    (
        status,
        Json(serde_json::json!({
            "status": summary,
            "node": chat.cluster.as_ref().map(peers::Cluster::node),
            "bus": chat.cluster.as_ref().map(|c| if c.is_connected() { "connected" } else { "unreachable" }),
            "connections": chat.manager.connection_count(),
            "tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        })),
    )
}

/// `GET /metrics`, in the Prometheus text format.
async fn prometheus_metrics(State(chat): State<Arc<Chat>>) -> impl IntoResponse {
    ::metrics::gauge!(metrics::QUEUE_DEPTH).set(chat.manager.queue_depth() as f64);
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics::handle().render(),
    )
}
