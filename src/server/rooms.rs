//! Rooms: who follows each one (its members, one per connection), who is present (one per person),
//! who is typing, its in-memory newest messages, and its fan-out log, which every event of the room is
//! appended to, encoded once per wire format its members read.
//!
//! Plain data behind the manager's lock (see `manager.rs`). Appending may leave a member behind the
//! log's window; such members are not removed here (that touches the registry) but returned as
//! [`Lagging`], and the manager disconnects them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use metrics::counter;

use super::clock::now_ms;
use super::fanout::{Encoded, FanoutLog};
use super::frame::{encode, encode_legacy, WireFormat};
use super::metrics as m;
use super::outbox::{Outbox, Subscription};
use super::recent::Recent;
use super::registry::ConnId;
use crate::protocol::ServerEvent;

/// Members an append left behind the room's log: too slow, to be disconnected by the caller.
pub(super) type Lagging = Vec<ConnId>;

pub(super) struct Rooms {
    /// Rooms with members, or with a join under way.
    rooms: HashMap<String, Room>,
    /// Orders people in each room's presence list.
    next_arrival: u64,
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
    /// Who is here, by `name_key`: when they arrived and through how many connections.
    present: HashMap<String, Presence>,
    /// Display names by arrival: the order `joined` snapshots list people in.
    arrivals: BTreeMap<u64, String>,
    /// Who is typing, by `name_key`: display name and when the notice runs out.
    typing: HashMap<String, (String, Instant)>,
    /// Joins under way: the room must outlive them even with no members.
    pending_joins: usize,
    /// Messages published so far (see `join::JoinTicket`).
    pub published: u64,
    /// The newest messages, once known (see `recent.rs`).
    pub recent: Option<Recent>,
}

struct Member {
    outbox: Arc<Outbox>,
    subscription: Arc<Subscription>,
    format: WireFormat,
}

struct Presence {
    arrival: u64,
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
        let r = self.rooms.get_mut(room)?;
        let first_here = !r.present.contains_key(arrival.person_key);
        if first_here {
            let order = self.next_arrival;
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
        let online_count = r.present.len();
        let online: Vec<String> = r
            .arrivals
            .values()
            .take(presence_limit.max(1))
            .cloned()
            .collect();
        let typing: Vec<String> = r.typing.values().map(|(n, _)| n.clone()).collect();
        // Taken before the announcement below: the member starts reading where its join began, and
        // presence news from here on is news to it (what came before is in its snapshot).
        let announce = first_here && online_count <= presence_limit;
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
                let stopped_typing = r.typing.remove(person_key).is_some();
                if r.present.len() < presence_limit {
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

    /// The people in `room` now, in the order they came.
    pub fn online(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(|r| r.arrivals.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every room with people in it, and how many.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.rooms
            .iter()
            .filter(|(_, r)| !r.present.is_empty())
            .map(|(name, r)| (name.clone(), r.present.len()))
            .collect()
    }
}

impl Room {
    /// The room's log, where a joiner's subscription will start reading.
    pub fn log(&self) -> &Arc<FanoutLog> {
        &self.log
    }

    /// Whether anyone follows the room or is joining it (besides the join asking).
    pub fn is_live(&self) -> bool {
        !self.members.is_empty() || self.pending_joins > 1
    }
}
