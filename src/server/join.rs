//! The join protocol: how a connection starts following a room without missing or repeating a message.
//!
//! 1. [`begin`] checks the request, holds the room open and notes its log position, *before* anything
//!    of the history is read. Every message is stored before it is published, so each one is either in
//!    what the read returns, or published after that position (or both, which the subscription's
//!    sequence filter skips). Nothing falls in between.
//! 2. The history comes from the room's in-memory newest messages when they cover the request
//!    ([`Joining::Done`] at once), or from a store read by the caller ([`Joining::NeedsHistory`]).
//! 3. [`finish`] makes the connection a member reading from the noted position, and queues its
//!    `joined` snapshot (and who is typing) ahead of any of the room's events.
//!
//! A connection on the original chat's format ([`WireFormat::Legacy`]) is shown no history and no
//! snapshot, only what is said from its arrival on: its join needs no history and is done at once, in
//! step 1. So it is in the room before its task reads the client's first frame, as the original's
//! clients were from the moment they were accepted.
//!
//! Plain functions over the registry and the rooms, called by the manager with its lock held.

use std::sync::Arc;

use super::error::ChatError;
use super::frame::{encode, Frame, WireFormat};
use super::names::name_key;
use super::outbox::{Outbox, Subscription};
use super::presence::PresenceRecord;
use super::recent::Recent;
use super::registry::{ConnId, Registry};
use super::replay::{Replay, ReplayLimits};
use super::rooms::{Arrival, Gap, Lagging, Rooms};
use crate::protocol::{validate_room, FrameKind, FrameRef, ServerEvent};

/// A join under way: the room is held open and its log position noted while the history is read.
pub struct JoinTicket {
    pub conn: ConnId,
    pub room: String,
    start: u64,
    /// The room's count of published messages then: if it is unchanged when the read comes back, the
    /// read is the room's current state, and can start its in-memory cache.
    published: u64,
    /// No one was in the room or joining it: if it has no history either, this join creates it.
    may_create: bool,
}

impl JoinTicket {
    /// What an error about this join says it answers.
    pub fn reference(&self) -> FrameRef {
        FrameRef {
            kind: FrameKind::Join,
            room: Some(self.room.clone()),
            client_id: None,
        }
    }
}

/// How a join went on: at once (from the room's in-memory recent messages), or it needs the store.
pub enum Joining {
    Done,
    /// Read the history (`history::replay`), then finish the join with it.
    NeedsHistory(JoinTicket),
}

/// [`begin`]'s answer: [`Joining`], with the completed join still to be delivered.
pub(super) enum Begun {
    Done(Completed),
    NeedsHistory(JoinTicket),
}

/// A join made: what the manager hands the joiner's outbox, in this order: the `joined` snapshot (and
/// who is typing), then the subscription. The connection takes personal frames before its rooms', but
/// it takes them concurrently, so subscribing only after the snapshot is queued is what keeps the
/// room's events behind it. And the members the room's news left behind.
pub(super) struct Completed {
    pub joiner: Option<Joiner>,
    pub lagging: Lagging,
    /// The joiner's person's presence here now, for the other nodes of a cluster.
    pub presence: Option<PresenceRecord>,
}

pub(super) struct Joiner {
    pub conn: ConnId,
    pub outbox: Arc<Outbox>,
    pub frames: Vec<Frame>,
    pub subscription: Arc<Subscription>,
}

/// First half of a join (see the module docs).
pub(super) fn begin(
    registry: &mut Registry,
    rooms: &mut Rooms,
    conn: ConnId,
    room: &str,
    after: Option<u64>,
    limits: (usize, ReplayLimits),
) -> Result<Begun, ChatError> {
    let (max_rooms, replay_limits) = limits;
    validate_room(room).map_err(ChatError::BadRoom)?;
    let Some(record) = registry.get_mut(conn) else {
        return Err(ChatError::ShuttingDown);
    };
    if record
        .rooms
        .iter()
        .chain(&record.joining)
        .any(|r| r == room)
    {
        return Err(ChatError::AlreadyJoined(room.to_owned()));
    }
    if record.rooms.len() + record.joining.len() >= max_rooms {
        return Err(ChatError::TooManyRooms(max_rooms));
    }
    let format = record.format;
    record.joining.push(room.to_owned());
    let held = rooms.hold(room);
    let ticket = JoinTicket {
        conn,
        room: room.to_owned(),
        start: held.log().head(),
        published: held.published,
        may_create: !held.is_live(),
    };
    let cached = match format {
        // Shown no history; but a room must know where its sequence stands before it can deliver a
        // message, which only a read tells the first joiner.
        WireFormat::Legacy if held.knows_sequence() => Some(Replay::default()),
        WireFormat::Legacy => None,
        WireFormat::Json => held
            .recent
            .as_ref()
            .and_then(|recent| recent.replay(after, replay_limits)),
    };
    Ok(match cached {
        Some(replay) => Begun::Done(complete(registry, rooms, ticket, replay)),
        None => Begun::NeedsHistory(ticket),
    })
}

/// Whether the read history says this join would create the room (see [`JoinTicket`]).
pub(super) fn creates_room(ticket: &JoinTicket, replay: &Replay) -> bool {
    ticket.may_create && replay.last_seq == 0
}

/// The person a ticket's connection belongs to, if it is still there.
pub(super) fn joiner(registry: &Registry, ticket: &JoinTicket) -> Option<super::store::PersonId> {
    registry.get(ticket.conn).map(|r| r.person)
}

/// Second half of a join, once the history is read: starts the room's in-memory cache if the read is
/// its current state, then completes the join.
pub(super) fn finish(
    registry: &mut Registry,
    rooms: &mut Rooms,
    ticket: JoinTicket,
    replay: Replay,
    recent_capacity: usize,
) -> (Completed, Option<Gap>) {
    if let Some(r) = rooms.get_mut(&ticket.room) {
        if r.recent.is_none() && r.published == ticket.published {
            // Nothing was published since the read began: it is the room's current state.
            r.recent = Some(Recent::new(&replay, recent_capacity));
        }
    }
    // The first read of a room says where its sequence stands; messages that came meanwhile waited
    // (see `Rooms::deliver`), and now take their turn, after the read's position in the log, which
    // is where the joiner starts reading.
    let (mut lagging, gap) = rooms.start_sequence(&ticket.room, replay.last_seq);
    let mut completed = complete(registry, rooms, ticket, replay);
    completed.lagging.append(&mut lagging);
    (completed, gap)
}

/// A join that could not finish: releases the room.
pub(super) fn abort(registry: &mut Registry, rooms: &mut Rooms, ticket: &JoinTicket) {
    if let Some(record) = registry.get_mut(ticket.conn) {
        record.joining.retain(|j| *j != ticket.room);
    }
    rooms.release(&ticket.room);
}

fn complete(
    registry: &mut Registry,
    rooms: &mut Rooms,
    ticket: JoinTicket,
    replay: Replay,
) -> Completed {
    let room = ticket.room;
    let nothing = Completed {
        joiner: None,
        lagging: Vec::new(),
        presence: None,
    };
    let Some(record) = registry.get_mut(ticket.conn) else {
        // It went while its history was being read.
        rooms.release(&room);
        return nothing;
    };
    let wanted = record.joining.contains(&room);
    record.joining.retain(|j| *j != room);
    if record.joining.is_empty() {
        // Joins are rare and connections many: an idle one keeps no spare capacity.
        record.joining = Vec::new();
    }
    if !wanted {
        // It left the room while its history was being read.
        rooms.release(&room);
        return nothing;
    }
    record.rooms.push(room.clone());
    let (person_key, outbox) = (name_key(&record.name), record.outbox.clone());
    let format = record.format;
    let arrival = Arrival {
        conn: ticket.conn,
        outbox: outbox.clone(),
        person_key: &person_key,
        name: &record.name,
        format,
        start: ticket.start,
        delivered_seq: replay.messages.last().map_or(replay.after, |m| m.seq),
    };
    let Some((snapshot, lagging)) = rooms.arrive(&room, arrival) else {
        // Unreachable while the ticket holds the room; were it gone, the connection simply does not
        // follow it.
        record.rooms.retain(|r| *r != room);
        return nothing;
    };
    let presence = Some(rooms.local_presence(&room, &person_key, &record.name));
    let mut frames = Vec::new();
    if format == WireFormat::Json {
        frames.push(encode(&ServerEvent::Joined {
            room: room.clone(),
            recovered: replay.recovered,
            messages: replay.messages,
            oldest_seq: replay.oldest_seq,
            online: snapshot.online,
            online_count: snapshot.online_count,
        }));
        if !snapshot.typing.is_empty() {
            frames.push(encode(&ServerEvent::Typing {
                room,
                names: snapshot.typing,
            }));
        }
    }
    Completed {
        joiner: Some(Joiner {
            conn: ticket.conn,
            outbox,
            frames,
            subscription: snapshot.subscription,
        }),
        lagging,
        presence,
    }
}
