//! The connection manager: who is connected under which name, who follows which room, and the fan-out
//! of every room event into that room's log.
//!
//! The reference FastAPI chat awaits each peer's `send_text` in turn, so one slow peer stalls the room.
//! Here a broadcast never waits on a socket: the event is serialized once, and the resulting frame (a
//! reference-counted [`Frame`]) is appended to the room's [`FanoutLog`]; every member's task is woken to
//! take it at its own pace (see `connection.rs`). A member that falls further behind than the log keeps
//! is disconnected with close code 1013, and everyone else carries on at full speed.
//!
//! People: a person is a session (see `session.rs`); all of one person's connections share one name
//! and count once in a room's presence: `join` is announced on their first connection following the room,
//! `leave` when their last one goes.
//!
//! Messages do not pass through here on the way in: the history writer (`writer.rs`) stores them first
//! and then hands them to [`ConnectionManager::stored`], which acknowledges and publishes them. So every
//! message anyone sees is already durable, in sequence-number order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};

use super::config::Config;
use super::error::{close, ChatError};
use super::fanout::FanoutLog;
use super::metrics as m;
use super::names::{self, name_key};
use super::outbox::{Outbox, Subscription};
use super::recent::{Recent, ReplayLimits};
use super::session::{Session, Sessions};
use super::store::{NewMessage, PersonId, Stored};
use crate::protocol::{
    validate_room, validate_text, ChatMessage, ServerEvent, MAX_CLIENT_ID_BYTES,
};

/// Messages each room with people in it keeps in memory (at least `--history-on-join`), so that a
/// reconnect after a short drop is answered without the store.
const RECENT_MESSAGES: usize = 200;

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

/// Who a new connection says it is.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// From a valid session token: the person, and the name they had.
    pub session: Option<Session>,
    /// A name asked for explicitly (`/ws?name=`, `/ws/{client_id}`): this one or a refusal.
    pub chosen: Option<String>,
    /// From `/ws/{client_id}`, the one route whose names may start with `Client #`.
    pub legacy: bool,
}

/// A connection the manager accepted: its id, who it is, and its outbox (the welcome already queued).
pub struct Connected {
    pub id: ConnId,
    pub person: PersonId,
    pub name: String,
    pub outbox: Arc<Outbox>,
}

/// A join under way: the room is held open and its log position noted while the history is read (see
/// [`ConnectionManager::finish_join`]).
pub struct JoinTicket {
    pub conn: ConnId,
    pub room: String,
    pub after: Option<u64>,
    log: Arc<FanoutLog>,
    start: u64,
    /// The room's count of published messages then: if it is unchanged when the read comes back, the
    /// read is the room's current state, and can start its in-memory cache.
    published: u64,
}

/// What a joining connection is sent of the room's history.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// `messages` continue exactly from the `after` the client asked for.
    pub recovered: bool,
    pub messages: Vec<ChatMessage>,
    /// The room's oldest stored sequence number (0: none).
    pub oldest_seq: u64,
    /// The sequence number the client already has everything up to: `after` when recovered, else 0.
    pub after: u64,
    /// The room's last sequence number when this was read.
    pub last_seq: u64,
}

/// How a join went on: at once (from the room's in-memory recent messages), or it needs the store.
pub enum Joining {
    Done,
    /// Read the history (`history::replay`), then call [`ConnectionManager::finish_join`].
    NeedsHistory(JoinTicket),
}

pub struct ConnectionManager {
    /// A std `Mutex`, not tokio's: every critical section is short, synchronous work (map updates,
    /// appends, wake-ups), and no `.await` ever happens while it is held (clippy's `await_holding_lock`
    /// is denied for the crate). One lock for everything, rooms included: holding it while appending to a
    /// room's log is what gives every member the same order of events, and presence changes stay
    /// consistent with the snapshots joiners get.
    registry: Mutex<Registry>,
    sessions: Sessions,
    limits: Limits,
}

struct Limits {
    queue_frames: usize,
    queue_bytes: usize,
    max_name_chars: usize,
    max_rooms: usize,
    typing_ttl: Duration,
    replay: ReplayLimits,
    recent_capacity: usize,
}

struct Registry {
    /// A `BTreeMap` because ids only grow: iterating it lists connections in the order they came.
    conns: BTreeMap<ConnId, Conn>,
    /// Every name in use (by `name_key`), held by one person, through one or more connections.
    names: HashMap<String, NameHold>,
    /// Rooms with members, or with a join under way.
    rooms: HashMap<String, Room>,
    next_conn_id: ConnId,
    /// Orders people in each room's presence list.
    next_arrival: u64,
    /// Set on shutdown: no one joins any more.
    closing: bool,
    /// Joins and leaves are announced only in rooms up to this size (see `Config::presence_limit`).
    presence_limit: usize,
}

struct Conn {
    person: PersonId,
    name: String,
    outbox: Arc<Outbox>,
    /// Rooms it follows.
    rooms: Vec<String>,
    /// Rooms it asked to join whose history is still being read.
    joining: Vec<String>,
}

struct NameHold {
    person: PersonId,
    conns: usize,
}

struct Room {
    log: Arc<FanoutLog>,
    members: BTreeMap<ConnId, Member>,
    /// Who is here, by `name_key`: when they arrived and through how many connections.
    present: HashMap<String, Presence>,
    /// Display names by arrival: the order `joined` snapshots list people in.
    arrivals: BTreeMap<u64, String>,
    /// Who is typing, by `name_key`: display name and when the notice runs out.
    typing: HashMap<String, (String, Instant)>,
    /// Joins under way: the room must outlive them even with no members.
    pending_joins: usize,
    /// Messages published so far (see `JoinTicket::published`).
    published: u64,
    /// The newest messages, once known (see `recent.rs`).
    recent: Option<Recent>,
}

struct Member {
    outbox: Arc<Outbox>,
    subscription: Arc<Subscription>,
}

struct Presence {
    arrival: u64,
    conns: usize,
}

impl ConnectionManager {
    /// Takes the queue bounds and limits from `config`; `sessions` signs the welcome's token.
    pub fn new(config: &Config, sessions: Sessions) -> Self {
        ConnectionManager {
            registry: Mutex::new(Registry {
                conns: BTreeMap::new(),
                names: HashMap::new(),
                rooms: HashMap::new(),
                next_conn_id: 1,
                next_arrival: 0,
                closing: false,
                presence_limit: config.presence_limit,
            }),
            sessions,
            limits: Limits {
                queue_frames: config.queue_frames,
                queue_bytes: config.queue_bytes,
                max_name_chars: config.max_name_chars,
                max_rooms: config.max_rooms_per_connection,
                typing_ttl: config.typing_ttl,
                replay: ReplayLimits {
                    fresh: config.history_on_join,
                    max_missed: config.replay_limit,
                },
                recent_capacity: config.history_on_join.max(RECENT_MESSAGES),
            },
        }
    }

    /// Registers a new connection and queues its welcome. The name: the one `chosen` (refused if someone
    /// else holds it), else the session's if it is free (or already this person's), else a fresh one.
    pub fn connect(&self, identity: Identity) -> Result<Connected, ChatError> {
        let mut reg = self.registry();
        if reg.closing {
            return Err(ChatError::ShuttingDown);
        }
        let person = identity
            .session
            .as_ref()
            .map_or_else(Sessions::new_person, |s| s.person);
        let free = |reg: &Registry, name: &str| {
            reg.names
                .get(&name_key(name))
                .is_none_or(|hold| hold.person == person)
        };
        let name = match identity.chosen {
            Some(raw) => {
                let name = names::validate(&raw, self.limits.max_name_chars, identity.legacy)
                    .map_err(ChatError::BadName)?;
                if !free(&reg, &name) {
                    return Err(ChatError::NameTaken(name));
                }
                name
            }
            None => match identity.session {
                Some(Session { name, .. })
                    if names::validate(&name, self.limits.max_name_chars, false).as_ref()
                        == Ok(&name)
                        && free(&reg, &name) =>
                {
                    name
                }
                _ => names::assign(|n| !reg.names.contains_key(&name_key(n))),
            },
        };

        let id = reg.next_conn_id;
        reg.next_conn_id += 1;
        let outbox = Arc::new(Outbox::new());
        let welcome = encode(&ServerEvent::Welcome {
            name: name.clone(),
            session: self.sessions.issue(person, &name),
        });
        outbox
            .send(welcome)
            .expect("a new outbox has room for its welcome");
        reg.names
            .entry(name_key(&name))
            .or_insert(NameHold { person, conns: 0 })
            .conns += 1;
        reg.conns.insert(
            id,
            Conn {
                person,
                name: name.clone(),
                outbox: outbox.clone(),
                rooms: Vec::new(),
                joining: Vec::new(),
            },
        );
        counter!(m::CONNECTIONS_ACCEPTED).increment(1);
        gauge!(m::CONNECTIONS).increment(1);
        Ok(Connected {
            id,
            person,
            name,
            outbox,
        })
    }

    /// First half of a join: checks the request, and holds the room open at its current log position
    /// while the caller reads the history it will replay.
    ///
    /// Why the position is taken *before* the history is read: every message is stored before it is
    /// published, so each one is either already in what the read returns, or published after this
    /// position (or both, which the subscription's sequence filter skips). Nothing falls in between.
    /// When the room's recent messages are in memory and cover what the client needs, the join
    /// completes at once ([`Joining::Done`]).
    pub fn begin_join(
        &self,
        conn: ConnId,
        room: &str,
        after: Option<u64>,
    ) -> Result<Joining, ChatError> {
        validate_room(room).map_err(ChatError::BadRoom)?;
        let mut reg = self.registry();
        let Some(c) = reg.conns.get_mut(&conn) else {
            return Err(ChatError::ShuttingDown);
        };
        if c.rooms.iter().chain(&c.joining).any(|r| r == room) {
            return Err(ChatError::AlreadyJoined(room.to_owned()));
        }
        if c.rooms.len() + c.joining.len() >= self.limits.max_rooms {
            return Err(ChatError::TooManyRooms(self.limits.max_rooms));
        }
        c.joining.push(room.to_owned());
        let (queue_frames, queue_bytes) = (self.limits.queue_frames, self.limits.queue_bytes);
        let entry = reg.rooms.entry(room.to_owned()).or_insert_with(|| Room {
            log: Arc::new(FanoutLog::new(queue_frames, queue_bytes)),
            members: BTreeMap::new(),
            present: HashMap::new(),
            arrivals: BTreeMap::new(),
            typing: HashMap::new(),
            pending_joins: 0,
            published: 0,
            recent: None,
        });
        entry.pending_joins += 1;
        let ticket = JoinTicket {
            conn,
            room: room.to_owned(),
            after,
            log: entry.log.clone(),
            start: entry.log.head(),
            published: entry.published,
        };
        let cached = entry
            .recent
            .as_ref()
            .and_then(|recent| recent.replay(after, self.limits.replay));
        Ok(match cached {
            Some(replay) => {
                self.complete_join(&mut reg, ticket, replay);
                Joining::Done
            }
            None => Joining::NeedsHistory(ticket),
        })
    }

    /// Second half of a join: subscribes the connection from the ticket's position on, sends it the
    /// `joined` snapshot with `replay`, and announces the person if this is their first connection here.
    pub fn finish_join(&self, ticket: JoinTicket, replay: Replay) {
        let mut reg = self.registry();
        if let Some(r) = reg.rooms.get_mut(&ticket.room) {
            if r.recent.is_none() && r.published == ticket.published {
                // Nothing was published since the read began: it is the room's current state.
                r.recent = Some(Recent::new(&replay, self.limits.recent_capacity));
            }
        }
        self.complete_join(&mut reg, ticket, replay);
    }

    fn complete_join(&self, reg: &mut Registry, ticket: JoinTicket, replay: Replay) {
        let room = ticket.room;
        let Some(r) = reg.rooms.get_mut(&room) else {
            return;
        };
        r.pending_joins -= 1;
        let still_wanted = reg.conns.get_mut(&ticket.conn).is_some_and(|c| {
            let wanted = c.joining.contains(&room);
            c.joining.retain(|j| *j != room);
            if c.joining.is_empty() {
                // Joins are rare and connections many: an idle one keeps no spare capacity.
                c.joining = Vec::new();
            }
            wanted
        });
        if !still_wanted {
            // It left (or went) while its history was being read.
            reg.drop_room_if_unused(&room);
            return;
        }
        let c = reg.conns.get_mut(&ticket.conn).expect("checked above");
        c.rooms.push(room.clone());
        let (person_key, name, outbox) = (name_key(&c.name), c.name.clone(), c.outbox.clone());

        let r = reg.rooms.get_mut(&room).expect("held open by the ticket");
        let first_here = !r.present.contains_key(&person_key);
        if first_here {
            let arrival = reg.next_arrival;
            reg.next_arrival += 1;
            r.present
                .insert(person_key.clone(), Presence { arrival, conns: 0 });
            r.arrivals.insert(arrival, name.clone());
        }
        r.present.get_mut(&person_key).expect("inserted").conns += 1;
        let online_count = r.present.len();
        let online: Vec<String> = r
            .arrivals
            .values()
            .take(reg.presence_limit.max(1))
            .cloned()
            .collect();
        let typing: Vec<String> = r.typing.values().map(|(n, _)| n.clone()).collect();
        if first_here && online_count <= reg.presence_limit {
            let join = ServerEvent::Join {
                room: room.clone(),
                name,
                ts: now_ms(),
            };
            reg.publish(&room, &join, 0);
        }
        let Some(r) = reg.rooms.get_mut(&room) else {
            return;
        };
        let delivered = replay.messages.last().map_or(replay.after, |m| m.seq);
        let subscription = Arc::new(Subscription::new(
            room.clone(),
            ticket.log,
            ticket.start,
            r.log.head(),
            delivered,
        ));
        let joined = encode(&ServerEvent::Joined {
            room: room.clone(),
            recovered: replay.recovered,
            messages: replay.messages,
            oldest_seq: replay.oldest_seq,
            online,
            online_count,
        });
        r.members.insert(
            ticket.conn,
            Member {
                outbox: outbox.clone(),
                subscription: subscription.clone(),
            },
        );
        let mut full = outbox.send(joined).is_err();
        if !typing.is_empty() {
            full |= outbox
                .send(encode(&ServerEvent::Typing {
                    room,
                    names: typing,
                }))
                .is_err();
        }
        outbox.subscribe(subscription);
        if full {
            reg.remove(ticket.conn, Some(Kick::TOO_SLOW));
        }
    }

    /// A join that could not finish (its history could not be read): releases the room and tells the
    /// client.
    pub fn abort_join(&self, ticket: JoinTicket, error: &ChatError) {
        {
            let mut reg = self.registry();
            if let Some(r) = reg.rooms.get_mut(&ticket.room) {
                r.pending_joins -= 1;
            }
            if let Some(c) = reg.conns.get_mut(&ticket.conn) {
                c.joining.retain(|j| *j != ticket.room);
            }
            reg.drop_room_if_unused(&ticket.room);
        }
        self.reject(ticket.conn, error);
    }

    /// Stops connection `conn` following `room`.
    pub fn leave_room(&self, conn: ConnId, room: &str) -> Result<(), ChatError> {
        let mut reg = self.registry();
        let Some(c) = reg.conns.get_mut(&conn) else {
            return Ok(());
        };
        let joining = c.joining.len();
        c.joining.retain(|j| j != room);
        if c.joining.len() < joining {
            // Its join is still reading history: `finish_join` will see it is no longer wanted.
            return Ok(());
        }
        if !c.rooms.iter().any(|r| r == room) {
            return Err(ChatError::NotJoined(room.to_owned()));
        }
        c.rooms.retain(|r| r != room);
        c.outbox.unsubscribe(room);
        let (person_key, name) = (name_key(&c.name), c.name.clone());
        reg.leave_room(conn, room, &person_key, name);
        Ok(())
    }

    /// Checks that `conn` may send `text` to `room`, and returns the message to store.
    pub fn prepare_message(
        &self,
        conn: ConnId,
        room: String,
        text: String,
        client_id: Option<String>,
    ) -> Result<NewMessage, ChatError> {
        if text.trim().is_empty() {
            return Err(ChatError::EmptyMessage);
        }
        validate_text(&text).map_err(ChatError::BadText)?;
        if client_id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > MAX_CLIENT_ID_BYTES)
        {
            return Err(ChatError::BadClientId);
        }
        let reg = self.registry();
        let Some(c) = reg.conns.get(&conn) else {
            return Err(ChatError::ShuttingDown);
        };
        if !c.rooms.contains(&room) {
            return Err(ChatError::NotJoined(room));
        }
        counter!(m::MESSAGES_IN).increment(1);
        Ok(NewMessage {
            room,
            author_id: c.person,
            author: c.name.clone(),
            text,
            ts: now_ms(),
            client_id,
        })
    }

    /// The room connection `conn` followed first, if it follows any.
    pub fn first_room(&self, conn: ConnId) -> Option<String> {
        self.registry()
            .conns
            .get(&conn)
            .and_then(|c| c.rooms.first().cloned())
    }

    /// A message is stored (or was already): acknowledge it to its sender and, if new, publish it to
    /// the room. Called by the history writer in sequence order.
    pub fn stored(&self, sender: ConnId, message: &NewMessage, outcome: Stored) {
        let mut reg = self.registry();
        let seq = match outcome {
            Stored::Duplicate { seq } => seq,
            Stored::New(stored) => {
                let seq = stored.seq;
                // The sender stopped typing: its message is here.
                let key = name_key(&message.author);
                let stopped = reg
                    .rooms
                    .get_mut(&message.room)
                    .is_some_and(|r| r.typing.remove(&key).is_some());
                if stopped {
                    reg.publish_typing(&message.room);
                }
                if let Some(r) = reg.rooms.get_mut(&message.room) {
                    r.published += 1;
                    if r.recent
                        .as_mut()
                        .is_some_and(|recent| !recent.push(&stored))
                    {
                        r.recent = None;
                    }
                }
                let event = ServerEvent::Message {
                    room: message.room.clone(),
                    seq,
                    from: stored.from,
                    text: stored.text,
                    ts: stored.ts,
                    client_id: stored.client_id,
                };
                reg.publish(&message.room, &event, seq);
                seq
            }
        };
        let ack = encode(&ServerEvent::Ack {
            room: message.room.clone(),
            seq,
            client_id: message.client_id.clone(),
        });
        reg.send_to(sender, ack);
    }

    /// Connection `conn` says its person is typing in `room`: announced if they were not already.
    pub fn typing(&self, conn: ConnId, room: &str) -> Result<(), ChatError> {
        let mut reg = self.registry();
        let Some(c) = reg.conns.get(&conn) else {
            return Ok(());
        };
        if !c.rooms.iter().any(|r| r == room) {
            return Err(ChatError::NotJoined(room.to_owned()));
        }
        let (key, name) = (name_key(&c.name), c.name.clone());
        let until = Instant::now() + self.limits.typing_ttl;
        let r = reg.rooms.get_mut(room).expect("a followed room exists");
        if r.typing.insert(key, (name, until)).is_none() {
            reg.publish_typing(room);
        }
        Ok(())
    }

    /// Forgets typing notices that ran out, and tells their rooms.
    pub fn expire_typing(&self, now: Instant) {
        let mut reg = self.registry();
        let mut changed = Vec::new();
        for (name, room) in reg.rooms.iter_mut() {
            let before = room.typing.len();
            room.typing.retain(|_, (_, until)| *until > now);
            if room.typing.len() != before {
                changed.push(name.clone());
            }
        }
        for room in changed {
            reg.publish_typing(&room);
        }
    }

    /// Drops every room's in-memory recent messages (retention deleted some from the store).
    pub fn forget_recent(&self) {
        for room in self.registry().rooms.values_mut() {
            room.recent = None;
        }
    }

    /// Tells connection `to` (only) why its last frame was refused.
    pub fn reject(&self, to: ConnId, error: &ChatError) {
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        self.send_to(to, &error.event());
    }

    /// Queues `event` for connection `to` only.
    pub fn send_to(&self, to: ConnId, event: &ServerEvent) {
        self.registry().send_to(to, encode(event));
    }

    /// Forgets a connection that ended and tells its rooms if its person left them. Idempotent: a
    /// connection already removed (kicked) is not announced twice.
    pub fn leave(&self, id: ConnId) {
        self.registry().remove(id, None);
    }

    /// Disconnects one connection with `kick` (e.g. it sent a message too big) and tells the others.
    pub fn kick(&self, id: ConnId, kick: Kick) {
        self.registry().remove(id, Some(kick));
    }

    /// Shutdown: refuses every later connection and closes everyone with 1001. No leave events: everyone
    /// goes.
    pub fn shut_down(&self) {
        let mut reg = self.registry();
        reg.closing = true;
        let conns = std::mem::take(&mut reg.conns);
        reg.names.clear();
        reg.rooms.clear();
        gauge!(m::CONNECTIONS).decrement(conns.len() as f64);
        for conn in conns.into_values() {
            conn.outbox.kick(Kick::SHUTDOWN);
        }
    }

    /// Asks every connection to check on its client's heartbeat (see `server::run`).
    pub fn nudge_all(&self) {
        for conn in self.registry().conns.values() {
            conn.outbox.nudge();
        }
    }

    /// Frames waiting for all connections together (for the metrics).
    pub fn queue_depth(&self) -> u64 {
        self.registry()
            .conns
            .values()
            .map(|c| c.outbox.backlog())
            .sum()
    }

    /// How many connections are registered now.
    pub fn connection_count(&self) -> usize {
        self.registry().conns.len()
    }

    /// The people in `room` now, in the order they came.
    pub fn online(&self, room: &str) -> Vec<String> {
        self.registry()
            .rooms
            .get(room)
            .map(|r| r.arrivals.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every room with people in it, and how many.
    pub fn room_counts(&self) -> Vec<(String, usize)> {
        self.registry()
            .rooms
            .iter()
            .filter(|(_, r)| !r.present.is_empty())
            .map(|(name, r)| (name.clone(), r.present.len()))
            .collect()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock would be a bug, but it must not take every later connection down
        // with it: the registry's invariants hold between statements, so its state is still usable.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    /// Serializes `event` once and appends it to `room`'s log (`message_seq`: the message's sequence
    /// number, or 0), then wakes the members. Members it left behind (their cursor is now below the
    /// oldest frame kept) are disconnected as too slow.
    fn publish(&mut self, room: &str, event: &ServerEvent, message_seq: u64) {
        let Some(r) = self.rooms.get(room) else {
            // No one follows the room: a joiner will read the message from the store.
            return;
        };
        let oldest_kept = r.log.append(encode(event), message_seq);
        counter!(m::DELIVERIES_OUT).increment(r.members.len() as u64);
        let mut lagging = Vec::new();
        for (id, member) in &r.members {
            if member.subscription.cursor() < oldest_kept {
                lagging.push(*id);
            } else {
                member.outbox.notify();
            }
        }
        for id in lagging {
            // Recursion ends: each level removes a connection, and there are finitely many.
            self.remove(id, Some(Kick::TOO_SLOW));
        }
    }

    /// Tells `room` who is typing now.
    fn publish_typing(&mut self, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let mut names: Vec<String> = r.typing.values().map(|(n, _)| n.clone()).collect();
        names.sort();
        let event = ServerEvent::Typing {
            room: room.to_owned(),
            names,
        };
        self.publish(room, &event, 0);
    }

    /// Queues a personal frame; a connection whose personal queue is full is not reading: too slow.
    fn send_to(&mut self, to: ConnId, frame: Frame) {
        let full = self
            .conns
            .get(&to)
            .is_some_and(|c| c.outbox.send(frame).is_err());
        if full {
            self.remove(to, Some(Kick::TOO_SLOW));
        }
    }

    /// Removes a connection, kicks it if `kick` says why, and takes it out of its rooms.
    fn remove(&mut self, id: ConnId, kick: Option<Kick>) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let key = name_key(&conn.name);
        if let Some(hold) = self.names.get_mut(&key) {
            hold.conns -= 1;
            if hold.conns == 0 {
                self.names.remove(&key);
            }
        }
        gauge!(m::CONNECTIONS).decrement(1);
        if let Some(kick) = kick {
            tracing::info!(conn = id, name = %conn.name, reason = kick.reason, "disconnecting");
            if kick == Kick::TOO_SLOW {
                counter!(m::SLOW_CONSUMERS).increment(1);
            }
            conn.outbox.kick(kick);
        }
        // Joins under way find the connection gone in `finish_join`, which releases their rooms.
        for room in &conn.rooms {
            self.leave_room(id, room, &key, conn.name.clone());
        }
    }

    /// Takes member `conn` (whose person has `person_key`) out of `room`, announcing the person's leave
    /// if it was their last connection there and the room is small enough (`--presence-limit`).
    fn leave_room(&mut self, conn: ConnId, room: &str, person_key: &str, name: String) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.members.remove(&conn);
        let Some(presence) = r.present.get_mut(person_key) else {
            return;
        };
        presence.conns -= 1;
        if presence.conns == 0 {
            let arrival = presence.arrival;
            r.present.remove(person_key);
            r.arrivals.remove(&arrival);
            let stopped_typing = r.typing.remove(person_key).is_some();
            if r.present.len() < self.presence_limit {
                let leave = ServerEvent::Leave {
                    room: room.to_owned(),
                    name,
                    ts: now_ms(),
                };
                self.publish(room, &leave, 0);
            }
            if stopped_typing {
                self.publish_typing(room);
            }
        }
        self.drop_room_if_unused(room);
    }

    /// Forgets a room no one follows or is joining: its log is only a window on live traffic, and the
    /// store has its history.
    fn drop_room_if_unused(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.is_empty() && r.pending_joins == 0)
        {
            self.rooms.remove(room);
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
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> ConnectionManager {
        ConnectionManager::new(&Config::default(), Sessions::ephemeral())
    }

    fn connect(manager: &ConnectionManager, name: &str) -> Connected {
        manager
            .connect(Identity {
                session: None,
                chosen: Some(name.into()),
                legacy: false,
            })
            .unwrap()
    }

    /// Everything waiting for a connection, decoded.
    fn drain(connected: &Connected) -> Vec<ServerEvent> {
        let mut batch: Vec<Frame> = Vec::new();
        connected.outbox.take(&mut batch, usize::MAX).unwrap();
        batch
            .iter()
            .map(|frame| {
                serde_json::from_slice(super::super::websocket::frame_payload(frame)).unwrap()
            })
            .collect()
    }

    /// A join that must read the store.
    fn ticket(manager: &ConnectionManager, conn: &Connected, after: Option<u64>) -> JoinTicket {
        match manager.begin_join(conn.id, "r", after).unwrap() {
            Joining::NeedsHistory(ticket) => ticket,
            Joining::Done => panic!("served from memory"),
        }
    }

    /// Joins "r", with an empty store behind it.
    fn join(manager: &ConnectionManager, conn: &Connected) {
        if let Joining::NeedsHistory(ticket) = manager.begin_join(conn.id, "r", None).unwrap() {
            manager.finish_join(ticket, Replay::default());
        }
    }

    fn store_message(manager: &ConnectionManager, from: &Connected, seq: u64) -> ChatMessage {
        let new = manager
            .prepare_message(from.id, "r".into(), format!("m{seq}"), None)
            .unwrap();
        let stored = ChatMessage {
            seq,
            from: new.author.clone(),
            text: new.text.clone(),
            ts: new.ts,
            client_id: None,
        };
        manager.stored(from.id, &new, Stored::New(stored.clone()));
        stored
    }

    fn texts(events: &[ServerEvent]) -> Vec<String> {
        events
            .iter()
            .flat_map(|e| match e {
                ServerEvent::Joined { messages, .. } => messages
                    .iter()
                    .map(|m| format!("replay {}", m.text))
                    .collect(),
                ServerEvent::Message { text, .. } => vec![format!("live {text}")],
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn a_message_stored_while_a_join_reads_history_shows_exactly_once() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        drain(&ann);

        // Bob's join starts (and must read the store); message 1 is stored and published while his
        // history is being read, and the read sees it: the replay has it, and the live copy is skipped.
        manager.forget_recent();
        let bob = connect(&manager, "bob");
        let ticket = ticket(&manager, &bob, None);
        let m1 = store_message(&manager, &ann, 1);
        // Message 2 is published after the read: only live.
        let replay = Replay {
            messages: vec![m1],
            ..Replay::default()
        };
        store_message(&manager, &ann, 2);
        manager.finish_join(ticket, replay);
        store_message(&manager, &ann, 3);
        let events = drain(&bob);
        assert!(matches!(&events[0], ServerEvent::Welcome { name, .. } if name == "bob"));
        assert_eq!(texts(&events), ["replay m1", "live m2", "live m3"]);
        // Ann got every message once, and bob's arrival.
        let events = drain(&ann);
        assert_eq!(texts(&events), ["live m1", "live m2", "live m3"]);
        assert!(events
            .iter()
            .any(|e| matches!(e, ServerEvent::Join { name, .. } if name == "bob")));
    }

    #[test]
    fn once_a_room_is_known_joins_are_answered_from_memory() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        for seq in 1..=3 {
            store_message(&manager, &ann, seq);
        }
        // A new joiner and a rejoin after message 1: no store read, the right messages.
        let bob = connect(&manager, "bob");
        assert!(matches!(
            manager.begin_join(bob.id, "r", None),
            Ok(Joining::Done)
        ));
        let carl = connect(&manager, "carl");
        assert!(matches!(
            manager.begin_join(carl.id, "r", Some(1)),
            Ok(Joining::Done)
        ));
        store_message(&manager, &ann, 4);
        assert_eq!(
            texts(&drain(&bob)),
            ["replay m1", "replay m2", "replay m3", "live m4"]
        );
        let carl_events = drain(&carl);
        assert!(matches!(
            &carl_events[1],
            ServerEvent::Joined {
                recovered: true,
                ..
            }
        ));
        assert_eq!(texts(&carl_events), ["replay m2", "replay m3", "live m4"]);

        // A read that raced with a publish does not start the cache.
        manager.forget_recent();
        let dan = connect(&manager, "dan");
        let ticket = ticket(&manager, &dan, None);
        store_message(&manager, &ann, 5);
        manager.finish_join(ticket, Replay::default());
        let eve = connect(&manager, "eve");
        assert!(matches!(
            manager.begin_join(eve.id, "r", None),
            Ok(Joining::NeedsHistory(_))
        ));
    }

    #[test]
    fn a_reader_left_behind_is_disconnected_alone() {
        let manager = ConnectionManager::new(
            &Config {
                queue_frames: 4,
                ..Config::default()
            },
            Sessions::ephemeral(),
        );
        let fast = connect(&manager, "fast");
        let slow = connect(&manager, "slow");
        for c in [&fast, &slow] {
            join(&manager, c);
        }
        for seq in 1..=10 {
            drain(&fast);
            store_message(&manager, &fast, seq);
        }
        assert_eq!(slow.outbox.kick_ordered(), Some(Kick::TOO_SLOW));
        assert_eq!(manager.online("r"), ["fast"]);
        drain(&fast);
        store_message(&manager, &fast, 11);
        assert_eq!(texts(&drain(&fast)), ["live m11"]);
    }

    #[test]
    fn a_room_no_one_follows_is_forgotten() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        let ticket = ticket(&manager, &ann, None);
        // Left before its history was read: the join does not complete.
        manager.leave_room(ann.id, "r").unwrap();
        manager.finish_join(ticket, Replay::default());
        assert!(manager.room_counts().is_empty());
        assert_eq!(
            manager
                .prepare_message(ann.id, "r".into(), "x".into(), None)
                .err(),
            Some(ChatError::NotJoined("r".into()))
        );
        join(&manager, &ann);
        assert_eq!(manager.room_counts(), [("r".to_string(), 1)]);
        manager.leave(ann.id);
        assert!(manager.room_counts().is_empty());
    }
}
