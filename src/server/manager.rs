//! The connection manager: the one lock over who is connected ([`registry`](super::registry)) and
//! who follows which room ([`rooms`](super::rooms)), and the operations that change them.
//!
//! The reference FastAPI chat awaits each peer's `send_text` in turn, so one slow peer stalls the room.
//! Here a broadcast never waits on a socket: the event is serialized once, and the resulting frame is
//! appended to the room's fan-out log; every member's task is woken to take it at its own pace (see
//! `connection.rs`). A member that falls further behind than the log keeps is disconnected with close
//! code 1013, and everyone else carries on at full speed.
//!
//! People: a person is a session (see `session.rs`); all of one person's connections share one name
//! and count once in a room's presence: `join` is announced on their first connection following the room,
//! `leave` when their last one goes.
//!
//! Formats: a connection reads JSON events or the original chat's text lines (see `frame::WireFormat`).
//! A room encodes each event once per format its members read (see `Rooms::publish`); personal frames
//! (welcome, snapshots, acks, errors) exist only in JSON, and a legacy connection gets none: a refusal
//! it cannot be told closes it instead (`ChatError::kick`).
//!
//! Messages do not pass through here on the way in: the history writer (`history.rs`) stores them first
//! and then hands them to [`ConnectionManager::stored`], which acknowledges and publishes them. So every
//! message anyone sees is already durable, in sequence-number order.
//!
//! In a cluster, the manager also tells the other nodes what changed here (through the [`Cluster`]
//! handle: stored messages, presence, typing, names let go) and takes in what they say
//! ([`ConnectionManager::apply_bus`]); their messages take their turn in each room like local ones.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};

use super::bans::Bans;
use super::clock::now_ms;
use super::config::Config;
use super::error::ChatError;
use super::frame::{encode, Frame, Kick, WireFormat};
use super::join::{self, Begun, Completed, JoinTicket, Joining};
use super::metrics as m;
use super::names::name_key;
use super::outbox::Outbox;
use super::peers::{BusEvent, Cluster, GapFiller};
use super::presence::PresenceRecord;
use super::registry::{ConnId, Identity, Record, Registry};
use super::replay::{Replay, ReplayLimits};
use super::room_counts::RoomCounts;
use super::rooms::{Fill, Gap, Lagging, Rooms};
use super::session::Sessions;
use super::store::{Ban, NewMessage, PersonId, Refusal, Stored};
use crate::protocol::{
    validate_reaction, validate_text, ChatMessage, EntryKind, FrameRef, ReadPosition, ServerEvent,
    WelcomeLimits, MAX_CLIENT_ID_BYTES, MAX_REACTION_KINDS,
};

/// Messages each room with people in it keeps in memory (at least `--history-on-join`), so that a
/// reconnect after a short drop is answered without the store.
const RECENT_MESSAGES: usize = 200;

pub struct ConnectionManager {
    /// A std `Mutex`, not tokio's: every critical section is short, synchronous work (map updates,
    /// appends, wake-ups), and no `.await` ever happens while it is held (clippy's `await_holding_lock`
    /// is denied for the crate). One lock for everything, rooms included: holding it while appending to a
    /// room's log is what gives every member the same order of events, and presence changes stay
    /// consistent with the snapshots joiners get.
    state: Mutex<State>,
    sessions: Sessions,
    limits: Limits,
    /// Set once at start (it needs the manager first): the task that fills gaps in a room's
    /// sequence from the store.
    gaps: OnceLock<GapFiller>,
}

struct Limits {
    max_name_chars: usize,
    max_rooms: usize,
    max_message_bytes: usize,
    typing_ttl: Duration,
    replay: ReplayLimits,
    recent_capacity: usize,
    room_create_rate: f64,
}

struct State {
    registry: Registry,
    rooms: Rooms,
    /// Set on shutdown: no one connects or joins any more.
    closing: bool,
    /// The other nodes, in cluster mode. Told of every change here as it is made, under the lock, so
    /// they hear of changes in the order they happened (telling never waits: see `bus.rs`).
    cluster: Option<Cluster>,
    /// The rooms' online counts every page was told.
    room_counts: RoomCounts,
    /// The operator's bans (see `bans.rs`).
    bans: Bans,
}

/// The event telling a person's tabs they read `room` up to `seq`.
fn read_position(room: String, seq: u64) -> ServerEvent {
    ServerEvent::ReadPositions {
        rooms: std::collections::BTreeMap::from([(room, ReadPosition { seq, unread: 0 })]),
    }
}

/// What a connection asks to add to a room's log: a message (a reply if it has a `target`), or an edit
/// or delete of the message `target`.
pub struct Draft {
    pub room: String,
    pub kind: EntryKind,
    pub text: String,
    pub target: Option<u64>,
    pub client_id: Option<String>,
}

/// A connection the manager accepted, for as long as it is registered: its id, who it is, and its
/// outbox (the welcome already queued, for a JSON one). Dropping it disconnects it, so a connection's task that ends in
/// any way, a panic included, leaves no name, membership or count behind.
pub struct Registration {
    pub id: ConnId,
    pub outbox: Arc<Outbox>,
    /// The name it goes by (`name_key` form) and its person: what a cluster-wide name claim needs.
    pub name_key: String,
    pub person: PersonId,
    manager: Arc<ConnectionManager>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.manager.disconnect(self.id, None);
    }
}

impl ConnectionManager {
    /// Takes the queue bounds and limits from `config`; `sessions` signs the welcome's token.
    pub fn new(config: &Config, sessions: Sessions) -> Self {
        ConnectionManager {
            state: Mutex::new(State {
                registry: Registry::new(),
                rooms: Rooms::new(
                    config.presence_limit,
                    config.queue_frames,
                    config.queue_bytes,
                ),
                closing: false,
                cluster: None,
                room_counts: RoomCounts::default(),
                bans: Bans::default(),
            }),
            sessions,
            limits: Limits {
                max_name_chars: config.max_name_chars,
                max_rooms: config.max_rooms_per_connection,
                max_message_bytes: config.max_message_bytes,
                typing_ttl: config.typing_ttl,
                replay: ReplayLimits::from_config(config),
                recent_capacity: config.history_on_join.max(RECENT_MESSAGES),
                room_create_rate: config.room_create_rate,
            },
            gaps: OnceLock::new(),
        }
    }

    /// Connects this manager to the rest of the server: the gap filler, and the cluster (if any).
    pub fn attach(&self, gaps: GapFiller, cluster: Option<Cluster>) {
        let _ = self.gaps.set(gaps);
        self.state().cluster = cluster;
    }

    fn fill(&self, gap: Option<Gap>) {
        if let (Some(gap), Some(gaps)) = (gap, self.gaps.get()) {
            gaps.request(gap);
        }
    }

    /// Registers a new connection reading `format`, and queues its welcome if that is JSON (see
    /// `Registry::admit` for the name).
    pub fn connect(
        self: &Arc<Self>,
        identity: Identity,
        format: WireFormat,
    ) -> Result<Registration, ChatError> {
        let mut state = self.state();
        if state.closing {
            return Err(ChatError::ShuttingDown);
        }
        // A server-wide ban of the person, or of the name they ask for, refuses them here.
        let person = identity.session.as_ref().map(|s| s.person);
        let wanted = identity
            .chosen
            .as_deref()
            .or(identity.session.as_ref().map(|s| s.name.as_str()))
            .map(name_key)
            .unwrap_or_default();
        if let Some(ban) = state.bans.against(person, &wanted, None) {
            return Err(ChatError::Banned(ban.reason.clone()));
        }
        let counts = state.room_counts.snapshot();
        let (id, record) = state
            .registry
            .admit(identity, format, self.limits.max_name_chars)?;
        if format == WireFormat::Json {
            let welcome = encode(&ServerEvent::Welcome {
                name: record.name.clone(),
                session: self.sessions.issue(record.person, &record.name),
                limits: WelcomeLimits {
                    max_message_bytes: self.limits.max_message_bytes,
                    max_name_chars: self.limits.max_name_chars,
                },
            });
            // A new outbox is empty: its first two frames always fit.
            let _ = record.outbox.send(welcome);
            if let Some(counts) = counts {
                let _ = record.outbox.send(counts);
            }
        }
        counter!(m::CONNECTIONS_ACCEPTED).increment(1);
        gauge!(m::CONNECTIONS).increment(1);
        Ok(Registration {
            id,
            outbox: record.outbox.clone(),
            name_key: name_key(&record.name),
            person: record.person,
            manager: self.clone(),
        })
    }

    /// Starts a join of `room` by `conn` (see `join.rs`). [`Joining::NeedsHistory`]: read the history,
    /// then [`ConnectionManager::finish_join`] (or [`ConnectionManager::abort_join`]).
    pub fn begin_join(
        &self,
        conn: ConnId,
        room: &str,
        after: Option<u64>,
    ) -> Result<Joining, ChatError> {
        let mut state = self.state();
        if state.closing {
            return Err(ChatError::ShuttingDown);
        }
        if let Some(record) = state.registry.get(conn) {
            if let Some(ban) =
                state
                    .bans
                    .against(Some(record.person), &name_key(&record.name), Some(room))
            {
                return Err(ChatError::Banned(ban.reason.clone()));
            }
        }
        let State {
            registry, rooms, ..
        } = &mut *state;
        let joining = join::begin(
            registry,
            rooms,
            conn,
            room,
            after,
            (self.limits.max_rooms, self.limits.replay),
        )?;
        Ok(match joining {
            Begun::Done(completed) => {
                state.deliver(completed);
                Joining::Done
            }
            Begun::NeedsHistory(ticket) => Joining::NeedsHistory(ticket),
        })
    }

    /// Completes a join with the history read for it: sends the `joined` snapshot and subscribes the
    /// connection. A join that would create a room its person may not create now is refused.
    pub fn finish_join(&self, ticket: JoinTicket, replay: Replay) {
        let mut state = self.state();
        let State {
            registry, rooms, ..
        } = &mut *state;
        if join::creates_room(&ticket, &replay) {
            let allowed = join::joiner(registry, &ticket).is_none_or(|person| {
                registry.may_create_room(person, self.limits.room_create_rate)
            });
            if !allowed {
                join::abort(registry, rooms, &ticket);
                let answers = Some(ticket.reference());
                return state.refuse(ticket.conn, &ChatError::TooManyNewRooms, answers);
            }
        }
        let (completed, gap) =
            join::finish(registry, rooms, ticket, replay, self.limits.recent_capacity);
        state.deliver(completed);
        drop(state);
        self.fill(gap);
    }

    /// A join that could not finish (its history could not be read): releases the room and tells the
    /// client.
    pub fn abort_join(&self, ticket: JoinTicket, error: &ChatError) {
        {
            let mut state = self.state();
            let State {
                registry, rooms, ..
            } = &mut *state;
            join::abort(registry, rooms, &ticket);
        }
        self.reject(ticket.conn, error, Some(ticket.reference()));
    }

    /// Stops connection `conn` following `room`.
    pub fn leave_room(&self, conn: ConnId, room: &str) -> Result<(), ChatError> {
        let mut state = self.state();
        let Some(record) = state.registry.get_mut(conn) else {
            return Ok(());
        };
        let joining = record.joining.len();
        record.joining.retain(|j| j != room);
        if record.joining.len() < joining {
            // Its join is still reading history: `finish_join` will see it is no longer wanted.
            return Ok(());
        }
        if !record.rooms.iter().any(|r| r == room) {
            return Err(ChatError::NotJoined(room.to_owned()));
        }
        record.rooms.retain(|r| r != room);
        record.outbox.unsubscribe(room);
        let (person_key, name) = (name_key(&record.name), record.name.clone());
        let lagging = state.rooms.depart(conn, room, &person_key, &name);
        let presence = state.rooms.local_presence(room, &person_key, &name);
        state.tell_cluster(BusEvent::Presence(presence));
        state.disconnect_lagging(lagging);
        Ok(())
    }

    /// Checks that `conn` may add `draft` to its room's log, and returns the entry to store (whether
    /// an edit or delete is its author's is for the store to say: it has the message).
    pub fn prepare_message(&self, conn: ConnId, draft: Draft) -> Result<NewMessage, ChatError> {
        let Draft {
            room,
            kind,
            text,
            target,
            client_id,
        } = draft;
        match kind {
            EntryKind::Delete | EntryKind::Unreact => {}
            EntryKind::React => {
                validate_reaction(&text).map_err(|why| ChatError::BadReaction(why.to_owned()))?
            }
            EntryKind::Message | EntryKind::Edit => {
                if text.trim().is_empty() {
                    return Err(ChatError::EmptyMessage);
                }
                validate_text(&text).map_err(ChatError::BadText)?;
            }
        }
        // No control characters: PostgreSQL's text cannot hold a NUL, and one in a batch would fail
        // the whole transaction (everyone's messages in it).
        if client_id.as_ref().is_some_and(|id| {
            id.is_empty() || id.len() > MAX_CLIENT_ID_BYTES || id.chars().any(char::is_control)
        }) {
            return Err(ChatError::BadClientId);
        }
        let state = self.state();
        let Some(record) = state.registry.get(conn) else {
            return Err(ChatError::ShuttingDown);
        };
        if !record.rooms.contains(&room) {
            return Err(ChatError::NotJoined(room));
        }
        counter!(m::MESSAGES_IN).increment(1);
        Ok(NewMessage {
            room,
            author_id: record.person,
            author: record.name.clone(),
            text: if kind == EntryKind::Delete {
                String::new()
            } else {
                text
            },
            ts: now_ms(),
            client_id,
            kind,
            target,
        })
    }

    /// The room connection `conn` followed first, if it follows any.
    pub fn first_room(&self, conn: ConnId) -> Option<String> {
        self.state()
            .registry
            .get(conn)
            .and_then(|r| r.rooms.first().cloned())
    }

    /// A message is stored (or was already): acknowledge it to its sender and, if new, publish it to
    /// the room. Called by the history writer in sequence order.
    pub fn stored(&self, sender: ConnId, message: &NewMessage, outcome: Stored) {
        let mut state = self.state();
        let (seq, gap) = match outcome {
            Stored::Refused(refusal) => {
                let target = message.target.unwrap_or(0);
                let error = match refusal {
                    Refusal::NotAuthor => ChatError::NotAuthor(target),
                    Refusal::NoSuchMessage => {
                        ChatError::NoSuchMessage(message.room.clone(), target)
                    }
                    Refusal::TooManyReactions => ChatError::BadReaction(format!(
                        "message {target} has {MAX_REACTION_KINDS} different reactions already"
                    )),
                };
                state.refuse(sender, &error, Some(message.reference()));
                return;
            }
            Stored::Duplicate { seq } => (seq, None),
            Stored::New(stored) => {
                let seq = stored.seq;
                state.tell_cluster(BusEvent::Message {
                    room: message.room.clone(),
                    message: stored.clone(),
                });
                let (lagging, gap) = state.rooms.deliver(&message.room, stored);
                state.disconnect_lagging(lagging);
                (seq, gap)
            }
        };
        let ack = ServerEvent::Ack {
            room: message.room.clone(),
            seq,
            client_id: message.client_id.clone(),
        };
        state.tell(sender, &ack);
        drop(state);
        self.fill(gap);
    }

    // ---- What the other nodes of a cluster say (see `bus.rs`)

    /// Takes in one event from node `node`; returns the gaps it opened.
    pub fn apply_bus(&self, node: &str, event: BusEvent) -> Vec<Gap> {
        let mut state = self.state();
        let (lagging, gap) = match event {
            BusEvent::Message { room, message } => state.rooms.deliver(&room, message),
            BusEvent::Presence(record) => (state.rooms.apply_remote(node, &record), None),
            BusEvent::Typing { room, key, name } => {
                let until = Instant::now() + self.limits.typing_ttl;
                (state.rooms.typing(&room, &key, &name, until), None)
            }
            // Read again from the store by the bus task (see `bus.rs`): nothing to do here.
            BusEvent::BansChanged => (Vec::new(), None),
            BusEvent::Read { room, person, seq } => {
                state.tell_person(person, None, &read_position(room, seq));
                (Vec::new(), None)
            }
        };
        state.disconnect_lagging(lagging);
        gap.into_iter().collect()
    }

    /// Node `node` is gone: its people leave.
    pub fn forget_node(&self, node: &str) {
        let mut state = self.state();
        let lagging = state.rooms.forget_node(node);
        state.disconnect_lagging(lagging);
    }

    /// The other nodes' people, read back whole from Redis.
    pub fn replace_remote_presence(&self, records: &[(String, PresenceRecord)]) {
        let mut state = self.state();
        let lagging = state.rooms.replace_remote(records);
        state.disconnect_lagging(lagging);
    }

    /// The nodes whose people are counted here.
    pub fn remote_nodes(&self) -> Vec<String> {
        self.state().rooms.remote_nodes()
    }

    /// Everyone present here, room by room.
    pub fn local_presence(&self) -> Vec<PresenceRecord> {
        self.state().rooms.all_local_presence()
    }

    /// Every name held here, with its person.
    pub fn held_names(&self) -> Vec<(String, PersonId)> {
        self.state().registry.held_names()
    }

    /// The rooms here that follow a sequence, with the `seq` each expects next.
    pub fn sequences(&self) -> Vec<(String, u64)> {
        self.state().rooms.sequences()
    }

    // ---- Gap fills (see `gaps.rs`)

    /// Starts a fill of `room` for `why`: the `seq` to read from, unless there is nothing to fill or
    /// a fill is under way.
    pub fn begin_fill(&self, room: &str, why: Fill) -> Option<u64> {
        self.state().rooms.begin_fill(room, why)
    }

    /// Ends a fill of `room` that read nothing.
    pub fn end_fill(&self, room: &str) {
        self.state().rooms.end_fill(room);
    }

    /// Ends a fill of `room` that read `messages` (from `next` on): delivers them, moving past any
    /// the store no longer has; returns whether a gap is still open.
    pub fn filled(&self, room: &str, next: u64, messages: Vec<ChatMessage>) -> bool {
        let mut state = self.state();
        // The store commits a room's messages in `seq` order, so if its first from `next` on is
        // beyond `next`, the ones before it are gone for good (retention): the sequence goes on from
        // there. Only the store can say so: a message waiting here beyond `next` proves nothing,
        // since the read may have run before `next` was committed (and then it comes on a later
        // read).
        if let Some(first) = messages
            .first()
            .map(|m| m.seq)
            .filter(|first| *first > next)
        {
            state.rooms.skip_to(room, first);
        }
        let mut lagging = Vec::new();
        for message in messages {
            lagging.extend(state.rooms.deliver(room, message).0);
        }
        let (more, _) = state.rooms.start_sequence(room, 0);
        lagging.extend(more);
        let open = state.rooms.end_fill(room).is_some();
        state.disconnect_lagging(lagging);
        open
    }

    /// Connection `conn` read `room` up to `seq`: its person's other connections (here, and through
    /// the other nodes) are told. Returns the person, whose position the caller stores.
    pub fn read(&self, conn: ConnId, room: String, seq: u64) -> Result<PersonId, ChatError> {
        let mut state = self.state();
        let Some(record) = state.registry.get(conn) else {
            return Err(ChatError::ShuttingDown);
        };
        if !record.rooms.contains(&room) {
            return Err(ChatError::NotJoined(room));
        }
        let person = record.person;
        state.tell_person(person, Some(conn), &read_position(room.clone(), seq));
        state.tell_cluster(BusEvent::Read { room, person, seq });
        Ok(person)
    }

    /// Tells the other nodes the bans changed.
    pub fn bans_changed(&self) {
        self.state().tell_cluster(BusEvent::BansChanged);
    }

    /// The operator's bans are now `bans`: whoever is banned from the server is closed (1008), and
    /// whoever follows a room they are banned from leaves it (told with a `banned` error).
    pub fn set_bans(&self, bans: Vec<Ban>) {
        let (out, rooms) = {
            let mut state = self.state();
            state.bans.replace(bans);
            let mut out = Vec::new();
            let mut rooms = Vec::new();
            for (id, record) in state.registry.records_by_id() {
                let key = name_key(&record.name);
                if let Some(ban) = state.bans.against(Some(record.person), &key, None) {
                    out.push((id, ban.reason.clone()));
                    continue;
                }
                for room in &record.rooms {
                    if let Some(ban) = state.bans.against(Some(record.person), &key, Some(room)) {
                        rooms.push((id, room.clone(), ban.reason.clone()));
                    }
                }
            }
            (out, rooms)
        };
        for (id, reason) in out {
            tracing::info!(
                conn = id,
                reason,
                "moderation: a banned connection is closed"
            );
            self.disconnect(id, Some(Kick::BANNED));
        }
        for (id, room, reason) in rooms {
            tracing::info!(
                conn = id,
                room,
                reason,
                "moderation: a banned member leaves a room"
            );
            let _ = self.leave_room(id, &room);
            let answers = FrameRef {
                kind: crate::protocol::FrameKind::Join,
                room: Some(room),
                client_id: None,
            };
            self.reject(id, &ChatError::Banned(reason), Some(answers));
        }
    }

    /// The person going by `name` here, if anyone does.
    pub fn person_named(&self, name: &str) -> Option<PersonId> {
        let key = name_key(name);
        self.state()
            .registry
            .held_names()
            .into_iter()
            .find_map(|(held, person)| (held == key).then_some(person))
    }

    /// Tells connection `conn` `event` (if it reads JSON).
    pub fn tell(&self, conn: ConnId, event: &ServerEvent) {
        self.state().tell(conn, event);
    }

    /// Connection `conn` says its person is typing in `room`: announced if they were not already.
    pub fn typing(&self, conn: ConnId, room: &str) -> Result<(), ChatError> {
        let mut state = self.state();
        let Some(record) = state.registry.get(conn) else {
            return Ok(());
        };
        if !record.rooms.iter().any(|r| r == room) {
            return Err(ChatError::NotJoined(room.to_owned()));
        }
        let (key, name) = (name_key(&record.name), record.name.clone());
        let until = Instant::now() + self.limits.typing_ttl;
        let lagging = state.rooms.typing(room, &key, &name, until);
        state.tell_cluster(BusEvent::Typing {
            room: room.to_owned(),
            key,
            name,
        });
        state.disconnect_lagging(lagging);
        Ok(())
    }

    /// Forgets typing notices that ran out, and tells their rooms.
    pub fn expire_typing(&self, now: Instant) {
        let mut state = self.state();
        let lagging = state.rooms.expire_typing(now);
        state.disconnect_lagging(lagging);
    }

    /// Drops `room`'s in-memory recent messages: retention deleted some of its messages from the store.
    pub fn forget_recent_in(&self, room: &str) {
        self.state().rooms.forget_recent_in(room);
    }

    /// Tells connection `to` (only) why a frame it sent (the one `answers` names, if known) was refused;
    /// closes it instead if it reads the original format, which has no words for that.
    pub fn reject(&self, to: ConnId, error: &ChatError, answers: Option<FrameRef>) {
        self.state().refuse(to, error, answers);
    }

    /// Forgets connection `id`, closing it with `kick` if it says why, and tells its rooms if its person
    /// left them. Idempotent: a connection already gone is not announced twice.
    pub fn disconnect(&self, id: ConnId, kick: Option<Kick>) {
        self.state().remove(id, kick);
    }

    /// Shutdown: refuses every later connection and closes everyone with 1001. No leave events: everyone
    /// goes.
    pub fn shut_down(&self) {
        let mut state = self.state();
        state.closing = true;
        let records = state.registry.clear();
        state.rooms.clear();
        gauge!(m::CONNECTIONS).decrement(records.len() as f64);
        for record in records {
            record.outbox.kick(Kick::SHUTDOWN);
        }
    }

    /// Asks every connection to check on its client's heartbeat (see `server::run`).
    pub fn nudge_all(&self) {
        for record in self.state().registry.records() {
            record.outbox.nudge();
        }
    }

    /// Tells every page which rooms' online counts changed since it was last told (called on a timer:
    /// see `room_counts.rs`). One frame, encoded once, for every JSON connection.
    pub fn push_room_counts(&self) {
        let mut state = self.state();
        let counts = state.rooms.counts();
        let Some(frame) = state.room_counts.changes(counts) else {
            return;
        };
        state.queue_to_each(|_, _| true, || frame);
    }

    /// Frames waiting for all connections together (for the metrics).
    pub fn queue_depth(&self) -> u64 {
        self.state()
            .registry
            .records()
            .map(|r| r.outbox.backlog())
            .sum()
    }

    /// How many connections are registered now.
    pub fn connection_count(&self) -> usize {
        self.state().registry.len()
    }

    /// The people in `room` now, in the order they came.
    pub fn online(&self, room: &str) -> Vec<String> {
        self.state().rooms.online(room)
    }

    /// Every room with people in it, and how many.
    pub fn room_counts(&self) -> Vec<(String, usize)> {
        self.state().rooms.counts()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug, but it must not take every later connection down
        // with it: the state's invariants hold between statements, so it is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Hands a completed join to its connection, then disconnects whoever the room's news left behind.
    /// Tells the other nodes, if there are any.
    fn tell_cluster(&self, event: BusEvent) {
        if let Some(cluster) = &self.cluster {
            cluster.publish(event);
        }
    }

    fn deliver(&mut self, completed: Completed) {
        if let Some(joiner) = completed.joiner {
            let mut full = false;
            for frame in joiner.frames {
                full |= joiner.outbox.send(frame).is_err();
            }
            joiner.outbox.subscribe(joiner.subscription);
            if full {
                self.remove(joiner.conn, Some(Kick::TOO_SLOW));
            }
        }
        if let Some(presence) = completed.presence {
            self.tell_cluster(BusEvent::Presence(presence));
        }
        self.disconnect_lagging(completed.lagging);
    }

    /// Queues `event` for connection `to` alone, if it reads JSON: the original chat's format has no
    /// frames for one connection.
    fn tell(&mut self, to: ConnId, event: &ServerEvent) {
        if self
            .registry
            .get(to)
            .is_some_and(|r| r.format == WireFormat::Json)
        {
            self.queue(to, encode(event));
        }
    }

    /// Tells every JSON connection of `person` here (but `except`) `event`, encoded once.
    fn tell_person(&mut self, person: PersonId, except: Option<ConnId>, event: &ServerEvent) {
        self.queue_to_each(
            |id, r| r.person == person && Some(id) != except,
            || encode(event),
        );
    }

    /// Queues one frame for every JSON connection `picked` chooses; `frame` makes it (encoded once,
    /// and only if some connection is chosen).
    fn queue_to_each(
        &mut self,
        picked: impl Fn(ConnId, &Record) -> bool,
        frame: impl FnOnce() -> Frame,
    ) {
        let to: Vec<ConnId> = self
            .registry
            .records_by_id()
            .filter(|(id, r)| r.format == WireFormat::Json && picked(*id, r))
            .map(|(id, _)| id)
            .collect();
        if to.is_empty() {
            return;
        }
        let frame = frame();
        for id in to {
            self.queue(id, frame.clone());
        }
    }

    /// Tells connection `to` why a frame it sent was refused (an `error` event); closes a connection on
    /// the original format instead, with the error's close code and reason (see [`ChatError::kick`]).
    fn refuse(&mut self, to: ConnId, error: &ChatError, answers: Option<FrameRef>) {
        counter!(m::REJECTED, "reason" => error.label()).increment(1);
        match self.registry.get(to).map(|r| r.format) {
            Some(WireFormat::Json) => self.queue(to, encode(&error.event(answers))),
            Some(WireFormat::Legacy) => self.remove(to, Some(error.kick())),
            None => {}
        }
    }

    /// Queues a personal frame; a connection whose personal queue is full is not reading: too slow.
    fn queue(&mut self, to: ConnId, frame: Frame) {
        if self.registry.send(to, frame).is_err() {
            self.remove(to, Some(Kick::TOO_SLOW));
        }
    }

    fn disconnect_lagging(&mut self, lagging: Lagging) {
        for id in lagging {
            self.remove(id, Some(Kick::TOO_SLOW));
        }
    }

    /// Removes a connection, kicks it if `kick` says why, and takes it out of its rooms. Its leaving
    /// may leave other members behind in turn; they are removed the same way, from a work list rather
    /// than by recursion (each removal takes one connection away, so the list runs out).
    fn remove(&mut self, id: ConnId, kick: Option<Kick>) {
        let mut work = vec![(id, kick)];
        while let Some((id, kick)) = work.pop() {
            let Some(record) = self.registry.remove(id) else {
                continue;
            };
            gauge!(m::CONNECTIONS).decrement(1);
            if let Some(kick) = kick {
                tracing::info!(conn = id, name = %record.name, reason = kick.reason, "disconnecting");
                if kick == Kick::TOO_SLOW {
                    counter!(m::SLOW_CONSUMERS).increment(1);
                }
                record.outbox.kick(kick);
            }
            // Joins under way find the connection gone when they complete, and release their rooms.
            let key = name_key(&record.name);
            for room in &record.rooms {
                let lagging = self.rooms.depart(id, room, &key, &record.name);
                work.extend(lagging.into_iter().map(|id| (id, Some(Kick::TOO_SLOW))));
                let presence = self.rooms.local_presence(room, &key, &record.name);
                self.tell_cluster(BusEvent::Presence(presence));
            }
            if !self.registry.holds(&key) {
                if let Some(cluster) = &self.cluster {
                    cluster.release_name(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::ChatMessage;

    fn manager() -> Arc<ConnectionManager> {
        with(Config::default())
    }

    fn with(config: Config) -> Arc<ConnectionManager> {
        Arc::new(ConnectionManager::new(&config, Sessions::ephemeral()))
    }

    fn connect(manager: &Arc<ConnectionManager>, name: &str) -> Registration {
        connect_as(manager, name, WireFormat::Json)
    }

    fn connect_as(
        manager: &Arc<ConnectionManager>,
        name: &str,
        format: WireFormat,
    ) -> Registration {
        manager
            .connect(
                Identity {
                    session: None,
                    chosen: Some(name.into()),
                    legacy: format == WireFormat::Legacy,
                },
                format,
            )
            .unwrap()
    }

    /// Everything waiting for a connection, decoded.
    fn drain(connected: &Registration) -> Vec<ServerEvent> {
        let mut batch: Vec<Frame> = Vec::new();
        connected.outbox.take(&mut batch, usize::MAX).unwrap();
        batch
            .iter()
            .map(|frame| {
                serde_json::from_slice(crate::server::websocket::frame_payload(frame)).unwrap()
            })
            .collect()
    }

    /// A join that must read the store.
    fn ticket(manager: &ConnectionManager, conn: &Registration, after: Option<u64>) -> JoinTicket {
        match manager.begin_join(conn.id, "r", after).unwrap() {
            Joining::NeedsHistory(ticket) => ticket,
            Joining::Done => unreachable!("served from memory"),
        }
    }

    /// Joins "r", with an empty store behind it.
    fn join(manager: &ConnectionManager, conn: &Registration) {
        if let Joining::NeedsHistory(ticket) = manager.begin_join(conn.id, "r", None).unwrap() {
            manager.finish_join(ticket, Replay::default());
        }
    }

    fn draft(text: &str) -> Draft {
        Draft {
            room: "r".into(),
            kind: EntryKind::Message,
            text: text.into(),
            target: None,
            client_id: None,
        }
    }

    fn store_message(manager: &ConnectionManager, from: &Registration, seq: u64) -> ChatMessage {
        let new = manager
            .prepare_message(from.id, draft(&format!("m{seq}")))
            .unwrap();
        let stored = ChatMessage {
            seq,
            from: new.author.clone(),
            text: new.text.clone(),
            ts: new.ts,
            ..ChatMessage::default()
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

    /// Everything waiting for a connection, as it would be written.
    fn frames(connected: &Registration) -> Vec<Frame> {
        let mut batch: Vec<Frame> = Vec::new();
        connected.outbox.take(&mut batch, usize::MAX).unwrap();
        batch
    }

    fn lines(frames: &[Frame]) -> Vec<&str> {
        frames
            .iter()
            .map(|f| std::str::from_utf8(crate::server::websocket::frame_payload(f)).unwrap())
            .collect()
    }

    /// What a reader of `format` could take from `room`'s whole log now.
    fn log_frames(manager: &ConnectionManager, room: &str, format: WireFormat) -> usize {
        let log = manager.state().rooms.get_mut(room).unwrap().log().clone();
        let mut cursor = 0;
        log.read(
            &mut cursor,
            None,
            format,
            &mut Vec::new(),
            usize::MAX,
            |_, _| true,
        )
        .unwrap()
    }

    #[test]
    fn legacy_members_read_the_original_lines_encoded_once_for_all_of_them() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        store_message(&manager, &ann, 1);
        assert_eq!(
            log_frames(&manager, "r", WireFormat::Legacy),
            0,
            "no legacy member yet: nothing is encoded for one"
        );
        let seven = connect_as(&manager, "Client #7", WireFormat::Legacy);
        assert!(
            matches!(manager.begin_join(seven.id, "r", None), Ok(Joining::Done)),
            "a legacy join needs no history"
        );
        let eight = connect_as(&manager, "Client #8", WireFormat::Legacy);
        join(&manager, &eight);
        drain(&ann);
        store_message(&manager, &seven, 2);
        store_message(&manager, &ann, 3);
        drop(ann);

        let (seven, eight) = (frames(&seven), frames(&eight));
        // No welcome, no history, no arrivals, no acks: what was said from their arrival on, and leaves.
        assert_eq!(
            lines(&seven),
            ["Client #7 says: m2", "ann says: m3", "ann left the chat"]
        );
        assert_eq!(lines(&eight), lines(&seven));
        for (a, b) in seven.iter().zip(&eight) {
            assert_eq!(a.as_ptr(), b.as_ptr(), "one frame for every legacy reader");
        }
        assert_eq!(log_frames(&manager, "r", WireFormat::Legacy), 3);
    }

    #[test]
    fn a_refusal_closes_a_legacy_connection_instead_of_telling_it() {
        let manager = manager();
        let seven = connect_as(&manager, "Client #7", WireFormat::Legacy);
        join(&manager, &seven);
        manager.reject(seven.id, &ChatError::RateLimited, None);
        assert_eq!(
            seven.outbox.kick_ordered(),
            Some(ChatError::RateLimited.kick())
        );
        assert!(frames(&seven).is_empty(), "no error event");
        assert_eq!(manager.connection_count(), 0);
    }

    #[test]
    fn a_message_stored_while_a_join_reads_history_shows_exactly_once() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        drain(&ann);

        // Bob's join starts (and must read the store); message 1 is stored and published while his
        // history is being read, and the read sees it: the replay has it, and the live copy is skipped.
        manager.forget_recent_in("r");
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
        manager.forget_recent_in("r");
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
    fn a_store_read_under_way_while_retention_prunes_starts_no_cache() {
        let manager = with(Config::default());
        let message = |seq: u64| ChatMessage {
            seq,
            from: "ann".into(),
            text: format!("m{seq}"),
            ts: 0,
            client_id: None,
            ..ChatMessage::default()
        };
        // Ann's join reads messages 1..=3; retention deletes 1..=2 before her read comes back.
        let ann = connect(&manager, "ann");
        let read = ticket(&manager, &ann, None);
        manager.forget_recent_in("r");
        let before_pruning = Replay {
            messages: (1..=3).map(message).collect(),
            oldest_seq: 1,
            last_seq: 3,
            ..Replay::default()
        };
        manager.finish_join(read, before_pruning);
        // So her read does not become the room's memory: the next join reads the store again...
        let bob = connect(&manager, "bob");
        let read = ticket(&manager, &bob, None);
        let after_pruning = Replay {
            messages: vec![message(3)],
            oldest_seq: 3,
            last_seq: 3,
            ..Replay::default()
        };
        manager.finish_join(read, after_pruning);
        // ...and that read, current, does.
        let carl = connect(&manager, "carl");
        assert!(matches!(
            manager.begin_join(carl.id, "r", None),
            Ok(Joining::Done)
        ));
    }

    fn bus_message(seq: u64) -> BusEvent {
        BusEvent::Message {
            room: "r".into(),
            message: ChatMessage {
                seq,
                from: "bob".into(),
                text: format!("m{seq}"),
                ts: 0,
                client_id: None,
                ..ChatMessage::default()
            },
        }
    }

    fn stored_copy(seq: u64) -> ChatMessage {
        match bus_message(seq) {
            BusEvent::Message { message, .. } => message,
            _ => unreachable!(),
        }
    }

    #[test]
    fn messages_take_their_turn_by_seq_whatever_order_they_arrive_in() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        drain(&ann);
        // 2 and 3 come before 1: they wait, and the gap is reported once.
        let gap = Gap {
            room: "r".into(),
            next: 1,
        };
        assert_eq!(manager.apply_bus("b", bus_message(2)), [gap]);
        manager.apply_bus("b", bus_message(3));
        assert!(texts(&drain(&ann)).is_empty());
        manager.apply_bus("b", bus_message(1));
        assert_eq!(texts(&drain(&ann)), ["live m1", "live m2", "live m3"]);
        // A copy of one delivered already changes nothing.
        assert!(manager.apply_bus("b", bus_message(2)).is_empty());
        assert!(drain(&ann).is_empty());

        // 5 waits for 4, which the bus lost: the fill reads both from the store.
        manager.apply_bus("b", bus_message(5));
        assert_eq!(manager.begin_fill("r", Fill::Gap), Some(4));
        assert_eq!(
            manager.begin_fill("r", Fill::Behind),
            None,
            "one fill at a time"
        );
        assert!(!manager.filled("r", 4, vec![stored_copy(4), stored_copy(5)]));
        assert_eq!(texts(&drain(&ann)), ["live m4", "live m5"]);

        // Retention deleted 6 before anyone here saw it: the store starts at 7, and so does the room.
        manager.apply_bus("b", bus_message(8));
        let next = manager.begin_fill("r", Fill::Gap).unwrap();
        assert!(!manager.filled("r", next, vec![stored_copy(7), stored_copy(8)]));
        assert_eq!(texts(&drain(&ann)), ["live m7", "live m8"]);
    }

    #[test]
    fn a_fill_that_read_the_store_before_the_missing_message_was_stored_skips_nothing() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        drain(&ann);
        // The fill of 1 reads the store before 1 is committed, and finds nothing; meanwhile 2 came
        // over the bus. 1 is not gone (the store commits a room's messages in `seq` order): the gap
        // stays open, and the next read finds it.
        manager.apply_bus("b", bus_message(2));
        let next = manager.begin_fill("r", Fill::Gap).unwrap();
        assert!(
            manager.filled("r", next, Vec::new()),
            "the gap is still open"
        );
        assert!(texts(&drain(&ann)).is_empty());
        let next = manager.begin_fill("r", Fill::Gap).unwrap();
        assert_eq!(next, 1);
        assert!(!manager.filled("r", next, vec![stored_copy(1), stored_copy(2)]));
        assert_eq!(texts(&drain(&ann)), ["live m1", "live m2"]);
    }

    #[test]
    fn a_gap_that_closed_by_itself_is_not_read_from_the_store() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        manager.apply_bus("b", bus_message(2));
        manager.apply_bus("b", bus_message(1));
        assert_eq!(manager.begin_fill("r", Fill::Gap), None, "nothing waits");
        // A sync found the store ahead: that fill reads whatever waits or not.
        assert_eq!(manager.begin_fill("r", Fill::Behind), Some(3));
    }

    #[test]
    fn messages_that_come_while_a_room_is_first_read_wait_for_the_read() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        // Ann's join reads the store, which has 1..=2; meanwhile 3 arrives (and 2 again).
        let read = ticket(&manager, &ann, None);
        manager.apply_bus("b", bus_message(3));
        manager.apply_bus("b", bus_message(2));
        manager.finish_join(
            read,
            Replay {
                messages: vec![stored_copy(1), stored_copy(2)],
                oldest_seq: 1,
                last_seq: 2,
                ..Replay::default()
            },
        );
        assert_eq!(texts(&drain(&ann)), ["replay m1", "replay m2", "live m3"]);
    }

    #[test]
    fn other_nodes_people_count_in_presence_and_leave_with_their_node() {
        use crate::server::presence::PresenceRecord;
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        drain(&ann);
        let bob_with = |conns: usize| {
            BusEvent::Presence(PresenceRecord {
                room: "r".into(),
                key: "bob".into(),
                name: "Bob".into(),
                conns,
                since: 1,
            })
        };
        manager.apply_bus("b", bob_with(1));
        manager.apply_bus("c", bob_with(2));
        let joins: Vec<ServerEvent> = drain(&ann);
        assert_eq!(joins.len(), 1, "bob arrives once: {joins:?}");
        assert!(matches!(&joins[0], ServerEvent::Join { name, .. } if name == "Bob"));
        assert_eq!(manager.online("r"), ["Bob", "ann"]);
        assert_eq!(manager.room_counts(), [("r".to_string(), 2)]);
        // Node b dies: bob is still here through c. Then c dies too.
        manager.forget_node("b");
        assert!(drain(&ann).is_empty());
        manager.forget_node("c");
        assert!(matches!(&drain(&ann)[..], [ServerEvent::Leave { name, .. }] if name == "Bob"));
        assert_eq!(manager.online("r"), ["ann"]);
    }

    #[test]
    fn a_reader_left_behind_is_disconnected_alone() {
        let manager = with(Config {
            queue_frames: 4,
            ..Config::default()
        });
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
            manager.prepare_message(ann.id, draft("x")).err(),
            Some(ChatError::NotJoined("r".into()))
        );
        join(&manager, &ann);
        assert_eq!(manager.room_counts(), [("r".to_string(), 1)]);
        drop(ann);
        assert!(manager.room_counts().is_empty());
    }

    #[test]
    fn a_client_id_is_short_and_has_no_control_characters() {
        let manager = manager();
        let ann = connect(&manager, "ann");
        join(&manager, &ann);
        let id_of = |id: &str| {
            manager
                .prepare_message(
                    ann.id,
                    Draft {
                        client_id: Some(id.into()),
                        ..draft("x")
                    },
                )
                .map(|new| new.client_id)
        };
        assert_eq!(id_of("c-1 é"), Ok(Some("c-1 é".into())));
        assert_eq!(id_of(&"x".repeat(MAX_CLIENT_ID_BYTES)).map(|_| ()), Ok(()));
        for bad in [
            "",
            &"x".repeat(MAX_CLIENT_ID_BYTES + 1),
            "a\0b",
            "tab\t",
            "\u{85}",
        ] {
            assert_eq!(id_of(bad), Err(ChatError::BadClientId), "{bad:?}");
        }
    }

    /// Regression: completing a join published the joiner's arrival after releasing the room's hold;
    /// when that arrival left the room's only other member behind (disconnected as too slow), the room
    /// was dropped under the joiner, who then never got `joined`, and whose next typing notice hit a
    /// missing room (a panic, which leaked the connection).
    #[test]
    fn a_join_whose_arrival_drops_the_last_member_still_completes() {
        let manager = with(Config {
            queue_frames: 2,
            ..Config::default()
        });
        let slow = connect(&manager, "slow");
        join(&manager, &slow);
        // A message fills the two-frame log (slow does not read); bob's join must read the store.
        store_message(&manager, &slow, 1);
        manager.forget_recent_in("r");
        let bob = connect(&manager, "bob");
        let ticket = ticket(&manager, &bob, None);
        drain(&bob);
        // Bob's arrival pushes slow's cursor out of the two-frame log: slow is dropped.
        manager.finish_join(ticket, Replay::default());
        assert_eq!(slow.outbox.kick_ordered(), Some(Kick::TOO_SLOW));
        let events = drain(&bob);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Joined { room, .. } if room == "r")),
            "bob is told he joined: {events:?}"
        );
        assert_eq!(manager.online("r"), ["bob"]);
        assert_eq!(manager.typing(bob.id, "r"), Ok(()));
        assert!(
            matches!(&drain(&bob)[..], [ServerEvent::Typing { names, .. }] if names == &["bob"])
        );
    }

    #[tokio::test]
    async fn a_connection_whose_task_panics_is_still_disconnected() {
        let manager = manager();
        let registration = connect(&manager, "ann");
        join(&manager, &registration);
        assert_eq!(manager.connection_count(), 1);
        let task = tokio::spawn(async move {
            let _registration = registration;
            tokio::task::yield_now().await;
            panic!("a bug somewhere in a connection's task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(manager.connection_count(), 0);
        assert!(manager.online("r").is_empty());
        // The name is free again.
        let again = connect(&manager, "ann");
        assert!(matches!(&drain(&again)[0], ServerEvent::Welcome { name, .. } if name == "ann"));
    }

    #[test]
    fn room_creation_is_limited_per_person() {
        let manager = with(Config {
            room_create_rate: 2.0,
            ..Config::default()
        });
        let ann = connect(&manager, "ann");
        let mut refused = Vec::new();
        for room in ["a", "b", "c"] {
            let Joining::NeedsHistory(ticket) = manager.begin_join(ann.id, room, None).unwrap()
            else {
                unreachable!("a new room has no recent messages")
            };
            manager.finish_join(ticket, Replay::default());
            for event in drain(&ann) {
                if let ServerEvent::Error { code, answers, .. } = event {
                    refused.push((code, answers.and_then(|a| a.room)));
                }
            }
        }
        assert_eq!(
            refused,
            [(
                crate::protocol::ErrorCode::TooManyNewRooms,
                Some("c".to_owned())
            )]
        );
        // A room with history is not a new one.
        let Joining::NeedsHistory(ticket) = manager.begin_join(ann.id, "old", None).unwrap() else {
            unreachable!("no recent messages")
        };
        let history = Replay {
            last_seq: 7,
            ..Replay::default()
        };
        manager.finish_join(ticket, history);
        assert_eq!(manager.online("old"), ["ann"]);
    }
}
