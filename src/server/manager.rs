//! The connection manager: who is connected under which name, and the fan-out of every event into every
//! connection's own outbound queue.
//!
//! The reference FastAPI chat awaits each peer's `send_text` in turn, so one slow peer stalls the room.
//! Here a broadcast never waits on a socket: the event is serialized once, and the resulting frame (a
//! reference-counted [`Utf8Bytes`]) is offered with `try_send` to each connection's bounded queue, which
//! that connection's own task drains (see `connection.rs`). A peer whose queue is full has fallen too far
//! behind: it is disconnected with close code 1013 and everyone else carries on at full speed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use metrics::{counter, gauge};
use tokio::sync::oneshot;

use super::config::Config;
use super::error::{close, ChatError};
use super::metrics as m;
use super::names::{self, name_key, NameRequest};
use super::outbox::{outbox, OutboxReceiver, OutboxSender, Refused};
use crate::protocol::{validate_name, ServerEvent};

/// Identifies one WebSocket connection for as long as it lasts.
pub type ConnId = u64;

/// One encoded event, shared by every recipient: cloning it bumps a reference count, it copies nothing.
pub type Frame = Utf8Bytes;

/// Why the server ends a connection on its own initiative: sent as the WebSocket close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

impl Kick {
    /// The client could not keep up with the room.
    pub const TOO_SLOW: Kick = Kick {
        code: close::TRY_AGAIN_LATER,
        reason: "too slow: outbound queue full",
    };
    /// The server is stopping.
    pub const SHUTDOWN: Kick = Kick {
        code: close::GOING_AWAY,
        reason: "server shutting down",
    };
}

/// What a connection gets back from [`ConnectionManager::join`]: its identity and the receiving ends of
/// its outbound queue and of its kick signal.
pub struct Joined {
    pub id: ConnId,
    pub name: String,
    /// Every frame for this connection, in the order the manager accepted the events. The welcome is first.
    pub outbox: OutboxReceiver,
    /// Fires when the manager disconnects this connection (too slow, shutdown). Its sender is dropped,
    /// without firing, when the connection leaves normally.
    pub kicked: oneshot::Receiver<Kick>,
}

pub struct ConnectionManager {
    /// A std `Mutex`, not tokio's: every critical section is short, synchronous work (map updates and
    /// `try_send`s, which never wait), and no `.await` ever happens while it is held (clippy's
    /// `await_holding_lock` is denied for the crate). Holding it while queueing an event is also what gives
    /// every connection the same order of events.
    registry: Mutex<Registry>,
    /// Bounds of each connection's outbound queue.
    queue_frames: usize,
    queue_bytes: usize,
    max_name_chars: usize,
}

struct Registry {
    /// A `BTreeMap` because ids only grow: iterating it lists connections in join order, which is the
    /// order the welcome's `online` list promises.
    peers: BTreeMap<ConnId, Peer>,
    /// `name_key`s of every connected name, for the uniqueness check.
    names: HashSet<String>,
    next_conn_id: ConnId,
    next_event_id: u64,
    /// Set on shutdown: no one joins any more.
    closing: bool,
}

struct Peer {
    name: String,
    outbox: OutboxSender,
    kick: oneshot::Sender<Kick>,
}

impl ConnectionManager {
    /// Takes the queue bounds and the longest name from `config`.
    pub fn new(config: &Config) -> Self {
        ConnectionManager {
            registry: Mutex::new(Registry {
                peers: BTreeMap::new(),
                names: HashSet::new(),
                next_conn_id: 1,
                next_event_id: 1,
                closing: false,
            }),
            queue_frames: config.queue_frames,
            queue_bytes: config.queue_bytes,
            max_name_chars: config.max_name_chars,
        }
    }

    /// Registers a new connection under the name it asked for (or a fresh one), queues its welcome and
    /// tells everyone else it joined. The newcomer's queue exists before the announcement, so it misses
    /// nothing sent after its welcome.
    pub fn join(&self, request: NameRequest) -> Result<Joined, ChatError> {
        let mut reg = self.registry();
        if reg.closing {
            return Err(ChatError::ShuttingDown);
        }
        let name = match request {
            NameRequest::Assign => names::assign(|n| !reg.names.contains(&name_key(n))),
            NameRequest::Chosen(raw) => {
                let name = validate_name(&raw, self.max_name_chars).map_err(ChatError::BadName)?;
                if reg.names.contains(&name_key(&name)) {
                    return Err(ChatError::NameTaken(name));
                }
                name
            }
        };

        let (outbox_tx, outbox) = outbox(self.queue_frames, self.queue_bytes);
        let (kick, kicked) = oneshot::channel();
        let id = reg.next_conn_id;
        reg.next_conn_id += 1;

        let online = reg
            .peers
            .values()
            .map(|p| p.name.clone())
            .chain([name.clone()])
            .collect();
        let welcome = encode(&ServerEvent::Welcome {
            name: name.clone(),
            online,
        });
        outbox_tx
            .offer(&welcome)
            .expect("a new queue always takes one frame");

        reg.names.insert(name_key(&name));
        reg.peers.insert(
            id,
            Peer {
                name: name.clone(),
                outbox: outbox_tx,
                kick,
            },
        );
        let join = ServerEvent::Join {
            id: reg.take_event_id(),
            name: name.clone(),
            ts: now_ms(),
        };
        reg.publish(&join, Some(id));
        counter!(m::CONNECTIONS_ACCEPTED).increment(1);
        gauge!(m::CONNECTIONS).increment(1);

        Ok(Joined {
            id,
            name,
            outbox,
            kicked,
        })
    }

    /// Broadcasts `text` from connection `from` to everyone, the sender included.
    pub fn say(&self, from: ConnId, text: String) -> Result<(), ChatError> {
        if text.trim().is_empty() {
            return Err(ChatError::EmptyMessage);
        }
        let mut reg = self.registry();
        // The sender may have been disconnected (too slow) while its frame was in flight: drop the frame,
        // as its connection is ending anyway.
        let Some(sender) = reg.peers.get(&from) else {
            return Ok(());
        };
        let from_name = sender.name.clone();
        let message = ServerEvent::Message {
            id: reg.take_event_id(),
            from: from_name,
            text,
            ts: now_ms(),
        };
        counter!(m::MESSAGES_IN).increment(1);
        reg.publish(&message, None);
        Ok(())
    }

    /// Tells connection `to` (only) why its last frame was refused.
    pub fn reject(&self, to: ConnId, error: &ChatError) {
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        self.send_to(to, &error.event());
    }

    /// Queues `event` for connection `to` only, in its place among the broadcasts.
    pub fn send_to(&self, to: ConnId, event: &ServerEvent) {
        let frame = encode(event);
        let mut reg = self.registry();
        let refused = match reg.peers.get(&to) {
            Some(peer) => peer.outbox.offer(&frame).err(),
            None => None,
        };
        match refused {
            Some(Refused::Full) => reg.remove(to, Some(Kick::TOO_SLOW)),
            Some(Refused::Gone) => reg.remove(to, None),
            None => {}
        }
    }

    /// Forgets a connection that ended and tells everyone else it left. Idempotent: a connection already
    /// removed (kicked) is not announced twice.
    pub fn leave(&self, id: ConnId) {
        self.registry().remove(id, None);
    }

    /// Disconnects one connection with `kick` (e.g. it sent a message too big) and tells the others.
    pub fn kick(&self, id: ConnId, kick: Kick) {
        self.registry().remove(id, Some(kick));
    }

    /// Shutdown: refuses every later join and closes everyone with 1001. No leave events: everyone goes.
    pub fn shut_down(&self) {
        let mut reg = self.registry();
        reg.closing = true;
        let peers = std::mem::take(&mut reg.peers);
        reg.names.clear();
        gauge!(m::CONNECTIONS).decrement(peers.len() as f64);
        for peer in peers.into_values() {
            // The receiver is gone only if that connection already ended: nothing to tell it then.
            let _ = peer.kick.send(Kick::SHUTDOWN);
        }
    }

    /// Frames waiting in all outbound queues together (for the metrics).
    pub fn queue_depth(&self) -> usize {
        self.registry()
            .peers
            .values()
            .map(|p| p.outbox.depth())
            .sum()
    }

    /// How many connections are registered now.
    pub fn connection_count(&self) -> usize {
        self.registry().peers.len()
    }

    /// The names online now, in join order.
    pub fn online(&self) -> Vec<String> {
        self.registry()
            .peers
            .values()
            .map(|p| p.name.clone())
            .collect()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock would be a bug, but it must not take every later connection down
        // with it: the registry's invariants hold between statements, so its state is still usable.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    fn take_event_id(&mut self) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        id
    }

    /// Serializes `event` once and queues it for every peer but `except`; peers that cannot take it are
    /// disconnected.
    fn publish(&mut self, event: &ServerEvent, except: Option<ConnId>) {
        let frame = encode(event);
        let refused = self.offer(&frame, except);
        for (id, kick) in refused {
            self.remove(id, kick);
        }
    }

    /// Offers `frame` to every peer but `except`, without waiting. Returns the peers that could not take
    /// it, each with its kick: too slow if its queue is full, none if its task has already ended.
    fn offer(&self, frame: &Frame, except: Option<ConnId>) -> Vec<(ConnId, Option<Kick>)> {
        let mut refused = Vec::new();
        let mut delivered = 0u64;
        for (id, peer) in &self.peers {
            if Some(*id) == except {
                continue;
            }
            match peer.outbox.offer(frame) {
                Ok(()) => delivered += 1,
                Err(Refused::Full) => refused.push((*id, Some(Kick::TOO_SLOW))),
                Err(Refused::Gone) => refused.push((*id, None)),
            }
        }
        counter!(m::DELIVERIES_OUT).increment(delivered);
        refused
    }

    /// Removes a peer, kicks it if `kick` says why, and announces its leave to the others. Announcing can
    /// find more peers too slow to take it; those are removed in turn (a worklist, not recursion).
    fn remove(&mut self, id: ConnId, kick: Option<Kick>) {
        let mut pending = vec![(id, kick)];
        while let Some((id, kick)) = pending.pop() {
            let Some(peer) = self.peers.remove(&id) else {
                continue;
            };
            self.names.remove(&name_key(&peer.name));
            gauge!(m::CONNECTIONS).decrement(1);
            if let Some(kick) = kick {
                tracing::info!(conn = id, name = %peer.name, reason = kick.reason, "disconnecting");
                if kick == Kick::TOO_SLOW {
                    counter!(m::SLOW_CONSUMERS).increment(1);
                }
                let _ = peer.kick.send(kick);
            }
            let leave = encode(&ServerEvent::Leave {
                id: self.take_event_id(),
                name: peer.name,
                ts: now_ms(),
            });
            pending.extend(self.offer(&leave, None));
        }
    }
}

/// Serializes an event into a frame.
pub fn encode(event: &ServerEvent) -> Frame {
    serde_json::to_string(event)
        .expect("ServerEvent has only string keys and plain data: it always serializes")
        .into()
}

/// Milliseconds since the Unix epoch: the `ts` of every event.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn drain(rx: &mut OutboxReceiver) -> Vec<ServerEvent> {
        let mut batch = Vec::new();
        // Every frame is queued synchronously, so whatever is there is ready now.
        while let Some(n) = rx.recv_many(&mut batch, 1024).now_or_never() {
            if n == 0 {
                break;
            }
        }
        batch
            .iter()
            .map(|frame| serde_json::from_str(frame.as_str()).unwrap())
            .collect()
    }

    fn manager(queue_frames: usize) -> ConnectionManager {
        ConnectionManager::new(&Config {
            queue_frames,
            ..Config::default()
        })
    }

    #[test]
    fn a_full_queue_disconnects_only_that_peer() {
        let manager = manager(4);
        let mut fast = manager.join(NameRequest::Chosen("fast".into())).unwrap();
        let mut slow = manager.join(NameRequest::Chosen("slow".into())).unwrap();
        for i in 0..10 {
            drain(&mut fast.outbox);
            manager.say(fast.id, format!("m{i}")).unwrap();
        }
        assert_eq!(slow.kicked.try_recv(), Ok(Kick::TOO_SLOW));
        assert_eq!(manager.online(), vec!["fast".to_string()]);
        // "fast" goes on receiving.
        drain(&mut fast.outbox);
        manager.say(fast.id, "after".into()).unwrap();
        let last = drain(&mut fast.outbox);
        assert!(matches!(&last[..], [ServerEvent::Message { text, .. }] if text == "after"));
    }

    #[test]
    fn names_are_released_on_leave() {
        let manager = manager(8);
        let a = manager.join(NameRequest::Chosen("Alice".into())).unwrap();
        assert_eq!(
            manager.join(NameRequest::Chosen(" alice ".into())).err(),
            Some(ChatError::NameTaken("alice".into()))
        );
        manager.leave(a.id);
        assert!(manager.join(NameRequest::Chosen("alice".into())).is_ok());
    }
}
