//! Operational metrics, exported in the Prometheus text format at `GET /metrics`.
//!
//! Recorded with the `metrics` facade; the Prometheus recorder is installed once per process (tests start
//! several servers in one process, and they share it). Counters are bumped once per event, with the
//! number of deliveries as the increment, never once per recipient.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Open WebSocket connections (gauge).
pub const CONNECTIONS: &str = "chat_connections";
/// Connections accepted since start.
pub const CONNECTIONS_ACCEPTED: &str = "chat_connections_accepted_total";
/// Messages accepted from clients.
pub const MESSAGES_IN: &str = "chat_messages_in_total";
/// Frames queued for delivery to clients (one per recipient per event).
pub const DELIVERIES_OUT: &str = "chat_deliveries_out_total";
/// Connections dropped for falling too far behind (close 1013).
pub const SLOW_CONSUMERS: &str = "chat_slow_consumers_dropped_total";
/// Client frames or connections refused, labelled by `reason`.
pub const REJECTED: &str = "chat_rejected_total";
/// Frames waiting in outbound queues, all connections together (gauge, sampled at scrape time).
pub const QUEUE_DEPTH: &str = "chat_queue_depth_frames";
/// Connections dropped for not answering pings.
pub const PING_TIMEOUTS: &str = "chat_ping_timeouts_total";
/// Messages stored (new ones: resends of stored ones are not counted).
pub const MESSAGES_STORED: &str = "chat_messages_stored_total";
/// Store transactions (each stores a batch of messages).
pub const STORE_BATCHES: &str = "chat_store_batches_total";
/// Seconds per store transaction, the disk sync included (summary).
pub const STORE_COMMIT_SECONDS: &str = "chat_store_commit_seconds";
/// Room joins, labelled by where their history came from: `memory` or `store`.
pub const JOINS: &str = "chat_joins_total";

/// Cluster mode: whether the Redis bus is connected (gauge, 1 or 0).
pub const BUS_CONNECTED: &str = "chat_bus_connected";
/// Cluster mode: reconnections to Redis.
pub const BUS_RECONNECTS: &str = "chat_bus_reconnects_total";
/// Cluster mode: events that could not be queued for Redis (made good by a restatement).
pub const BUS_DROPPED: &str = "chat_bus_dropped_total";
/// Cluster mode: seconds from a message's storing (on another node) to its arrival here (summary).
pub const BUS_LAG_SECONDS: &str = "chat_bus_lag_seconds";
/// Store reads that filled a gap in a room's sequence (messages the bus lost or delayed).
pub const GAP_FILLS: &str = "chat_gap_fills_total";

/// This node's name in a cluster, put on every metric (see [`label_node`]).
static NODE: OnceLock<String> = OnceLock::new();

/// Labels every metric of this process with `node="…"` (cluster mode), if the recorder is not
/// installed yet; the server calls it at start, before the first metric.
pub fn label_node(node: &str) {
    let _ = NODE.set(node.to_owned());
}

/// The process's Prometheus handle, installing the recorder on first use.
#[allow(
    clippy::expect_used,
    reason = "runs once at start, before any client, and fails only if another recorder exists"
)]
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        if let Some(node) = NODE.get() {
            builder = builder.add_global_label("node", node);
        }
        let handle = builder
            .install_recorder()
            // Only fails if another global recorder was installed first, which this crate never does.
            .expect("no other metrics recorder is installed in this process");
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open WebSocket connections");
    describe_counter!(CONNECTIONS_ACCEPTED, "WebSocket connections accepted");
    describe_counter!(MESSAGES_IN, "Chat messages accepted from clients");
    describe_counter!(DELIVERIES_OUT, "Frames queued for delivery to clients");
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections dropped for falling too far behind (close 1013)"
    );
    describe_counter!(REJECTED, "Client frames or connections refused, by reason");
    describe_gauge!(QUEUE_DEPTH, "Frames waiting in outbound queues");
    describe_counter!(PING_TIMEOUTS, "Connections dropped for not answering pings");
    describe_counter!(MESSAGES_STORED, "Chat messages stored");
    describe_counter!(
        STORE_BATCHES,
        "Store transactions, each a batch of messages"
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time per store transaction, disk sync included"
    );
    describe_counter!(JOINS, "Room joins, by where their history came from");
    describe_gauge!(BUS_CONNECTED, "Whether the Redis bus is connected");
    describe_counter!(BUS_RECONNECTS, "Reconnections to Redis");
    describe_counter!(BUS_DROPPED, "Events that could not be queued for Redis");
    describe_histogram!(
        BUS_LAG_SECONDS,
        metrics::Unit::Seconds,
        "From a message's storing on another node to its arrival here"
    );
    describe_counter!(
        GAP_FILLS,
        "Store reads that filled a gap in a room's sequence"
    );
}
