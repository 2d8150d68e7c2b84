//! The connection manager: who is connected under which name, and the fan-out of every event into every
//! connection's own outbound queue.
//!
//! The reference FastAPI chat awaits each peer's `send_text` in turn, so one slow peer stalls the room.
//! Here a broadcast never waits on a socket: the event is serialized once, and the resulting frame (a
//! reference-counted [`Frame`]) is appended to the [`FanoutLog`], which wakes every connection's
//! task to take it at its own pace (see `connection.rs`). A peer that falls further behind than the log
//! keeps is disconnected with close code 1013, and everyone else carries on at full speed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};
use std::sync::Arc;

use super::config::Config;
use super::error::{close, ChatError};
use super::fanout::FanoutLog;
use super::metrics as m;
use super::names::{self, name_key, NameRequest};
use super::outbox::Outbox;
use crate::protocol::{validate_name, ServerEvent};

/// Identifies one WebSocket connection for as long as it lasts.
pub type ConnId = u64;

/// One event, encoded once as a complete WebSocket frame and shared by every recipient: cloning it bumps a
/// reference count, it copies nothing.
pub type Frame = bytes::Bytes;

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

/// What a connection gets back from [`ConnectionManager::join`]: its identity and its outbox, which
/// holds its cursor into the fan-out log (at the head: it sees every event after its welcome), its
/// personal frames (the welcome first) and any order to disconnect.
pub struct Joined {
    pub id: ConnId,
    pub name: String,
    pub outbox: Arc<Outbox>,
}

pub struct ConnectionManager {
    /// A std `Mutex`, not tokio's: every critical section is short, synchronous work (map updates and
    /// `try_send`s, which never wait), and no `.await` ever happens while it is held (clippy's
    /// `await_holding_lock` is denied for the crate). Holding it while queueing an event is also what gives
    /// every connection the same order of events.
    registry: Mutex<Registry>,
    /// Every broadcast frame, once. Appended to only while holding `registry`, which is what gives every
    /// connection the same order of events; read by the connections without it.
    log: FanoutLog,
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
    /// Joins and leaves are announced only in rooms up to this size (see `Config::presence_limit`).
    presence_limit: usize,
}

struct Peer {
    name: String,
    outbox: Arc<Outbox>,
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
                presence_limit: config.presence_limit,
            }),
            log: FanoutLog::new(config.queue_frames, config.queue_bytes),
            max_name_chars: config.max_name_chars,
        }
    }

    /// Registers a new connection under the name it asked for (or a fresh one), queues its welcome and
    /// tells everyone else it joined. All under the registry lock, so the newcomer misses nothing sent
    /// after its welcome.
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

        let id = reg.next_conn_id;
        reg.next_conn_id += 1;

        let online = reg
            .peers
            .values()
            .map(|p| p.name.clone())
            .chain([name.clone()])
            .take(reg.presence_limit.max(1))
            .collect();
        let welcome = encode(&ServerEvent::Welcome {
            name: name.clone(),
            online,
            online_count: reg.peers.len() + 1,
        });
        // Everyone else hears of the newcomer first; then its cursor starts at the head, past its own
        // join: it sees exactly the events after its welcome.
        if reg.peers.len() < reg.presence_limit {
            let join = ServerEvent::Join {
                id: reg.take_event_id(),
                name: name.clone(),
                ts: now_ms(),
            };
            reg.publish(&self.log, &join);
        }
        let outbox = Arc::new(Outbox::new(self.log.head()));
        outbox
            .send(welcome)
            .expect("a new outbox has room for its welcome");
        reg.names.insert(name_key(&name));
        reg.peers.insert(
            id,
            Peer {
                name: name.clone(),
                outbox: outbox.clone(),
            },
        );
        counter!(m::CONNECTIONS_ACCEPTED).increment(1);
        gauge!(m::CONNECTIONS).increment(1);

        Ok(Joined { id, name, outbox })
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
        reg.publish(&self.log, &message);
        Ok(())
    }

    /// Tells connection `to` (only) why its last frame was refused.
    pub fn reject(&self, to: ConnId, error: &ChatError) {
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        self.send_to(to, &error.event());
    }

    /// Queues `event` for connection `to` only.
    pub fn send_to(&self, to: ConnId, event: &ServerEvent) {
        let frame = encode(event);
        let mut reg = self.registry();
        let full = reg
            .peers
            .get(&to)
            .is_some_and(|peer| peer.outbox.send(frame).is_err());
        if full {
            reg.remove(&self.log, to, Some(Kick::TOO_SLOW));
        }
    }

    /// Forgets a connection that ended and tells everyone else it left. Idempotent: a connection already
    /// removed (kicked) is not announced twice.
    pub fn leave(&self, id: ConnId) {
        self.registry().remove(&self.log, id, None);
    }

    /// Disconnects one connection with `kick` (e.g. it sent a message too big) and tells the others.
    pub fn kick(&self, id: ConnId, kick: Kick) {
        self.registry().remove(&self.log, id, Some(kick));
    }

    /// Shutdown: refuses every later join and closes everyone with 1001. No leave events: everyone goes.
    pub fn shut_down(&self) {
        let mut reg = self.registry();
        reg.closing = true;
        let peers = std::mem::take(&mut reg.peers);
        reg.names.clear();
        gauge!(m::CONNECTIONS).decrement(peers.len() as f64);
        let end = self.log.head();
        for peer in peers.into_values() {
            peer.outbox.kick(Kick::SHUTDOWN, end);
        }
    }

    /// Asks every connection to check on its client's heartbeat (see `server::run`).
    pub fn nudge_all(&self) {
        for peer in self.registry().peers.values() {
            peer.outbox.nudge();
        }
    }

    /// Frames waiting for all connections together (for the metrics).
    pub fn queue_depth(&self) -> u64 {
        self.registry()
            .peers
            .values()
            .map(|p| self.log.behind(p.outbox.cursor()) + p.outbox.personal_len() as u64)
            .sum()
    }

    /// The log every connection reads its broadcast frames from.
    pub fn log(&self) -> &FanoutLog {
        &self.log
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

    /// Serializes `event` once and appends it to the log for everyone. Readers it left behind (their
    /// cursor is now below the oldest frame kept) are disconnected as too slow.
    fn publish(&mut self, log: &FanoutLog, event: &ServerEvent) {
        let oldest_kept = log.append(encode(event));
        counter!(m::DELIVERIES_OUT).increment(self.peers.len() as u64);
        let lagging: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.outbox.cursor() < oldest_kept)
            .map(|(id, _)| *id)
            .collect();
        for id in lagging {
            self.remove(log, id, Some(Kick::TOO_SLOW));
        }
    }

    /// Removes a peer, kicks it if `kick` says why, and announces its leave to the others.
    fn remove(&mut self, log: &FanoutLog, id: ConnId, kick: Option<Kick>) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        self.names.remove(&name_key(&peer.name));
        gauge!(m::CONNECTIONS).decrement(1);
        if let Some(kick) = kick {
            tracing::info!(conn = id, name = %peer.name, reason = kick.reason, "disconnecting");
            if kick == Kick::TOO_SLOW {
                counter!(m::SLOW_CONSUMERS).increment(1);
            }
            peer.outbox.kick(kick, log.head());
        }
        if self.peers.len() < self.presence_limit {
            let leave = ServerEvent::Leave {
                id: self.take_event_id(),
                name: peer.name,
                ts: now_ms(),
            };
            // Recursion ends: each level removes a peer, and there are finitely many.
            self.publish(log, &leave);
        }
    }
}

/// Serializes an event into a WebSocket text frame.
pub fn encode(event: &ServerEvent) -> Frame {
    let json = serde_json::to_string(event)
        .expect("ServerEvent has only string keys and plain data: it always serializes");
    super::websocket::text_frame(&json)
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

    /// Takes everything waiting for `joined`: personal frames, then the log past its cursor.
    fn drain(manager: &ConnectionManager, joined: &Joined) -> Vec<ServerEvent> {
        let mut batch: Vec<Frame> = Vec::new();
        joined.outbox.take_personal(&mut batch);
        let mut cursor = joined.outbox.cursor();
        manager
            .log()
            .read(&mut cursor, None, &mut batch, usize::MAX)
            .expect("not lagging");
        joined.outbox.set_cursor(cursor);
        batch
            .iter()
            .map(|frame| {
                serde_json::from_slice(super::super::websocket::frame_payload(frame)).unwrap()
            })
            .collect()
    }

    fn manager(queue_frames: usize) -> ConnectionManager {
        ConnectionManager::new(&Config {
            queue_frames,
            ..Config::default()
        })
    }

    #[test]
    fn a_reader_left_behind_is_disconnected_alone() {
        let manager = manager(4);
        let fast = manager.join(NameRequest::Chosen("fast".into())).unwrap();
        let slow = manager.join(NameRequest::Chosen("slow".into())).unwrap();
        for i in 0..10 {
            drain(&manager, &fast);
            manager.say(fast.id, format!("m{i}")).unwrap();
        }
        assert_eq!(slow.outbox.kick_ordered(), Some(Kick::TOO_SLOW));
        assert_eq!(manager.online(), vec!["fast".to_string()]);
        // "fast" goes on receiving.
        drain(&manager, &fast);
        manager.say(fast.id, "after".into()).unwrap();
        let last = drain(&manager, &fast);
        assert!(matches!(&last[..], [ServerEvent::Message { text, .. }] if text == "after"));
    }

    #[test]
    fn the_welcome_comes_first_then_later_events_only() {
        let manager = manager(16);
        let ann = manager.join(NameRequest::Chosen("ann".into())).unwrap();
        manager.say(ann.id, "before bob".into()).unwrap();
        let bob = manager.join(NameRequest::Chosen("bob".into())).unwrap();
        manager.say(ann.id, "after bob".into()).unwrap();
        let events = drain(&manager, &bob);
        assert!(
            matches!(&events[0], ServerEvent::Welcome { name, online, online_count: 2 } if name == "bob" && online == &["ann", "bob"])
        );
        assert!(matches!(&events[1..], [ServerEvent::Message { text, .. }] if text == "after bob"));
    }

    #[test]
    fn large_rooms_stop_announcing_presence() {
        let manager = ConnectionManager::new(&Config {
            presence_limit: 2,
            ..Config::default()
        });
        let a = manager.join(NameRequest::Chosen("a".into())).unwrap();
        let b = manager.join(NameRequest::Chosen("b".into())).unwrap();
        let c = manager.join(NameRequest::Chosen("c".into())).unwrap();
        assert!(
            matches!(&drain(&manager, &a)[..], [ServerEvent::Welcome { .. }, ServerEvent::Join { name, .. }] if name == "b")
        );
        assert!(matches!(
            &drain(&manager, &c)[..],
            [ServerEvent::Welcome { online, online_count: 3, .. }] if online == &["a", "b"]
        ));
        manager.leave(c.id); // back to two: not announced
        manager.leave(b.id); // one left, in a small room: announced
        assert!(
            matches!(&drain(&manager, &a)[..], [ServerEvent::Leave { name, .. }] if name == "b")
        );
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
