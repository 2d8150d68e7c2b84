//! What the connection manager tells the rest of the node without waiting, from under its lock: the
//! other nodes of a cluster (through the bus task, `bus.rs`), and the filler of gaps in a room's
//! sequence (`gaps.rs`). Each is a bounded queue with a handle here; the tasks that drain them sit
//! above the manager and call into it, so the manager knows only these handles, and no module imports
//! one that imports it back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::metrics as m;
use super::presence::PresenceRecord;
use super::rooms::{Fill, Gap};
use super::store::PersonId;
use crate::protocol::ChatMessage;

/// What travels on a room's channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// A stored message.
    Message { room: String, message: ChatMessage },
    /// One person's count of connections in one room, on the sending node.
    Presence(PresenceRecord),
    /// One person started typing in a room.
    Typing {
        room: String,
        key: String,
        name: String,
    },
    /// The operator changed the bans: every node reads them again.
    BansChanged,
    /// One person read a room up to `seq` (their tabs on every node are told).
    Read {
        room: String,
        person: PersonId,
        seq: u64,
    },
}

impl BusEvent {
    pub(super) fn room(&self) -> &str {
        match self {
            BusEvent::Message { room, .. }
            | BusEvent::Typing { room, .. }
            | BusEvent::Read { room, .. } => room,
            BusEvent::Presence(record) => &record.room,
            // Not a room's: the empty name's channel, which every node hears like any other.
            BusEvent::BansChanged => "",
        }
    }
}

pub(super) enum Command {
    Publish(BusEvent),
    Claim {
        key: String,
        person: PersonId,
        answer: oneshot::Sender<bool>,
    },
    Release {
        key: String,
    },
    /// Who holds the name `key` anywhere in the cluster, if anyone.
    Holder {
        key: String,
        answer: oneshot::Sender<Option<PersonId>>,
    },
    /// The node is shutting down: give up its lease and records, then answer.
    Depart {
        done: oneshot::Sender<()>,
    },
}

/// This node's handle on the cluster: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(super) node: Arc<str>,
    commands: mpsc::Sender<Command>,
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// Redis answered the last call.
    pub(super) connected: AtomicBool,
    /// Something could not be queued: restate everything at the next chance.
    pub(super) restate: AtomicBool,
    pub(super) reconnects: AtomicU64,
}

impl Cluster {
    /// A handle and the queue its commands arrive in (see `bus::start`).
    pub(super) fn new(node: String, queue_len: usize) -> (Cluster, mpsc::Receiver<Command>) {
        let (commands, queue) = mpsc::channel(queue_len);
        let cluster = Cluster {
            node: node.into(),
            commands,
            shared: Arc::new(Shared {
                connected: AtomicBool::new(false),
                restate: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        };
        (cluster, queue)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether Redis is reachable now (`/healthz` says "degraded" when not).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Tells the other nodes (never waits: see the module docs).
    pub fn publish(&self, event: BusEvent) {
        self.send(Command::Publish(event));
    }

    /// Lets go of a name no connection here holds any more.
    pub fn release_name(&self, key: String) {
        self.send(Command::Release { key });
    }

    /// Claims the name `key` for `person` across the cluster: false if someone else holds it on a
    /// live node. Granted when Redis cannot be asked (see the module docs).
    pub async fn claim_name(&self, key: String, person: PersonId) -> bool {
        let (answer, answered) = oneshot::channel();
        if self
            .commands
            .try_send(Command::Claim {
                key,
                person,
                answer,
            })
            .is_err()
        {
            self.shared.restate.store(true, Ordering::Relaxed);
            return true;
        }
        answered.await.unwrap_or(true)
    }

    /// The person holding the name `key` on some node, if any (`None` too when Redis cannot say).
    pub async fn holder_of(&self, key: String) -> Option<PersonId> {
        let (answer, answered) = oneshot::channel();
        self.commands
            .try_send(Command::Holder { key, answer })
            .ok()?;
        answered.await.ok().flatten()
    }

    /// Shutdown: gives up this node's lease, people and names at once, so the other nodes announce its
    /// people's leaves on their next check instead of when the lease runs out. Waits at most a second.
    pub async fn depart(&self) {
        let (done, departed) = oneshot::channel();
        if self.commands.try_send(Command::Depart { done }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), departed).await;
        }
    }

    fn send(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            counter!(m::BUS_DROPPED).increment(1);
            self.shared.restate.store(true, Ordering::Relaxed);
        }
    }
}

/// Asks for rooms' sequences to be filled from the store (see `gaps.rs`). Cheap to clone.
#[derive(Clone)]
pub struct GapFiller {
    requests: mpsc::Sender<(String, Fill)>,
}

impl GapFiller {
    /// A handle and the queue its requests arrive in: each a room, and why it is to be filled.
    pub(super) fn new(queue_len: usize) -> (GapFiller, mpsc::Receiver<(String, Fill)>) {
        let (requests, incoming) = mpsc::channel(queue_len);
        (GapFiller { requests }, incoming)
    }

    /// A room reported a gap: filled after a short hold, unless it closes by itself. Dropped when
    /// the queue is full: a later report, or the periodic sync, asks again.
    pub fn request(&self, gap: Gap) {
        let _ = self.requests.try_send((gap.room, Fill::Gap));
    }

    /// The store is ahead of `room` (found by a sync): fill now.
    pub fn request_now(&self, room: String) {
        let _ = self.requests.try_send((room, Fill::Behind));
    }
}
