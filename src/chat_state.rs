//! The chat page's reactive state, and how each [`ServerEvent`] changes it.
//!
//! Compiled on both sides: the server renders the room it was asked for from its stored history, the
//! browser then keeps every followed room up to date from the socket. Keeping the event handling here
//! (not in the socket code) lets it be unit-tested on the host.
//!
//! Nothing shows twice and nothing goes missing across reconnects: each room remembers the last
//! sequence number it has shown (`last_seq`), the socket rejoins with it, and a message is shown only if
//! its number is past it. Messages this page sent wait in `pending` (shown as "sending…") until the
//! server acknowledges them, and are sent again, under the same `client_id`, after a reconnect.

use std::collections::BTreeMap;

use leptos::prelude::*;

use crate::protocol::{
    ChatMessage, ClientFrame, EntryKind, ErrorCode, FrameKind, FrameRef, Quote, Reaction,
    ReadPosition, ServerEvent, WelcomeLimits, MAX_REACTION_NAMES,
};

/// The most lines the page keeps per room while the reader is at the newest; older ones scroll away,
/// so a long session does not grow without bound (they can be paged in again).
pub const MAX_LINES: usize = 1000;

/// The most lines of a room the page draws at once: a window onto its lines, which moves as the reader
/// scrolls, so a room of 10,000 loaded messages costs the page no more than one of 300.
pub const WINDOW: usize = 300;
/// How many lines the window moves by at a time.
pub const WINDOW_STEP: usize = 100;

/// Reconnection delays: the first, and the cap, in ms.
pub const BACKOFF_FIRST_MS: f64 = 500.0;
pub const BACKOFF_CAP_MS: f64 = 30_000.0;

/// How long to wait before reconnecting after `failures` failed attempts in a row: capped exponential
/// backoff (0.5 s, 1 s, 2 s, … up to 30 s) scaled by a random factor in [0.5, 1.5) (`random` in [0, 1)).
/// The jitter matters: after a server restart every page reconnects, and without it they would all
/// come back in the same millisecond, and again after each failed attempt.
pub fn backoff_ms(failures: u32, random: f64) -> f64 {
    let exponential = BACKOFF_FIRST_MS * 2f64.powi(failures.saturating_sub(1).min(16) as i32);
    exponential.min(BACKOFF_CAP_MS) * (0.5 + random)
}

/// The state of the link to the server, shown by the connection indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// Opening the socket, or waiting for the server's welcome.
    Connecting,
    /// Welcomed: messages go out and come in.
    Open,
    /// The link dropped and the page reconnects at `at_ms` (page clock, ms since the epoch); `reason`
    /// says why it dropped.
    Reconnecting { reason: String, at_ms: u64 },
    /// The socket is closed for good (e.g. the name was refused); `reason` says why, for people.
    Closed { reason: String },
}

impl LinkStatus {
    /// A stable word for CSS and tests: `connecting`, `open`, `reconnecting` or `closed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkStatus::Connecting => "connecting",
            LinkStatus::Open => "open",
            LinkStatus::Reconnecting { .. } => "reconnecting",
            LinkStatus::Closed { .. } => "closed",
        }
    }

    /// What the indicator says at `now_ms`: a reconnect counts down to its attempt.
    pub fn label(&self, now_ms: u64) -> String {
        match self {
            LinkStatus::Connecting => "connecting…".into(),
            LinkStatus::Open => "connected".into(),
            LinkStatus::Reconnecting { reason, at_ms } if *at_ms > now_ms => {
                let seconds = (at_ms - now_ms).div_ceil(1000);
                format!("reconnecting in {seconds} s… ({reason})")
            }
            LinkStatus::Reconnecting { reason, .. } => format!("reconnecting… ({reason})"),
            LinkStatus::Closed { reason } => format!("disconnected: {reason}"),
        }
    }
}

/// One entry of a room's message list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Unique on this page, assigned on arrival: the key of the keyed list.
    pub key: u64,
    pub kind: LineKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineKind {
    Message {
        seq: u64,
        from: String,
        text: String,
        ts: u64,
        /// Changed by its author since it was sent.
        edited: bool,
        /// Deleted by its author: "message deleted" stands in its place.
        deleted: bool,
        /// What it answers, if it is a reply.
        reply_to: Option<Quote>,
        /// Its reactions, as they are now.
        reactions: Vec<Reaction>,
        /// Its text as HTML, when it has formatting (rendered by the server).
        html: Option<String>,
    },
    Joined {
        name: String,
    },
    Left {
        name: String,
    },
    /// Something the server refused, or a local problem worth showing.
    Error {
        text: String,
    },
}

/// What the page knows of one room it follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomView {
    pub lines: Vec<Line>,
    /// The highest sequence number shown: what the page asks the server to continue from.
    pub last_seq: u64,
    /// The lowest sequence number shown (0: none), where paging back continues from.
    pub first_seq: u64,
    /// The room's oldest stored message, as the server last said (0: none).
    pub oldest_seq: u64,
    /// Who is here, in the order they came (in a large room, only those the server listed).
    pub online: Vec<String>,
    pub online_count: usize,
    /// Who is typing now.
    pub typing: Vec<String>,
    /// The server has confirmed this link follows the room.
    pub joined: bool,
    /// This link has asked to join the room.
    pub join_sent: bool,
    /// Where the drawn window of lines ends (exclusive) while the reader is up in the history; `None`:
    /// at the newest, which it then follows.
    pub window_end: Option<usize>,
}

impl RoomView {
    /// Older messages can be paged in.
    pub fn has_older(&self) -> bool {
        self.first_seq > self.oldest_seq && self.oldest_seq > 0
    }

    /// The lines drawn: at most [`WINDOW`], ending at `window_end`.
    pub fn window(&self) -> std::ops::Range<usize> {
        let end = self
            .window_end
            .map_or(self.lines.len(), |end| end.min(self.lines.len()));
        end.saturating_sub(WINDOW)..end
    }

    /// Where the window would end after a step toward older lines (`up`) or newer ones.
    fn window_step(&self, up: bool) -> usize {
        let end = self.window().end;
        let len = self.lines.len();
        if up {
            end.saturating_sub(WINDOW_STEP).max(WINDOW.min(len))
        } else {
            (end + WINDOW_STEP).min(len)
        }
    }

    /// The `window_end` of a window ending at line `end` (`None` at the newest, or past them).
    fn window_ending(&self, end: usize) -> Option<usize> {
        (end < self.lines.len()).then_some(end)
    }
}

/// Something this page sent to a room's log that the server has not acknowledged yet: a message, or a
/// change to one. Each goes out under its `client_id`, in order, and again after a reconnect (the
/// server stores each once), so no edit, delete or reaction is lost to a dropped link either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub client_id: String,
    pub room: String,
    /// The message's or the edit's text; a reaction's emoji; empty for a delete.
    pub text: String,
    pub what: Outgoing,
}

/// What a [`Pending`] entry is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outgoing {
    /// A new message; a reply to `reply_to` if given.
    #[default]
    Message,
    Reply(u64),
    Edit(u64),
    Delete(u64),
    /// Toggle the reaction `text` on message `seq`.
    React(u64),
}

impl Pending {
    /// A new message (a reply if `reply_to`) for `room`.
    pub fn new(client_id: String, room: String, text: String, what: Outgoing) -> Pending {
        Pending {
            client_id,
            room,
            text,
            what,
        }
    }

    /// Whether it is a new message (shown as "sending…" until it is stored).
    pub fn is_message(&self) -> bool {
        matches!(self.what, Outgoing::Message | Outgoing::Reply(_))
    }

    /// The frame that sends it.
    pub fn frame(&self) -> ClientFrame {
        let (room, text, client_id) = (
            self.room.clone(),
            self.text.clone(),
            Some(self.client_id.clone()),
        );
        match self.what {
            Outgoing::Message | Outgoing::Reply(_) => ClientFrame::Message {
                room,
                text,
                client_id,
                reply_to: match self.what {
                    Outgoing::Reply(seq) => Some(seq),
                    _ => None,
                },
            },
            Outgoing::Edit(seq) => ClientFrame::Edit {
                room,
                seq,
                text,
                client_id,
            },
            Outgoing::Delete(seq) => ClientFrame::Delete {
                room,
                seq,
                client_id,
            },
            Outgoing::React(seq) => ClientFrame::React {
                room,
                seq,
                emoji: text,
                client_id,
            },
        }
    }
}

/// Whether `text` mentions `me`: `@` and the name (in any case), at the start or after a space or
/// punctuation, and not followed by more of a word (`@ann` is not `@anna`).
pub fn mentions(text: &str, me: &str) -> bool {
    if me.is_empty() {
        return false;
    }
    let lower = lowercase(text);
    let me = lowercase(me);
    lower.match_indices('@').any(|(at, _)| {
        let before_ok = lower[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let rest = &lower[at + 1..];
        before_ok
            && rest.starts_with(&me)
            && rest[me.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'))
    })
}

/// `text` in lower case, as Unicode lowercases it (names are compared this way). In the browser, by
/// its own `toLowerCase`: Rust's would put Unicode's case tables into the WASM (7 KB on the wire).
pub fn lowercase(text: &str) -> String {
    #[cfg(feature = "hydrate")]
    return String::from(js_sys::JsString::from(text).to_lower_case());
    #[cfg(not(feature = "hydrate"))]
    text.to_lowercase()
}

/// The last message that mentioned you (for a notification while the page is hidden).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    pub room: String,
    pub from: String,
    pub text: String,
}

/// Every signal the chat page renders from. `Copy`, so closures can each take it.
#[derive(Clone, Copy)]
pub struct ChatState {
    pub link: RwSignal<LinkStatus>,
    /// Our own name, once the server has welcomed us.
    pub me: RwSignal<Option<String>>,
    /// The room on screen.
    pub current: RwSignal<String>,
    /// Every room this page follows, by name.
    pub rooms: RwSignal<BTreeMap<String, RoomView>>,
    /// Sent, not yet acknowledged, oldest first.
    pub pending: RwSignal<Vec<Pending>>,
    /// The server's limits, from its welcome (its defaults until then).
    pub limits: RwSignal<WelcomeLimits>,
    /// People online in each room with any, as the server pushes them (empty until it has).
    pub online_counts: RwSignal<BTreeMap<String, usize>>,
    /// Where this person has read each room to, and how many messages came after (the same in
    /// every tab: the server keeps it).
    pub read: RwSignal<BTreeMap<String, ReadPosition>>,
    /// The server has told where this person had read to (after the welcome): until then the page
    /// marks nothing read, so a "new messages" divider goes where the reader left off.
    pub read_known: RwSignal<bool>,
    /// Messages mentioning you that came after your read position, by room (cleared as it is read).
    pub mentions: RwSignal<BTreeMap<String, usize>>,
    /// The newest message mentioning you, as it arrived.
    pub last_mention: RwSignal<Option<Mention>>,
    /// A message to bring into view (a quote clicked, a search hit): its room and `seq`.
    pub jump: RwSignal<Option<(String, u64)>>,
    /// The page is visible (not a hidden tab): only then is what arrives read.
    pub visible: RwSignal<bool>,
    /// Where the reader had read the room on screen to when they came to it (its name, and the
    /// position, if any): where its "new messages" divider goes, kept while they stay, however often
    /// its list is drawn anew.
    pub came_to: RwSignal<Option<(String, Option<u64>)>>,
    next_key: StoredValue<u64>,
}

impl ChatState {
    pub fn new(current: String) -> Self {
        ChatState {
            link: RwSignal::new(LinkStatus::Connecting),
            me: RwSignal::new(None),
            current: RwSignal::new(current),
            rooms: RwSignal::new(BTreeMap::new()),
            pending: RwSignal::new(Vec::new()),
            limits: RwSignal::new(WelcomeLimits::default()),
            online_counts: RwSignal::new(BTreeMap::new()),
            read: RwSignal::new(BTreeMap::new()),
            read_known: RwSignal::new(false),
            mentions: RwSignal::new(BTreeMap::new()),
            last_mention: RwSignal::new(None),
            jump: RwSignal::new(None),
            visible: RwSignal::new(true),
            came_to: RwSignal::new(None),
            next_key: StoredValue::new(0),
        }
    }

    /// Follows `room` from the history the page was rendered with, unless it is followed already.
    pub fn seed(&self, room: &str, messages: Vec<ChatMessage>, oldest_seq: u64) {
        if self.rooms.with_untracked(|rooms| rooms.contains_key(room)) {
            return;
        }
        let mut view = RoomView {
            oldest_seq,
            ..RoomView::default()
        };
        self.fill(&mut view, messages);
        self.rooms.update(|rooms| {
            rooms.insert(room.to_owned(), view);
        });
    }

    /// Reads one thing of `room`'s view (tracked: a closure calling this re-runs when the rooms change),
    /// from an empty view if the room is not followed. Nothing else of the view is copied.
    pub fn read_room<T>(&self, room: &str, read: impl FnOnce(&RoomView) -> T) -> T {
        self.rooms.with(|rooms| match rooms.get(room) {
            Some(view) => read(view),
            None => read(&RoomView::default()),
        })
    }

    /// Starts following `room` (its history comes with the server's `joined`). False if it is
    /// followed already.
    pub fn follow(&self, room: &str) -> bool {
        let mut added = false;
        self.rooms.update(|rooms| {
            if !rooms.contains_key(room) {
                rooms.insert(room.to_owned(), RoomView::default());
                added = true;
            }
        });
        added
    }

    /// Stops following `room`.
    pub fn unfollow(&self, room: &str) {
        self.rooms.update(|rooms| {
            rooms.remove(room);
        });
    }

    /// The rooms this link has yet to ask to join, each with the last sequence number the page has of
    /// it (`None`: nothing yet); marks them asked.
    pub fn take_joins(&self) -> Vec<(String, Option<u64>)> {
        let mut joins = Vec::new();
        self.rooms.update(|rooms| {
            for (name, view) in rooms.iter_mut() {
                if !view.joined && !view.join_sent {
                    view.join_sent = true;
                    joins.push((name.clone(), Some(view.last_seq).filter(|&s| s > 0)));
                }
            }
        });
        joins
    }

    /// Whether this link follows `room` (the server said so).
    pub fn is_joined(&self, room: &str) -> bool {
        self.rooms
            .with_untracked(|rooms| rooms.get(room).is_some_and(|v| v.joined))
    }

    /// The oldest message waiting for an acknowledgement in a room this link follows: the next to send.
    pub fn next_to_send(&self) -> Option<Pending> {
        let pending = self.pending.get_untracked();
        pending.into_iter().find(|p| self.is_joined(&p.room))
    }

    /// Whether the message `client_id` still waits for an acknowledgement.
    pub fn is_pending(&self, client_id: &str) -> bool {
        self.pending
            .with_untracked(|pending| pending.iter().any(|p| p.client_id == client_id))
    }

    /// Forgets a message the server refused for good.
    pub fn drop_pending(&self, client_id: &str) {
        self.pending
            .update(|p| p.retain(|p| p.client_id != client_id));
    }

    /// Remembers a message being sent, until it is acknowledged.
    pub fn add_pending(&self, pending: Pending) {
        self.pending.update(|p| p.push(pending));
    }

    /// Applies one event from the server.
    pub fn apply(&self, event: ServerEvent) {
        match event {
            ServerEvent::Welcome { name, limits, .. } => {
                self.me.set(Some(name));
                self.limits.set(limits);
                // Every count is told afresh right after the welcome.
                self.online_counts.set(BTreeMap::new());
                self.rooms.update(|rooms| {
                    for view in rooms.values_mut() {
                        view.joined = false;
                        view.join_sent = false;
                    }
                });
                self.link.set(LinkStatus::Open);
            }
            ServerEvent::Joined {
                room,
                recovered,
                messages,
                oldest_seq,
                online,
                online_count,
            } => {
                self.settle(messages.iter().filter_map(|m| m.client_id.as_deref()));
                self.with_room(&room, |state, view| {
                    if !recovered {
                        // The server could not continue from what we had: start the room afresh.
                        view.lines.clear();
                        view.window_end = None;
                        view.last_seq = 0;
                        view.first_seq = 0;
                    }
                    state.fill(view, messages);
                    view.oldest_seq = oldest_seq;
                    view.online = online;
                    view.online_count = online_count;
                    view.typing.clear();
                    view.joined = true;
                });
            }
            ServerEvent::Message {
                room,
                seq,
                from,
                text,
                ts,
                client_id,
                kind,
                target,
                reply_to,
                html,
            } => {
                self.settle(client_id.as_deref());
                let message = ChatMessage {
                    seq,
                    from,
                    text,
                    ts,
                    client_id,
                    kind,
                    target,
                    reply_to,
                    edited: false,
                    deleted: false,
                    html,
                    reactions: Vec::new(),
                };
                let counts = kind == EntryKind::Message
                    && self
                        .me
                        .with_untracked(|me| me.as_deref() != Some(message.from.as_str()));
                if counts {
                    self.read.update(|read| {
                        if let Some(position) = read.get_mut(&room).filter(|p| seq > p.seq) {
                            position.unread += 1;
                        }
                    });
                    // Counted until the room is marked read (at once if it is on screen).
                    let to_me = self.me.with_untracked(|me| {
                        me.as_deref().is_some_and(|me| mentions(&message.text, me))
                    });
                    if to_me {
                        self.mentions
                            .update(|m| *m.entry(room.clone()).or_default() += 1);
                        self.last_mention.set(Some(Mention {
                            room: room.clone(),
                            from: message.from.clone(),
                            text: message.text.clone(),
                        }));
                    }
                }
                self.with_room(&room, |state, view| state.fill(view, vec![message]));
            }
            ServerEvent::Ack { client_id, .. } => self.settle(client_id.as_deref()),
            ServerEvent::Join { room, name, .. } => self.with_room(&room, |state, view| {
                if !view.online.contains(&name) {
                    view.online.push(name.clone());
                    view.online_count += 1;
                }
                state.push(view, LineKind::Joined { name });
            }),
            ServerEvent::Leave { room, name, .. } => self.with_room(&room, |state, view| {
                if view.online.contains(&name) {
                    view.online.retain(|n| *n != name);
                }
                view.online_count = view.online_count.saturating_sub(1);
                state.push(view, LineKind::Left { name });
            }),
            ServerEvent::Typing { room, names } => {
                self.with_room(&room, |_, view| view.typing = names);
            }
            // Two paths may ask to join the same room around a reconnect; the second is harmless.
            ServerEvent::Error {
                code: ErrorCode::AlreadyJoined,
                ..
            } => {}
            // A join the server could not serve for now (its store busy or away): asked again (see
            // `socket.rs`), not shown.
            ServerEvent::Error {
                code: ErrorCode::Unavailable,
                answers:
                    Some(FrameRef {
                        kind: FrameKind::Join,
                        room: Some(room),
                        ..
                    }),
                ..
            } => self.rooms.update(|rooms| {
                if let Some(view) = rooms.get_mut(&room) {
                    view.join_sent = false;
                }
            }),
            ServerEvent::Error { message, .. } => self.local_error(message),
            ServerEvent::Pong => {}
            ServerEvent::ReadPositions { rooms } => {
                self.read.update(|read| {
                    for (room, position) in rooms {
                        // Positions only move forward; an older report (a slow tab's) changes
                        // nothing. A room read in another tab has no mentions left to show.
                        if read
                            .get(&room)
                            .is_none_or(|known| position.seq >= known.seq)
                        {
                            if position.unread == 0 {
                                self.mentions.update(|m| {
                                    m.remove(&room);
                                });
                            }
                            read.insert(room, position);
                        }
                    }
                });
                if !self.read_known.get_untracked() {
                    self.read_known.set(true);
                }
            }
            ServerEvent::RoomCounts { counts } => self.online_counts.update(|known| {
                for (room, count) in counts {
                    if count == 0 {
                        known.remove(&room);
                    } else {
                        known.insert(room, count);
                    }
                }
            }),
        }
    }

    /// The page shows `room` to its reader: everything in it is read. The `seq` to tell the server,
    /// if that moved the position.
    pub fn mark_read(&self, room: &str) -> Option<u64> {
        if !self.read_known.get_untracked() {
            return None;
        }
        if self.mentions.with_untracked(|m| m.contains_key(room)) {
            self.mentions.update(|m| {
                m.remove(room);
            });
        }
        let last = self
            .rooms
            .with_untracked(|rooms| rooms.get(room).map(|view| view.last_seq))
            .filter(|last| *last > 0)?;
        let mut moved = false;
        self.read.update(|read| {
            let position = read.entry(room.to_owned()).or_default();
            moved = last > position.seq || position.unread > 0;
            if moved {
                *position = ReadPosition {
                    seq: last.max(position.seq),
                    unread: 0,
                };
            }
        });
        moved.then_some(last)
    }

    /// Moves `room`'s window a step toward its older lines (`up`) or its newer ones; false if it is at
    /// that end of what is loaded already.
    pub fn move_window(&self, room: &str, up: bool) -> bool {
        self.set_window(room, |view| view.window_ending(view.window_step(up)))
    }

    /// `room`'s window shows its newest lines again (and follows them).
    pub fn window_to_newest(&self, room: &str) {
        self.set_window(room, |_| None);
    }

    /// `room`'s window shows message `seq` (near its middle if the window has to move); false if the
    /// message is not loaded.
    pub fn window_to(&self, room: &str, seq: u64) -> bool {
        let mut loaded = false;
        self.set_window(room, |view| {
            let index = view
                .lines
                .iter()
                .position(|l| matches!(l.kind, LineKind::Message { seq: s, .. } if s == seq));
            match index {
                Some(index) if !view.window().contains(&index) => {
                    loaded = true;
                    view.window_ending((index + WINDOW / 2).max(WINDOW))
                }
                found => {
                    loaded = found.is_some();
                    view.window_end
                }
            }
        });
        loaded
    }

    /// Sets `room`'s window to end where `to` says (from its view); the page hears of it only if the
    /// window moves. True if it did.
    fn set_window(&self, room: &str, to: impl FnOnce(&RoomView) -> Option<usize>) -> bool {
        let moved = self.rooms.with_untracked(|rooms| {
            let view = rooms.get(room)?;
            let end = to(view);
            (end != view.window_end).then_some(end)
        });
        if let Some(end) = moved {
            self.with_room(room, |_, view| view.window_end = end);
        }
        moved.is_some()
    }

    /// Older messages of `room` fetched by paging: shown above what is there.
    pub fn prepend(&self, room: &str, messages: Vec<ChatMessage>, oldest_seq: u64) {
        self.with_room(room, |state, view| {
            let older: Vec<Line> = messages
                .into_iter()
                .filter(|m| view.first_seq == 0 || m.seq < view.first_seq)
                .map(|m| state.message_line(m))
                .collect();
            if let Some(Line {
                kind: LineKind::Message { seq, .. },
                ..
            }) = older.first()
            {
                view.first_seq = *seq;
            }
            view.oldest_seq = oldest_seq;
            // The window stays on the same lines.
            if let Some(end) = &mut view.window_end {
                *end += older.len();
            }
            view.lines.splice(0..0, older);
        });
    }

    /// The socket closed for good: show why, and forget who was online (we can no longer tell).
    pub fn closed(&self, reason: impl Into<String>) {
        self.link.set(LinkStatus::Closed {
            reason: reason.into(),
        });
        self.forget_presence();
    }

    /// The link dropped and a reconnect is coming: show it, and forget who was online.
    pub fn reconnecting(&self, reason: impl Into<String>, at_ms: u64) {
        self.link.set(LinkStatus::Reconnecting {
            reason: reason.into(),
            at_ms,
        });
        self.forget_presence();
    }

    /// Shows a problem in the room on screen (e.g. a name refused before connecting).
    pub fn local_error(&self, text: impl Into<String>) {
        let room = self.current.get_untracked();
        self.follow(&room);
        self.with_room(&room, |state, view| {
            state.push(view, LineKind::Error { text: text.into() })
        });
    }

    fn forget_presence(&self) {
        self.rooms.update(|rooms| {
            for view in rooms.values_mut() {
                view.online.clear();
                view.online_count = 0;
                view.typing.clear();
                view.joined = false;
                view.join_sent = false;
            }
        });
    }

    /// Drops acknowledged (or seen) messages from `pending`.
    fn settle<'a>(&self, client_ids: impl IntoIterator<Item = &'a str>) {
        let ids: Vec<&str> = client_ids.into_iter().collect();
        if ids.is_empty() {
            return;
        }
        let any = self
            .pending
            .with_untracked(|p| p.iter().any(|p| ids.contains(&p.client_id.as_str())));
        if any {
            self.pending
                .update(|p| p.retain(|p| !ids.contains(&p.client_id.as_str())));
        }
    }

    fn with_room(&self, room: &str, change: impl FnOnce(&Self, &mut RoomView)) {
        self.rooms.update(|rooms| {
            if let Some(view) = rooms.get_mut(room) {
                change(self, view);
            }
        });
    }

    /// Appends the messages past what `view` has shown; the rest it has already.
    fn fill(&self, view: &mut RoomView, messages: Vec<ChatMessage>) {
        for message in messages {
            if message.seq <= view.last_seq {
                continue;
            }
            view.last_seq = message.seq;
            if message.kind != EntryKind::Message {
                self.change_line(view, &message);
                continue;
            }
            if view.first_seq == 0 {
                view.first_seq = message.seq;
            }
            let line = self.message_line(message);
            self.push(view, line.kind);
        }
    }

    /// Applies an edit or delete to the line of the message it changes (and to the quotes of it in
    /// replies), if it is on the page. A changed line takes a new key, so the keyed list renders it
    /// again.
    fn change_line(&self, view: &mut RoomView, change: &ChatMessage) {
        let Some(target) = change.target else {
            return;
        };
        for line in view.lines.iter_mut() {
            let LineKind::Message {
                seq,
                text,
                edited,
                deleted,
                reply_to,
                reactions,
                html,
                ..
            } = &mut line.kind
            else {
                continue;
            };
            if *seq == target {
                match change.kind {
                    EntryKind::Edit => {
                        text.clone_from(&change.text);
                        html.clone_from(&change.html);
                        *edited = true;
                    }
                    EntryKind::Delete => {
                        text.clear();
                        *html = None;
                        *deleted = true;
                    }
                    EntryKind::React => react(reactions, &change.text, &change.from, true),
                    EntryKind::Unreact => react(reactions, &change.text, &change.from, false),
                    EntryKind::Message => continue,
                }
            } else if change.kind == EntryKind::Delete
                && reply_to.as_ref().is_some_and(|quote| quote.seq == target)
            {
                if let Some(quote) = reply_to {
                    quote.text.clear();
                }
            } else {
                continue;
            }
            line.key = self.take_key();
        }
    }

    fn message_line(&self, message: ChatMessage) -> Line {
        Line {
            key: self.take_key(),
            kind: LineKind::Message {
                seq: message.seq,
                from: message.from,
                text: message.text,
                ts: message.ts,
                edited: message.edited,
                deleted: message.deleted,
                reply_to: message.reply_to,
                reactions: message.reactions,
                html: message.html,
            },
        }
    }

    fn push(&self, view: &mut RoomView, kind: LineKind) {
        let key = self.take_key();
        // Not while the reader is up in the history: the lines they are reading stay.
        if view.lines.len() >= MAX_LINES && view.window_end.is_none() {
            view.lines.drain(..=view.lines.len() - MAX_LINES);
            view.first_seq = view
                .lines
                .iter()
                .find_map(|l| match l.kind {
                    LineKind::Message { seq, .. } => Some(seq),
                    _ => None,
                })
                .unwrap_or(view.last_seq);
        }
        view.lines.push(Line { key, kind });
    }

    fn take_key(&self) -> u64 {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        key
    }
}

/// `name`'s reaction `emoji` is now on (or off) a message with `reactions`. Applying the same entry
/// twice (a catch-up's snapshot already had it) changes nothing, by name: exact for every reaction
/// whose names are all listed (up to `MAX_REACTION_NAMES`).
fn react(reactions: &mut Vec<Reaction>, emoji: &str, name: &str, on: bool) {
    let position = reactions.iter().position(|r| r.emoji == emoji);
    match (position, on) {
        (None, true) => reactions.push(Reaction {
            emoji: emoji.to_owned(),
            count: 1,
            names: vec![name.to_owned()],
        }),
        (None, false) => {}
        (Some(i), on) => {
            let Some(reaction) = reactions.get_mut(i) else {
                return;
            };
            let listed = reaction.names.iter().any(|n| n == name);
            if on && !listed {
                reaction.count += 1;
                if reaction.names.len() < MAX_REACTION_NAMES {
                    reaction.names.push(name.to_owned());
                }
            } else if !on && (listed || reaction.count > reaction.names.len()) {
                reaction.count = reaction.count.saturating_sub(1);
                reaction.names.retain(|n| n != name);
                if reaction.count == 0 {
                    reactions.remove(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leptos::prelude::Owner;

    /// A page's state following `rooms` (none yet joined), and the reactive owner it lives under: keep
    /// it for the test's length.
    fn following(rooms: &[&str]) -> (Owner, ChatState) {
        let owner = Owner::new();
        owner.set();
        let chat = ChatState::new("general".into());
        for room in rooms {
            chat.follow(room);
        }
        (owner, chat)
    }

    fn welcome(name: &str) -> ServerEvent {
        ServerEvent::Welcome {
            name: name.into(),
            session: "t".into(),
            limits: WelcomeLimits::default(),
        }
    }

    fn message(room: &str, seq: u64, from: &str, text: &str) -> ServerEvent {
        ServerEvent::Message {
            room: room.into(),
            seq,
            from: from.into(),
            text: text.into(),
            ts: 0,
            client_id: None,
            kind: EntryKind::Message,
            target: None,
            reply_to: None,
            html: None,
        }
    }

    fn stored(seq: u64, text: &str) -> ChatMessage {
        ChatMessage {
            seq,
            from: "ann".into(),
            text: text.into(),
            ts: 0,
            client_id: None,
            ..ChatMessage::default()
        }
    }

    fn joined(room: &str, recovered: bool, messages: Vec<ChatMessage>) -> ServerEvent {
        ServerEvent::Joined {
            room: room.into(),
            recovered,
            messages,
            oldest_seq: 1,
            online: vec!["ann".into(), "bob".into()],
            online_count: 2,
        }
    }

    fn texts(chat: &ChatState, room: &str) -> Vec<String> {
        chat.rooms.with_untracked(|rooms| {
            rooms[room]
                .lines
                .iter()
                .map(|l| match &l.kind {
                    LineKind::Message { text, .. } => text.clone(),
                    LineKind::Joined { name } => format!("+{name}"),
                    LineKind::Left { name } => format!("-{name}"),
                    LineKind::Error { text } => format!("!{text}"),
                })
                .collect()
        })
    }

    #[test]
    fn read_positions_count_what_others_say_and_only_move_forward() {
        let (_owner, chat) = following(&["general"]);
        chat.apply(welcome("bob"));
        let position = |seq, unread| ReadPosition { seq, unread };
        chat.apply(joined("general", false, vec![stored(1, "old")]));
        // Nothing is marked read before the server said where the reader was.
        assert_eq!(chat.mark_read("general"), None);
        chat.apply(ServerEvent::ReadPositions {
            rooms: BTreeMap::from([("general".to_string(), position(1, 3))]),
        });
        // Others' messages count; our own do not.
        chat.apply(message("general", 2, "ann", "one"));
        chat.apply(message("general", 3, "bob", "mine"));
        assert_eq!(chat.read.get_untracked()["general"], position(1, 4));
        // Shown to the reader: read to the last, told to the server once.
        assert_eq!(chat.mark_read("general"), Some(3));
        assert_eq!(chat.mark_read("general"), None);
        assert_eq!(chat.read.get_untracked()["general"], position(3, 0));
        // Another tab's older report does not move it back; a newer one does.
        chat.apply(ServerEvent::ReadPositions {
            rooms: BTreeMap::from([("general".to_string(), position(2, 0))]),
        });
        assert_eq!(chat.read.get_untracked()["general"], position(3, 0));
        chat.apply(ServerEvent::ReadPositions {
            rooms: BTreeMap::from([("general".to_string(), position(5, 0))]),
        });
        assert_eq!(chat.read.get_untracked()["general"], position(5, 0));
    }

    #[test]
    fn a_reconnect_counts_down_to_its_attempt() {
        let link = LinkStatus::Reconnecting {
            reason: "server gone".into(),
            at_ms: 10_000,
        };
        assert_eq!(link.label(6_500), "reconnecting in 4 s… (server gone)");
        assert_eq!(link.label(9_999), "reconnecting in 1 s… (server gone)");
        assert_eq!(link.label(10_000), "reconnecting… (server gone)");
        assert_eq!(LinkStatus::Open.label(0), "connected");
    }

    #[test]
    fn a_mention_is_the_name_after_an_at_in_any_case_and_not_part_of_a_longer_word() {
        assert!(mentions("@ann hi", "ann"));
        assert!(mentions("hi @Ann!", "ann"));
        assert!(mentions("(@ann)", "ann"));
        assert!(mentions("cc @ann lee, see", "Ann Lee"));
        assert!(!mentions("@anna hi", "ann"));
        assert!(!mentions("ann@ann.example", "ann"));
        assert!(!mentions("hi ann", "ann"));
        assert!(!mentions("@ann_b", "ann"));
        assert!(!mentions("@", ""));
    }

    #[test]
    fn mentions_of_you_count_by_room_until_it_is_read() {
        let (_owner, chat) = following(&["general", "dev"]);
        chat.apply(welcome("bob"));
        chat.apply(ServerEvent::ReadPositions {
            rooms: BTreeMap::new(),
        });
        chat.apply(joined("dev", false, vec![]));
        chat.apply(message("dev", 1, "ann", "@bob look"));
        chat.apply(message("dev", 2, "ann", "and @bobby"));
        chat.apply(message("dev", 3, "bob", "@bob talking to myself"));
        chat.apply(message("dev", 4, "ann", "@BOB again"));
        assert_eq!(chat.mentions.get_untracked()["dev"], 2);
        assert_eq!(
            chat.last_mention.get_untracked(),
            Some(Mention {
                room: "dev".into(),
                from: "ann".into(),
                text: "@BOB again".into()
            })
        );
        assert_eq!(chat.mark_read("dev"), Some(4));
        assert!(chat.mentions.get_untracked().is_empty());
    }

    #[test]
    fn each_pending_change_goes_out_as_its_frame() {
        let frame =
            |what, text: &str| Pending::new("c1".into(), "dev".into(), text.into(), what).frame();
        let id = Some("c1".to_string());
        assert_eq!(
            frame(Outgoing::Reply(4), "yes"),
            ClientFrame::Message {
                room: "dev".into(),
                text: "yes".into(),
                client_id: id.clone(),
                reply_to: Some(4)
            }
        );
        assert_eq!(
            frame(Outgoing::Edit(4), "fixed"),
            ClientFrame::Edit {
                room: "dev".into(),
                seq: 4,
                text: "fixed".into(),
                client_id: id.clone()
            }
        );
        assert_eq!(
            frame(Outgoing::Delete(4), ""),
            ClientFrame::Delete {
                room: "dev".into(),
                seq: 4,
                client_id: id.clone()
            }
        );
        assert_eq!(
            frame(Outgoing::React(4), "👍"),
            ClientFrame::React {
                room: "dev".into(),
                seq: 4,
                emoji: "👍".into(),
                client_id: id
            }
        );
        assert!(
            Pending::new("c".into(), "dev".into(), "x".into(), Outgoing::Reply(1)).is_message()
        );
        assert!(
            !Pending::new("c".into(), "dev".into(), "".into(), Outgoing::Delete(1)).is_message()
        );
    }

    #[test]
    fn a_join_refused_for_now_is_asked_again() {
        let (_owner, chat) = following(&["general"]);
        assert_eq!(chat.take_joins(), [("general".to_string(), None)]);
        assert!(chat.take_joins().is_empty(), "asked once");
        chat.apply(ServerEvent::Error {
            code: ErrorCode::Unavailable,
            message: "try again in a moment".into(),
            answers: Some(FrameRef {
                kind: FrameKind::Join,
                room: Some("general".into()),
                client_id: None,
            }),
        });
        assert_eq!(chat.take_joins(), [("general".to_string(), None)]);
        assert!(
            texts(&chat, "general").is_empty(),
            "not shown: {:?}",
            texts(&chat, "general")
        );
    }

    #[test]
    fn pushed_online_counts_update_the_known_ones_and_a_welcome_starts_afresh() {
        let (_owner, chat) = following(&[]);
        let counts = |pairs: &[(&str, usize)]| ServerEvent::RoomCounts {
            counts: pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        };
        chat.apply(counts(&[("general", 2), ("dev", 1)]));
        chat.apply(counts(&[("general", 3), ("dev", 0)]));
        assert_eq!(
            chat.online_counts.get_untracked(),
            BTreeMap::from([("general".to_string(), 3)])
        );
        chat.apply(welcome("bob"));
        assert!(chat.online_counts.get_untracked().is_empty());
    }

    #[test]
    fn events_build_each_rooms_list_and_presence() {
        let (_owner, chat) = following(&["general", "dev"]);
        chat.apply(ServerEvent::Welcome {
            name: "bob".into(),
            session: "t".into(),
            limits: WelcomeLimits {
                max_message_bytes: 1000,
                max_name_chars: 20,
            },
        });
        assert_eq!(chat.limits.get_untracked().max_message_bytes, 1000);
        chat.apply(joined("general", false, vec![stored(1, "old")]));
        chat.apply(ServerEvent::Join {
            room: "general".into(),
            name: "cy".into(),
            ts: 0,
        });
        chat.apply(message("general", 2, "bob", "hi"));
        chat.apply(message("dev", 1, "ann", "elsewhere"));
        chat.apply(message("unfollowed", 1, "ann", "ignored"));
        chat.apply(ServerEvent::Leave {
            room: "general".into(),
            name: "ann".into(),
            ts: 0,
        });
        assert_eq!(chat.link.get_untracked(), LinkStatus::Open);
        assert_eq!(texts(&chat, "general"), ["old", "+cy", "hi", "-ann"]);
        assert_eq!(texts(&chat, "dev"), ["elsewhere"]);
        let general = chat.rooms.with_untracked(|r| r["general"].clone());
        assert_eq!(general.online, ["bob", "cy"]);
        assert_eq!(general.online_count, 2);
        assert_eq!(general.last_seq, 2);
        chat.follow("new");
        assert_eq!(
            chat.take_joins(),
            [("dev".into(), Some(1)), ("new".into(), None)]
        );
        assert_eq!(chat.take_joins(), [], "asked once per link");
    }

    #[test]
    fn nothing_shows_twice_and_a_reset_starts_afresh() {
        let (_owner, chat) = following(&[]);
        chat.seed("general", vec![stored(1, "a"), stored(2, "b")], 1);
        // The replay overlaps what the page was rendered with, and a live message repeats it.
        chat.apply(joined(
            "general",
            true,
            vec![stored(2, "b"), stored(3, "c")],
        ));
        chat.apply(message("general", 3, "ann", "c"));
        chat.apply(message("general", 4, "ann", "d"));
        assert_eq!(texts(&chat, "general"), ["a", "b", "c", "d"]);
        chat.apply(joined("general", false, vec![stored(9, "x")]));
        assert_eq!(texts(&chat, "general"), ["x"]);
        chat.prepend("general", vec![stored(7, "v"), stored(8, "w")], 1);
        assert_eq!(texts(&chat, "general"), ["v", "w", "x"]);
        assert!(chat.rooms.with_untracked(|r| r["general"].has_older()));
    }

    #[test]
    fn pending_messages_settle_on_ack_or_sight() {
        let (_owner, chat) = following(&["general"]);
        for id in ["a", "b"] {
            chat.add_pending(Pending::new(
                id.into(),
                "general".into(),
                id.into(),
                Outgoing::Message,
            ));
        }
        chat.apply(ServerEvent::Ack {
            room: "general".into(),
            seq: 1,
            client_id: Some("a".into()),
        });
        let mut seen = stored(2, "b");
        seen.client_id = Some("b".into());
        assert_eq!(chat.next_to_send(), None, "not joined yet: nothing to send");
        chat.apply(joined("general", true, vec![seen]));
        assert!(chat.pending.get_untracked().is_empty());
        for id in ["c", "d"] {
            chat.add_pending(Pending::new(
                id.into(),
                "general".into(),
                id.into(),
                Outgoing::Message,
            ));
        }
        assert_eq!(
            chat.next_to_send().map(|p| p.client_id),
            Some("c".into()),
            "oldest first"
        );
        chat.drop_pending("c");
        assert!(!chat.is_pending("c") && chat.is_pending("d"));
    }

    #[test]
    fn reconnects_back_off_exponentially_with_jitter_and_a_cap() {
        assert_eq!(backoff_ms(1, 0.5), 500.0);
        assert_eq!(backoff_ms(2, 0.5), 1_000.0);
        assert_eq!(backoff_ms(5, 0.5), 8_000.0);
        assert_eq!(backoff_ms(50, 0.5), BACKOFF_CAP_MS);
        // The jitter spreads one attempt over [0.5, 1.5) of its delay: 10,000 pages restarting at once
        // come back over half a second, not in one millisecond.
        let spread: Vec<f64> = (0..10_000)
            .map(|i| backoff_ms(1, i as f64 / 10_000.0))
            .collect();
        assert_eq!(spread[0], 250.0);
        assert!(spread[9_999] < 750.0);
        let busiest_ms = spread
            .chunk_by(|a, b| a.floor() == b.floor())
            .map(<[f64]>::len)
            .max()
            .unwrap();
        assert!(
            // Evenly spread: 20 a millisecond (21 where a boundary falls between two).
            busiest_ms <= 21,
            "{busiest_ms} reconnects in one millisecond"
        );
    }

    #[test]
    fn the_window_draws_a_bounded_run_of_lines_and_keeps_it_while_lines_come_and_go_around_it() {
        let (_owner, chat) = following(&["general"]);
        for seq in 1001..=1500 {
            chat.apply(message("general", seq, "x", &seq.to_string()));
        }
        let window = || chat.rooms.with_untracked(|r| r["general"].window());
        let first_drawn = || {
            chat.rooms.with_untracked(|r| {
                let view = &r["general"];
                match &view.lines[view.window().start].kind {
                    LineKind::Message { seq, .. } => *seq,
                    _ => 0,
                }
            })
        };
        assert_eq!(window(), 500 - WINDOW..500, "the newest, at most WINDOW");
        assert!(!chat.move_window("general", false), "already at the newest");

        assert!(chat.move_window("general", true));
        assert_eq!(window(), 500 - WINDOW - WINDOW_STEP..500 - WINDOW_STEP);
        assert!(chat.move_window("general", true));
        assert_eq!(window(), 0..WINDOW, "a step stops at the oldest loaded");
        assert!(!chat.move_window("general", true));

        // Older lines paged in above, a new message below: the window stays on the same lines, and
        // nothing is trimmed under the reader.
        chat.prepend(
            "general",
            (951..=1000).map(|s| stored(s, "old")).collect(),
            1,
        );
        assert_eq!(first_drawn(), 1001);
        for seq in 1501..=1500 + MAX_LINES as u64 {
            chat.apply(message("general", seq, "x", "new"));
        }
        assert_eq!(first_drawn(), 1001);
        assert_eq!(
            chat.rooms.with_untracked(|r| r["general"].lines.len()),
            550 + MAX_LINES
        );
        assert!(chat.move_window("general", true));
        assert_eq!(first_drawn(), 951);

        // Down, a step at a time, to the newest, which it then follows (and the list is trimmed).
        let mut steps = 0;
        while chat.move_window("general", false) {
            steps += 1;
        }
        assert_eq!(steps, (550 + MAX_LINES - WINDOW).div_ceil(WINDOW_STEP));
        assert_eq!(chat.rooms.with_untracked(|r| r["general"].window_end), None);
        chat.apply(message("general", 2501, "x", "newest"));
        assert_eq!(
            chat.rooms.with_untracked(|r| r["general"].lines.len()),
            MAX_LINES
        );
        assert_eq!(first_drawn(), 2501 - WINDOW as u64 + 1);

        // To a message: the window moves to show it; to one not loaded, it stays.
        assert!(chat.window_to("general", 1600));
        assert!(chat.rooms.with_untracked(|r| {
            let view = &r["general"];
            view.lines[view.window()]
                .iter()
                .any(|l| matches!(l.kind, LineKind::Message { seq: 1600, .. }))
        }));
        let there = window();
        assert!(!chat.window_to("general", 5));
        assert_eq!(window(), there);
        chat.window_to_newest("general");
        assert_eq!(window(), MAX_LINES - WINDOW..MAX_LINES);
    }

    #[test]
    fn the_list_is_capped() {
        let (_owner, chat) = following(&["general"]);
        for i in 0..MAX_LINES as u64 + 10 {
            chat.apply(message("general", i + 1, "x", &i.to_string()));
        }
        let view = chat.rooms.with_untracked(|r| r["general"].clone());
        assert_eq!(view.lines.len(), MAX_LINES);
        assert_eq!(view.first_seq, 11);
    }
}
