//! Server settings: command-line flags, each with an environment fallback, and safe defaults.
//!
//! Where to listen and where the compiled site lives are Leptos' own settings (`LEPTOS_SITE_ADDR`,
//! `LEPTOS_SITE_ROOT`, … or `[package.metadata.leptos]` in Cargo.toml); this covers the rest.
//! The limits' defaults follow Centrifugo's: 64 KiB per message, 1 MiB queued per client.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Most bytes of message text one replay carries by default (see `replay::ReplayLimits::max_bytes`).
pub const REPLAY_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, Parser)]
#[command(name = "groupchat", version, about = "A real-time group chat server")]
pub struct Config {
    /// Frames a connection may have waiting to be sent before it counts as too slow and is disconnected
    /// (close code 1013).
    #[arg(long, env = "CHAT_QUEUE_FRAMES", default_value_t = 1024)]
    pub queue_frames: usize,

    /// Bytes a connection may have waiting to be sent before it counts as too slow (close code 1013).
    /// Bounds the memory one stalled client can pin.
    #[arg(long, env = "CHAT_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub queue_bytes: usize,

    /// Kernel send buffer of each chat socket, in bytes. Linux would otherwise let it grow to 4 MiB per
    /// socket for a client that stops reading; this bounds that memory, and with the queue bounds it
    /// decides how soon a stalled client counts as too slow. 0 leaves the system's autotuning.
    #[arg(long, env = "CHAT_SEND_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub send_buffer_bytes: usize,

    /// Largest WebSocket message a client may send, in bytes; a larger one closes the connection with
    /// code 1009.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = crate::protocol::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Frames per second a connection may send, on average (token bucket). Excess frames are refused
    /// with a `rate_limited` error.
    #[arg(long, env = "CHAT_MSG_RATE", default_value_t = 10.0)]
    pub msg_rate: f64,

    /// Frames a connection may send in a burst above the average rate. Also the number of refused
    /// frames (less one forgiven per second) after which a flooding connection is closed with 1008.
    #[arg(long, env = "CHAT_MSG_BURST", default_value_t = 20.0)]
    pub msg_burst: f64,

    /// Most WebSocket connections at once; more are refused with HTTP 503.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Rooms up to this many people announce every join and leave and list everyone in the welcome;
    /// larger rooms don't (each arrival would cost a message to everyone: quadratic work), and their
    /// welcome lists this many names and the exact count.
    #[arg(long, env = "CHAT_PRESENCE_LIMIT", default_value_t = 1000)]
    pub presence_limit: usize,

    /// Longest name, in characters.
    #[arg(long, env = "CHAT_MAX_NAME_CHARS", default_value_t = crate::protocol::MAX_NAME_CHARS)]
    pub max_name_chars: usize,

    /// Seconds of silence from a client after which the server pings it. Proxies and NATs commonly drop
    /// connections idle for 60 s, so this stays well under that.
    #[arg(long, env = "CHAT_PING_INTERVAL", default_value = "25", value_parser = seconds)]
    pub ping_interval: Duration,

    /// Seconds a pinged client has to answer before it is considered dead and dropped.
    #[arg(long, env = "CHAT_PING_TIMEOUT", default_value = "20", value_parser = seconds)]
    pub ping_timeout: Duration,

    /// Extra origins allowed to open the WebSocket, besides the server's own host names (below;
    /// comma-separated, e.g. `https://chat.example.com`). Any other browser origin gets HTTP 403.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Host names this server answers to, besides the address it is bound to (and `localhost` when
    /// that is a loopback address, or every address): comma-separated, `name` for any port or
    /// `name:port`. Requests for any other `Host` get HTTP 421 (DNS rebinding). See `hosts.rs`.
    #[arg(long, env = "CHAT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Seconds to wait on shutdown for sockets to take their close frame.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE", default_value = "5", value_parser = seconds)]
    pub shutdown_grace: Duration,

    /// Where the history (`chat.db`, SQLite) and the session signing key live; created on first start.
    /// Unused with a PostgreSQL `--database-url`, which keeps both.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Where the history lives, if not in `<data-dir>/chat.db`: `sqlite://PATH`, or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (or `postgresql://…`, with libpq's parameters such
    /// as `?sslmode=require`). PostgreSQL also keeps the session signing key, so several nodes can
    /// share one database; a single node on PostgreSQL is fine too.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Newest messages kept per room; older ones are deleted (every minute). 0 keeps all.
    #[arg(long, env = "CHAT_RETAIN_MESSAGES", default_value_t = 100_000)]
    pub retain_messages: u64,

    /// Days a message is kept (fractions allowed); 0 keeps messages forever.
    #[arg(long, env = "CHAT_RETAIN_DAYS", default_value = "0", value_parser = days)]
    pub retain_days: Duration,

    /// Messages a client gets when it joins a room afresh; older ones page in from `/api/history`.
    #[arg(long, env = "CHAT_HISTORY_ON_JOIN", default_value_t = 50)]
    pub history_on_join: usize,

    /// Most missed messages replayed to a client rejoining with `after`; one further behind is told
    /// `recovered: false` and starts the room afresh.
    #[arg(long, env = "CHAT_REPLAY_LIMIT", default_value_t = 1000)]
    pub replay_limit: u64,

    /// Most bytes of message text one join's replay carries: a catch-up larger than this starts the room
    /// afresh, and a fresh start sends only as many of the latest messages as fit.
    #[arg(long, env = "CHAT_REPLAY_BYTES", default_value_t = REPLAY_BYTES)]
    pub replay_bytes: usize,

    /// Rooms one connection may follow at once.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_CONNECTION", default_value_t = 50)]
    pub max_rooms_per_connection: usize,

    /// Seconds between pushes of the rooms' online counts to every page (only when some count changed;
    /// at least 0.1).
    #[arg(long, env = "CHAT_ROOM_COUNTS_EVERY", default_value = "2", value_parser = seconds)]
    pub room_counts_every: Duration,

    /// Seconds a typing notice lasts unless renewed (pages renew it every few seconds while typing).
    #[arg(long, env = "CHAT_TYPING_TTL", default_value = "6", value_parser = seconds)]
    pub typing_ttl: Duration,

    /// Days a session token (the `chat_session` cookie) stays valid after it was issued; every
    /// connection gets a fresh one, so only a person away this long gets a new identity.
    #[arg(long, env = "CHAT_SESSION_DAYS", default_value = "30", value_parser = days)]
    pub session_lifetime: Duration,

    /// Replace the session signing key at start: every session token issued so far is refused, and
    /// everyone gets a new identity. A flag for one start, so deliberately without an environment
    /// variable (one left set would rotate the key on every restart).
    #[arg(long)]
    pub rotate_session_key: bool,

    /// Messages waiting to be stored before new ones are refused as "busy".
    #[arg(long, env = "CHAT_STORE_QUEUE", default_value_t = 10_000)]
    pub store_queue: usize,

    /// Seconds an HTTP connection may take to send a request's headers (and may sit idle between
    /// requests) before it is closed: a half-sent request (slowloris) holds a socket no longer.
    #[arg(long, env = "CHAT_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_timeout: Duration,

    /// Accepted sockets that are not (yet) chat sockets: plain HTTP requests and handshakes under way.
    /// Past it, new sockets are closed at once, so every accepted socket counts against
    /// `--max-connections` or this.
    #[arg(long, env = "CHAT_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,

    /// Of those, the most one peer address may hold; past it, its new sockets are closed at once. Behind
    /// a reverse proxy every socket comes from the proxy's address: raise it to `--max-http-connections`.
    #[arg(long, env = "CHAT_MAX_HTTP_PER_IP", default_value_t = 64)]
    pub max_http_per_ip: usize,

    /// Cluster mode: the Redis that carries live events, presence and name leases between nodes
    /// (`redis://host:port`). Needs a shared database (PostgreSQL) for the history. Unset: one node.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// This node's name in a cluster, in logs, metrics and presence leases. Default: host name and
    /// process id.
    #[arg(long, env = "CHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Rooms one person may create (join while they have no history and no one in them) per minute.
    #[arg(long, env = "CHAT_ROOM_CREATE_RATE", default_value_t = 5.0)]
    pub room_create_rate: f64,
}

impl Config {
    /// This node's name in a cluster: `--node-id`, else the host name and process id.
    pub fn node_name(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "node".into());
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        // Defaults only: a library caller's environment must not leak into it.
        Config {
            queue_frames: 1024,
            queue_bytes: 1024 * 1024,
            send_buffer_bytes: 256 * 1024,
            max_message_bytes: crate::protocol::DEFAULT_MAX_MESSAGE_BYTES,
            msg_rate: 10.0,
            msg_burst: 20.0,
            max_connections: 10_000,
            presence_limit: 1000,
            max_name_chars: crate::protocol::MAX_NAME_CHARS,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            retain_messages: 100_000,
            retain_days: Duration::ZERO,
            history_on_join: 50,
            replay_limit: 1000,
            max_rooms_per_connection: 50,
            typing_ttl: Duration::from_secs(6),
            room_counts_every: Duration::from_secs(2),
            store_queue: 10_000,
            replay_bytes: REPLAY_BYTES,
            header_timeout: Duration::from_secs(10),
            max_http_connections: 1024,
            max_http_per_ip: 64,
            room_create_rate: 5.0,
            redis_url: None,
            node_id: None,
            session_lifetime: super::session::DEFAULT_LIFETIME,
            rotate_session_key: false,
        }
    }
}

/// Parses a number of seconds, fractions allowed (`0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a number of days, fractions allowed.
fn days(text: &str) -> Result<Duration, String> {
    let days: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of days"))?;
    Duration::try_from_secs_f64(days * 86_400.0).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let parsed = Config::parse_from(["groupchat"]);
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}
