//! Rooms: who follows each one (its members, one per connection), who is present (one per person),
//! who is typing, its in-memory newest messages, and its fan-out log, which every event of the room is
//! appended to, encoded once per wire format its members read.
//!
//! Plain data behind the manager's lock (see `manager.rs`). Appending may leave a member behind the
//! log's window; such members are not removed here (that touches the registry) but returned as
//! [`Lagging`], and the manager disconnects them.
//!
//! **Message order.** Messages reach a room's log through [`Rooms::deliver`] only, in `seq` order with
//! no gaps: a message that arrives ahead of its turn (in a cluster, another node's message may come
//! later over the bus, or be lost there) waits in the room until the ones before it arrive, and the
//! caller is told of the [`Gap`], to fill it from the store after a short wait. On a single node the
//! history writer delivers every message in order, so nothing ever waits.
//!
//! **Presence** counts this node's connections, plus the people other nodes of a cluster report
//! ([`RemotePresence`]): a person's join is announced when they appear in the room anywhere, their
//! leave when they are gone everywhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use metrics::counter;

use super::clock::now_ms;
use super::fanout::{Encoded, FanoutLog};
use super::frame::{encode, encode_legacy, WireFormat};
use super::metrics as m;
use super::outbox::{Outbox, Subscription};
use super::presence::{Change, PresenceRecord, RemotePresence};
use super::recent::Recent;
use super::registry::ConnId;
use crate::protocol::{ChatMessage, EntryKind, ServerEvent};

/// Members an append left behind the room's log: too slow, to be disconnected by the caller.
pub(super) type Lagging = Vec<ConnId>;

/// Most messages, and bytes of them, a room holds back waiting for an earlier one; past either, the
/// highest are dropped (the gap fill reads them from the store again).
const MAX_AHEAD: usize = 1024;
const MAX_AHEAD_BYTES: usize = 1024 * 1024;

/// Messages that came before their turn, by `seq`, and roughly what they hold.
#[derive(Default)]
struct Ahead {
    messages: BTreeMap<u64, ChatMessage>,
    bytes: usize,
}

impl Ahead {
    fn size(message: &ChatMessage) -> usize {
        message.text.len()
            + message.from.len()
            + message.client_id.as_ref().map_or(0, String::len)
            + 64
    }

    /// Keeps `message`, then drops the highest while over either bound (never the lowest one).
    fn insert(&mut self, message: ChatMessage) {
        self.bytes += Self::size(&message);
        if let Some(old) = self.messages.insert(message.seq, message) {
            self.bytes = self.bytes.saturating_sub(Self::size(&old));
        }
        while self.messages.len() > 1
            && (self.messages.len() > MAX_AHEAD || self.bytes > MAX_AHEAD_BYTES)
        {
            if let Some((_, dropped)) = self.messages.pop_last() {
                self.bytes = self.bytes.saturating_sub(Self::size(&dropped));
            }
        }
    }

    fn first(&self) -> Option<u64> {
        self.messages.first_key_value().map(|(seq, _)| *seq)
    }

    fn take(&mut self, seq: u64) -> Option<ChatMessage> {
        let message = self.messages.remove(&seq)?;
        self.bytes = self.bytes.saturating_sub(Self::size(&message));
        Some(message)
    }

    /// Forgets everything below `seq` (delivered already).
    fn drop_below(&mut self, seq: u64) {
        while let Some(first) = self.first().filter(|first| *first < seq) {
            self.take(first);
        }
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// A room is missing messages from `next` on, while later ones wait: read them from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub room: String,
    pub next: u64,
}

/// Why a room's sequence is to be read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Messages wait behind a missing one: read only if they still do (the missing one may have come
    /// meanwhile).
    Gap,
    /// The store is ahead of the room (a sync found messages the bus lost at the end of a burst,
    /// which leave nothing waiting): read whatever waits.
    Behind,
}

pub(super) struct Rooms {
    /// Rooms with members, or with a join under way.
    rooms: HashMap<String, Room>,
    /// Orders people who arrived in the same millisecond.
    next_arrival: u64,
    /// Who is in each room through the other nodes of a cluster.
    remote: RemotePresence,
    /// Joins and leaves are announced only in rooms up to this size (see `Config::presence_limit`).
    presence_limit: usize,
    /// Each room's log bounds (`--queue-frames`, `--queue-bytes`).
    log_frames: usize,
    log_bytes: usize,
}

pub(super) struct Room {
    log: Arc<FanoutLog>,
    members: BTreeMap<ConnId, Member>,
    /// Members reading [`WireFormat::Legacy`]: while there are any, events get that format's frame too.
    legacy_members: usize,
    /// Who is here through this node, by `name_key`: when they arrived and through how many
    /// connections.
    present: HashMap<String, Presence>,
    /// Display names by arrival (ms, then order): the order `joined` snapshots list people in.
    arrivals: BTreeMap<(u64, u64), String>,
    /// Who is typing, by `name_key`: display name and when the notice runs out.
    typing: HashMap<String, (String, Instant)>,
    /// Joins under way: the room must outlive them even with no members.
    pending_joins: usize,
    /// Messages published so far (see `join::JoinTicket`).
    pub published: u64,
    /// The newest messages, once known (see `recent.rs`).
    pub recent: Option<Recent>,
    /// The sequence number the log takes next; unknown until the first join's history read says
    /// where the room stands.
    next_seq: Option<u64>,
    /// Messages that came before their turn, by `seq`.
    ahead: Ahead,
    /// A gap fill is under way (at most one per room).
    filling: bool,
}

struct Member {
    outbox: Arc<Outbox>,
    subscription: Arc<Subscription>,
    format: WireFormat,
}

struct Presence {
    arrival: (u64, u64),
    conns: usize,
}

/// A new member, as [`Rooms::arrive`] takes it.
pub(super) struct Arrival<'a> {
    pub conn: ConnId,
    pub outbox: Arc<Outbox>,
    pub person_key: &'a str,
    pub name: &'a str,
    pub format: WireFormat,
    /// Where in the log its subscription starts (a [`WireFormat::Legacy`] one: at its arrival).
    pub start: u64,
    /// The highest message sequence number its replay gave it.
    pub delivered_seq: u64,
}

/// What a new member is told about the room: the people in it and who is typing.
pub(super) struct Snapshot {
    pub online: Vec<String>,
    pub online_count: usize,
    pub typing: Vec<String>,
    pub subscription: Arc<Subscription>,
}

impl Rooms {
    pub fn new(presence_limit: usize, log_frames: usize, log_bytes: usize) -> Self {
        Rooms {
            rooms: HashMap::new(),
            next_arrival: 0,
            remote: RemotePresence::default(),
            presence_limit,
            log_frames,
            log_bytes,
        }
    }

    pub fn get_mut(&mut self, room: &str) -> Option<&mut Room> {
        self.rooms.get_mut(room)
    }

    /// The room, held open for a join under way (created if no one is in it).
    pub fn hold(&mut self, room: &str) -> &mut Room {
        let (frames, bytes) = (self.log_frames, self.log_bytes);
        let entry = self.rooms.entry(room.to_owned()).or_insert_with(|| Room {
            log: Arc::new(FanoutLog::new(frames, bytes)),
            members: BTreeMap::new(),
            legacy_members: 0,
            present: HashMap::new(),
            arrivals: BTreeMap::new(),
            typing: HashMap::new(),
            pending_joins: 0,
            published: 0,
            recent: None,
            next_seq: None,
            ahead: Ahead::default(),
            filling: false,
        });
        entry.pending_joins += 1;
        entry
    }

    /// A join under way ended without the connection becoming a member: releases its hold.
    pub fn release(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.pending_joins = r.pending_joins.saturating_sub(1);
        }
        self.drop_if_unused(room);
    }

    /// Makes a held join a member: subscribes it, counts its person present (announcing them on their
    /// first connection here, in a small enough room), then releases the join's hold. The member is in
    /// before anything is published and the hold goes after, so the room cannot be dropped under the
    /// joiner even if the announcement leaves every other member behind.
    pub fn arrive(&mut self, room: &str, arrival: Arrival<'_>) -> Option<(Snapshot, Lagging)> {
        let presence_limit = self.presence_limit;
        let here_elsewhere = self.remote.is_present(room, arrival.person_key);
        let r = self.rooms.get_mut(room)?;
        let first_here = !r.present.contains_key(arrival.person_key);
        if first_here {
            let order = (now_ms(), self.next_arrival);
            self.next_arrival += 1;
            r.present.insert(
                arrival.person_key.to_owned(),
                Presence {
                    arrival: order,
                    conns: 0,
                },
            );
            r.arrivals.insert(order, arrival.name.to_owned());
        }
        if let Some(presence) = r.present.get_mut(arrival.person_key) {
            presence.conns += 1;
        }
        let (online, online_count) = Self::people(r, &self.remote, room, presence_limit.max(1));
        let typing: Vec<String> = r.typing.values().map(|(n, _)| n.clone()).collect();
        // Taken before the announcement below: the member starts reading where its join began, and
        // presence news from here on is news to it (what came before is in its snapshot).
        let announce = first_here && !here_elsewhere && online_count <= presence_limit;
        let live_from = r.log.head() + u64::from(announce);
        // The original chat showed what was said from the moment one connected, nothing earlier; and
        // the room encodes the legacy format only while it has members reading it (see `publish`), so
        // entries from before this arrival may have no such frame: a legacy member starts here.
        let start = match arrival.format {
            WireFormat::Json => arrival.start,
            WireFormat::Legacy => r.log.head(),
        };
        let subscription = Arc::new(Subscription::new(
            room.to_owned(),
            r.log.clone(),
            arrival.format,
            start,
            live_from,
            arrival.delivered_seq,
        ));
        let replaced = r.members.insert(
            arrival.conn,
            Member {
                outbox: arrival.outbox,
                subscription: subscription.clone(),
                format: arrival.format,
            },
        );
        if arrival.format == WireFormat::Legacy && replaced.is_none() {
            r.legacy_members += 1;
        }
        let lagging = if announce {
            let join = ServerEvent::Join {
                room: room.to_owned(),
                name: arrival.name.to_owned(),
                ts: now_ms(),
            };
            self.publish(room, &join, 0)
        } else {
            Vec::new()
        };
        self.release(room);
        Some((
            Snapshot {
                online,
                online_count,
                typing,
                subscription,
            },
            lagging,
        ))
    }

    /// Takes member `conn` (whose person has `person_key`) out of `room`, announcing the person's leave
    /// if it was their last connection there and the room is small enough (`--presence-limit`).
    pub fn depart(&mut self, conn: ConnId, room: &str, person_key: &str, name: &str) -> Lagging {
        let presence_limit = self.presence_limit;
        let here_elsewhere = self.remote.is_present(room, person_key);
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if r.members
            .remove(&conn)
            .is_some_and(|m| m.format == WireFormat::Legacy)
        {
            r.legacy_members -= 1;
        }
        let mut lagging = Vec::new();
        if let Some(presence) = r.present.get_mut(person_key) {
            presence.conns = presence.conns.saturating_sub(1);
            if presence.conns == 0 {
                let arrival = presence.arrival;
                r.present.remove(person_key);
                r.arrivals.remove(&arrival);
                let stopped_typing = !here_elsewhere && r.typing.remove(person_key).is_some();
                if !here_elsewhere && r.present.len() < presence_limit {
                    let leave = ServerEvent::Leave {
                        room: room.to_owned(),
                        name: name.to_owned(),
                        ts: now_ms(),
                    };
                    lagging.extend(self.publish(room, &leave, 0));
                }
                if stopped_typing {
                    lagging.extend(self.publish_typing(room));
                }
            }
        }
        self.drop_if_unused(room);
        lagging
    }

    /// Serializes `event` once per wire format its members read and appends it to `room`'s log
    /// (`message_seq`: the message's sequence number, or 0), then wakes the members. Returns the members
    /// it left behind (their cursor is now below the oldest frame kept).
    pub fn publish(&mut self, room: &str, event: &ServerEvent, message_seq: u64) -> Lagging {
        let Some(r) = self.rooms.get(room) else {
            // No one follows the room: a joiner will read the message from the store.
            return Vec::new();
        };
        // Both formats are encoded here, eagerly, rather than the legacy line lazily by its first
        // reader: here the event is at hand (a reader would have to keep it, or parse the JSON back),
        // the manager's lock already orders the room's events, and the line's bytes count against the
        // log's bound from the moment it exists, like the JSON frame's. It costs nothing in rooms with
        // no legacy member, and once per event (never per recipient) in rooms with some. The count of
        // legacy members is exact because a legacy member reads only what is appended after its
        // arrival (see `arrive`).
        let legacy = if r.legacy_members > 0 {
            encode_legacy(event)
        } else {
            None
        };
        let encoded = Encoded {
            json: encode(event),
            legacy,
        };
        let oldest_kept = r.log.append(encoded, message_seq);
        counter!(m::DELIVERIES_OUT).increment(r.members.len() as u64);
        let mut lagging = Vec::new();
        for (id, member) in &r.members {
            if member.subscription.cursor() < oldest_kept {
                lagging.push(*id);
            } else {
                member.outbox.notify();
            }
        }
        lagging
    }

    /// Marks `name` (key `person_key`) typing in `room` until `until`; announces it if it is news.
    pub fn typing(&mut self, room: &str, person_key: &str, name: &str, until: Instant) -> Lagging {
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let news = r
            .typing
            .insert(person_key.to_owned(), (name.to_owned(), until))
            .is_none();
        if news {
            self.publish_typing(room)
        } else {
            Vec::new()
        }
    }

    /// `person_key`'s message arrived in `room`: they stopped typing.
    pub fn stopped_typing(&mut self, room: &str, person_key: &str) -> Lagging {
        let stopped = self
            .rooms
            .get_mut(room)
            .is_some_and(|r| r.typing.remove(person_key).is_some());
        if stopped {
            self.publish_typing(room)
        } else {
            Vec::new()
        }
    }

    /// Forgets typing notices that ran out by `now`, and tells their rooms.
    pub fn expire_typing(&mut self, now: Instant) -> Lagging {
        let mut changed = Vec::new();
        for (name, room) in self.rooms.iter_mut() {
            let before = room.typing.len();
            room.typing.retain(|_, (_, until)| *until > now);
            if room.typing.len() != before {
                changed.push(name.clone());
            }
        }
        let mut lagging = Vec::new();
        for room in changed {
            lagging.extend(self.publish_typing(&room));
        }
        lagging
    }

    /// Tells `room` who is typing now.
    fn publish_typing(&mut self, room: &str) -> Lagging {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut names: Vec<String> = r.typing.values().map(|(n, _)| n.clone()).collect();
        names.sort();
        let event = ServerEvent::Typing {
            room: room.to_owned(),
            names,
        };
        self.publish(room, &event, 0)
    }

    /// Forgets a room no one follows or is joining: its log is only a window on live traffic, and the
    /// store has its history.
    fn drop_if_unused(&mut self, room: &str) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.is_empty() && r.pending_joins == 0)
        {
            self.rooms.remove(room);
        }
    }

    /// Forgets every room (shutdown).
    pub fn clear(&mut self) {
        self.rooms.clear();
    }

    /// Drops `room`'s in-memory recent messages (retention deleted some of its messages).
    pub fn forget_recent_in(&mut self, room: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.recent = None;
            // A join reading the store now may have read the deleted messages: counted as a change, the
            // deletion keeps that read from becoming the room's memory (see `join::finish`).
            r.published += 1;
        }
    }

    /// The people in `room` now, in the order they came, through any node.
    pub fn online(&self, room: &str) -> Vec<String> {
        match self.rooms.get(room) {
            Some(r) => Self::people(r, &self.remote, room, usize::MAX).0,
            None => {
                let mut people: Vec<(u64, &str)> = self
                    .remote
                    .people(room)
                    .map(|(_, since, name)| (since, name))
                    .collect();
                people.sort();
                people.into_iter().map(|(_, n)| n.to_owned()).collect()
            }
        }
    }

    /// Every room with people in it (through any node), and how many.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut people: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
        for (name, r) in &self.rooms {
            people
                .entry(name)
                .or_default()
                .extend(r.present.keys().map(String::as_str));
        }
        for (name, keys) in self.remote.rooms() {
            people.entry(name).or_default().extend(keys);
        }
        people
            .into_iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(name, keys)| (name.to_owned(), keys.len()))
            .collect()
    }

    /// The first `limit` people of room `r` (named `room`) in the order they came, here and through
    /// other nodes, and how many there are in all.
    fn people(r: &Room, remote: &RemotePresence, room: &str, limit: usize) -> (Vec<String>, usize) {
        let mut people: Vec<(u64, &str)> = r
            .arrivals
            .iter()
            .map(|((ms, _), name)| (*ms, name.as_str()))
            .collect();
        people.extend(
            remote
                .people(room)
                .filter(|(key, _, _)| !r.present.contains_key(*key))
                .map(|(_, since, name)| (since, name)),
        );
        // Stable: people who came in the same millisecond here keep their order.
        people.sort_by_key(|(ms, _)| *ms);
        let count = people.len();
        let names = people
            .into_iter()
            .take(limit)
            .map(|(_, n)| n.to_owned())
            .collect();
        (names, count)
    }

    /// This node's count of `key`'s connections in `room`, and when they arrived (ms): what the bus
    /// tells the other nodes (see `bus.rs`).
    pub fn local_presence(&self, room: &str, key: &str, name: &str) -> PresenceRecord {
        let presence = self.rooms.get(room).and_then(|r| r.present.get(key));
        PresenceRecord {
            room: room.to_owned(),
            key: key.to_owned(),
            name: name.to_owned(),
            conns: presence.map_or(0, |p| p.conns),
            since: presence.map_or(0, |p| p.arrival.0),
        }
    }

    /// Everyone present through this node, in every room (for a full restatement to the cluster).
    pub fn all_local_presence(&self) -> Vec<PresenceRecord> {
        let mut records = Vec::new();
        for (room, r) in &self.rooms {
            for (arrival, name) in &r.arrivals {
                let key = super::names::name_key(name);
                let conns = r.present.get(&key).map_or(0, |p| p.conns);
                records.push(PresenceRecord {
                    room: room.clone(),
                    key,
                    name: name.clone(),
                    conns,
                    since: arrival.0,
                });
            }
        }
        records
    }

    // ---- Other nodes' presence

    /// Applies another node's statement about one person in one room; announces the person's join or
    /// leave to this node's members if they appeared or vanished (and are not here through this node).
    pub fn apply_remote(&mut self, node: &str, record: &PresenceRecord) -> Lagging {
        let change = self.remote.apply(node, record);
        self.announce_remote(&record.room, &record.key, &record.name, change)
    }

    /// Forgets a node that is gone: everyone only it had leaves.
    pub fn forget_node(&mut self, node: &str) -> Lagging {
        let left = self.remote.forget_node(node);
        let mut lagging = Vec::new();
        for (room, key, name) in left {
            lagging.extend(self.announce_remote(&room, &key, &name, Change::Left));
        }
        lagging
    }

    /// Replaces the other nodes' presence with what Redis holds (after the bus reconnected).
    pub fn replace_remote(&mut self, records: &[(String, PresenceRecord)]) -> Lagging {
        let changes = self.remote.replace(records);
        let mut lagging = Vec::new();
        for (room, key, name, change) in changes {
            lagging.extend(self.announce_remote(&room, &key, &name, change));
        }
        lagging
    }

    /// The nodes whose people this node counts.
    pub fn remote_nodes(&self) -> Vec<String> {
        self.remote.nodes()
    }

    fn announce_remote(&mut self, room: &str, key: &str, name: &str, change: Change) -> Lagging {
        let presence_limit = self.presence_limit;
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if r.present.contains_key(key) || change == Change::None {
            return Vec::new();
        }
        let small = r.present.len() < presence_limit;
        let stopped_typing = change == Change::Left && r.typing.remove(key).is_some();
        let mut lagging = Vec::new();
        if small {
            let ts = now_ms();
            let (room_name, name) = (room.to_owned(), name.to_owned());
            let event = match change {
                Change::Arrived => ServerEvent::Join {
                    room: room_name,
                    name,
                    ts,
                },
                _ => ServerEvent::Leave {
                    room: room_name,
                    name,
                    ts,
                },
            };
            lagging.extend(self.publish(room, &event, 0));
        }
        if stopped_typing {
            lagging.extend(self.publish_typing(room));
        }
        lagging
    }

    // ---- Messages, in order

    /// Puts a stored message into `room`'s log in its turn: now if it is the next one (and then any
    /// that waited for it), later if one before it is missing (the [`Gap`] to fill is returned), never
    /// if it is there already. A room no one here follows or joins takes nothing: joiners read the
    /// store.
    pub fn deliver(&mut self, room: &str, message: ChatMessage) -> (Lagging, Option<Gap>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return (Vec::new(), None);
        };
        match r.next_seq {
            Some(next) if message.seq < next => return (Vec::new(), None),
            _ => {}
        }
        r.ahead.insert(message);
        self.drain(room)
    }

    /// Where `room` stands, from a history read (its last `seq` then): set once, for a room that did
    /// not know yet; what waited beyond it is then delivered.
    pub fn start_sequence(&mut self, room: &str, last_seq: u64) -> (Lagging, Option<Gap>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return (Vec::new(), None);
        };
        if r.next_seq.is_none() {
            r.next_seq = Some(last_seq + 1);
        }
        self.drain(room)
    }

    /// Starts a fill of `room` for `why`: the `seq` to read from, unless the room follows no
    /// sequence, a fill is under way already, or (for a [`Fill::Gap`]) nothing waits any more.
    pub fn begin_fill(&mut self, room: &str, why: Fill) -> Option<u64> {
        let r = self.rooms.get_mut(room)?;
        let next = r.next_seq?;
        if r.filling || (why == Fill::Gap && r.ahead.is_empty()) {
            return None;
        }
        r.filling = true;
        Some(next)
    }

    /// A fill of `room` ended: delivers nothing itself (its messages went through `deliver`); says
    /// whether a gap is still open.
    pub fn end_fill(&mut self, room: &str) -> Option<Gap> {
        let r = self.rooms.get_mut(room)?;
        r.filling = false;
        let next = r.next_seq?;
        (!r.ahead.is_empty()).then(|| Gap {
            room: room.to_owned(),
            next,
        })
    }

    /// The store has nothing between `room`'s next `seq` and `first` (retention deleted it): the
    /// sequence moves on to `first`.
    pub fn skip_to(&mut self, room: &str, first: u64) {
        if let Some(r) = self.rooms.get_mut(room) {
            if r.next_seq.is_some_and(|next| next < first) {
                r.next_seq = Some(first);
            }
        }
    }

    /// Every room here that follows a sequence, with the `seq` it expects next.
    pub fn sequences(&self) -> Vec<(String, u64)> {
        self.rooms
            .iter()
            .filter_map(|(name, r)| Some((name.clone(), r.next_seq?)))
            .collect()
    }

    /// Delivers what waits in `room` from its next `seq` on, in order; reports a gap if something
    /// still waits behind a missing one.
    fn drain(&mut self, room: &str) -> (Lagging, Option<Gap>) {
        let mut lagging = Vec::new();
        loop {
            let Some(r) = self.rooms.get_mut(room) else {
                return (lagging, None);
            };
            let Some(next) = r.next_seq else {
                return (lagging, None);
            };
            // Anything below the next expected was delivered already.
            r.ahead.drop_below(next);
            let Some(message) = r.ahead.take(next) else {
                let gap = (!r.ahead.is_empty() && !r.filling).then(|| Gap {
                    room: room.to_owned(),
                    next,
                });
                return (lagging, gap);
            };
            r.next_seq = Some(next + 1);
            lagging.extend(self.publish_message(room, message));
        }
    }

    /// Appends one message to `room`'s log (its turn has come), keeping the recent messages in step.
    fn publish_message(&mut self, room: &str, message: ChatMessage) -> Lagging {
        let mut lagging = Vec::new();
        let author_key = super::names::name_key(&message.from);
        if let Some(r) = self.rooms.get_mut(room) {
            r.published += 1;
            if r.recent
                .as_mut()
                .is_some_and(|recent| !recent.push(&message))
            {
                r.recent = None;
            }
        }
        if message.kind == EntryKind::Message {
            // The author stopped typing: their message is here.
            lagging.extend(self.stopped_typing(room, &author_key));
        }
        let seq = message.seq;
        let event = ServerEvent::Message {
            room: room.to_owned(),
            seq,
            from: message.from,
            text: message.text,
            ts: message.ts,
            client_id: message.client_id,
            kind: message.kind,
            target: message.target,
            reply_to: message.reply_to,
            html: message.html,
        };
        lagging.extend(self.publish(room, &event, seq));
        lagging
    }
}

impl Room {
    /// The room's log, where a joiner's subscription will start reading.
    pub fn log(&self) -> &Arc<FanoutLog> {
        &self.log
    }

    /// Whether the room knows the `seq` its next message takes (a history read told it).
    pub fn knows_sequence(&self) -> bool {
        self.next_seq.is_some()
    }

    /// Whether anyone follows the room or is joining it (besides the join asking).
    pub fn is_live(&self) -> bool {
        !self.members.is_empty() || self.pending_joins > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, bytes: usize) -> ChatMessage {
        ChatMessage {
            seq,
            from: "ann".into(),
            text: "x".repeat(bytes),
            ts: 0,
            client_id: None,
            ..ChatMessage::default()
        }
    }

    #[test]
    fn messages_waiting_for_their_turn_are_bounded_in_count_and_bytes() {
        let mut ahead = Ahead::default();
        for seq in 2..2 + MAX_AHEAD as u64 + 10 {
            ahead.insert(message(seq, 10));
        }
        assert_eq!(ahead.messages.len(), MAX_AHEAD);
        assert_eq!(
            ahead.first(),
            Some(2),
            "the lowest are kept: they are due first"
        );
        let mut ahead = Ahead::default();
        for seq in 2..40 {
            ahead.insert(message(seq, 64 * 1024));
        }
        assert!(ahead.bytes <= MAX_AHEAD_BYTES, "{}", ahead.bytes);
        assert_eq!(ahead.first(), Some(2));
        // One message is kept however large: it may be the very one due next.
        let mut ahead = Ahead::default();
        ahead.insert(message(5, 2 * MAX_AHEAD_BYTES));
        assert_eq!(ahead.first(), Some(5));
        ahead.drop_below(6);
        assert!(ahead.is_empty());
        assert_eq!(ahead.bytes, 0);
    }
}
