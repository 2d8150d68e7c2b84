//! The wire protocol: every frame that crosses the `/ws` socket, defined once and compiled into both the
//! server (`ssr`) and the WASM client (`hydrate`), so the two cannot drift apart.
//!
//! Frames are JSON text frames tagged by `type`. `docs/protocol.md` shows an example of every one.
//! A client frame whose first non-blank character is not `{` is plain message text (see
//! [`ClientFrame::parse`]), which keeps `websocat ws://127.0.0.1:3000/ws` usable as a terminal client.

use std::collections::BTreeMap;

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize};

/// Longest name a person may choose or be given, in characters (not bytes).
pub const MAX_NAME_CHARS: usize = 32;

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 40;

/// Longest WebSocket message the server takes by default, in bytes (`--max-message-bytes`; the welcome
/// tells a client the server's actual limit).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest client-chosen message id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

/// The room every connection follows unless it asks otherwise, and the page's first room.
pub const DEFAULT_ROOM: &str = "general";

fn default_room() -> String {
    DEFAULT_ROOM.to_owned()
}

/// A frame the client sends to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Say something in a room this connection follows (`general` if not given). With a `client_id`
    /// (unique per sender, up to 64 bytes) the message is stored once however often it is sent: resending
    /// after a reconnect is safe, and the [`ServerEvent::Ack`] carries the sequence number it got.
    Message {
        #[serde(default = "default_room")]
        room: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// The `seq` of the message in `room` this one answers: it is sent with a quote of it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// Change the text of your own message `seq` in `room` (marked edited for everyone). `client_id`
    /// as for a message: stored once however often sent.
    Edit {
        room: String,
        seq: u64,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// React to message `seq` in `room` with `emoji`, or take that reaction back if you had it (a
    /// toggle, decided by the server: the entry it stores says which).
    React {
        room: String,
        seq: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// You have read `room` up to `seq`: stored for you (the person: every tab, every node, across
    /// restarts), and told to your other tabs. A position never moves back.
    Read { room: String, seq: u64 },
    /// Delete your own message `seq` in `room`: "message deleted" stands in its place.
    Delete {
        room: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// Follow a room, creating it if it is new. `after`: the last sequence number this client has of it;
    /// the server then replays exactly the messages after it (see [`ServerEvent::Joined`]). Without it,
    /// the room's latest messages.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Stop following a room.
    Leave { room: String },
    /// The person is typing in `room`. Pages send it at most every few seconds while typing; the server
    /// forgets it after a few seconds without one.
    Typing { room: String },
    /// Are you there? The server answers [`ServerEvent::Pong`]. Browsers cannot see WebSocket pings, so
    /// the page uses this to notice a dead link.
    Ping,
}

/// Why a client frame could not be understood; each maps to an [`ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The frame starts like a JSON object but is not valid JSON.
    BadJson(String),
    /// Valid JSON, but not a frame this server knows (missing or unknown `type`, wrong fields).
    UnknownType(String),
}

impl ClientFrame {
    /// A frame that is not a JSON object (its first non-blank character is not `{`): a terminal
    /// client's line of message text.
    pub fn is_plain_text(raw: &str) -> bool {
        !raw.trim_start().starts_with('{')
    }

    /// Reads one text frame. JSON objects are parsed strictly; anything else is plain message text (for
    /// the default room here; the server sends it to the first room the connection follows).
    pub fn parse(raw: &str) -> Result<ClientFrame, FrameError> {
        if Self::is_plain_text(raw) {
            return Ok(ClientFrame::Message {
                room: default_room(),
                text: raw.to_owned(),
                client_id: None,
                reply_to: None,
            });
        }
        // Two steps, so that "this is not JSON" and "this is JSON we don't understand" get distinct
        // error codes: the first tells a client it has a serialization bug, the second a version skew.
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| FrameError::BadJson(e.to_string()))?;
        serde_json::from_value(value).map_err(|e| FrameError::UnknownType(e.to_string()))
    }
}

/// What an entry of a room's log is: a message, or a change its author made to an earlier one. Each
/// has its own `seq`, so a client catching up with `after` gets the changes too, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    #[default]
    Message,
    /// Message `target` now reads `text`.
    Edit,
    /// Message `target` was deleted: "message deleted" stands in its place.
    Delete,
    /// `from` reacted to message `target` with the emoji `text`.
    React,
    /// `from` took back their reaction `text` to message `target`.
    Unreact,
}

impl EntryKind {
    fn is_message(&self) -> bool {
        *self == EntryKind::Message
    }
}

/// The start of the message a reply answers, as it read when the reply was sent (emptied if that
/// message is deleted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub seq: u64,
    pub from: String,
    /// Its first line, at most [`QUOTE_CHARS`] characters.
    pub text: String,
}

/// Longest quote of a replied-to message, in characters.
pub const QUOTE_CHARS: usize = 120;

impl Quote {
    /// The quote of message `seq` by `from` whose text is `text`: its first line, at most
    /// [`QUOTE_CHARS`] characters. The one rule, for the quote the server stores with a reply and the
    /// one the page shows while the reply is written.
    pub fn of(seq: u64, from: String, text: &str) -> Quote {
        Quote {
            seq,
            from,
            text: text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(QUOTE_CHARS)
                .collect(),
        }
    }
}

/// One entry of a room's log, as history pages, replays and the bus carry it. A message is given in
/// its current state: `edited`, or `deleted` (then its text is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The room's sequence number: 1, 2, 3… with no gaps, in the order the server stored them.
    pub seq: u64,
    pub from: String,
    pub text: String,
    /// Server time the message was stored, in milliseconds since the Unix epoch.
    pub ts: u64,
    /// The sender's own id for it, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "EntryKind::is_message")]
    pub kind: EntryKind,
    /// For an edit or a delete: the `seq` of the message it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// For a reply: what it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Quote>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The text as HTML, when it has formatting (a safe Markdown subset, rendered by the server: see
    /// docs/protocol.md); without it, the text is shown as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// A message's reactions, as they are now (in `joined` and history pages; live, a client applies
    /// `react` and `unreact` entries to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

/// One emoji's reactions to a message: how many people, and who (the first [`MAX_REACTION_NAMES`],
/// in the order they reacted, to the millisecond). A person counts once per emoji, whatever their number of tabs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: usize,
    pub names: Vec<String>,
}

/// Most names one [`Reaction`] lists.
pub const MAX_REACTION_NAMES: usize = 50;
/// Longest reaction, in bytes (an emoji, with its modifiers and joiners).
pub const MAX_REACTION_BYTES: usize = 32;
/// Most different emoji on one message: past it, a new one is refused.
pub const MAX_REACTION_KINDS: usize = 20;

/// Checks a reaction: 1–[`MAX_REACTION_BYTES`] bytes, with no whitespace or control character.
pub fn validate_reaction(emoji: &str) -> Result<(), &'static str> {
    if emoji.is_empty() || emoji.len() > MAX_REACTION_BYTES {
        return Err("a reaction is 1 to 32 bytes");
    }
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a reaction has no spaces or control characters");
    }
    Ok(())
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Defines `ServerEvent` from its variants, and `EventFields` from the same variants: serde's derive for
/// them as an enum tagged from outside, with no `tag`, which `ServerEvent`'s `Deserialize` (see there)
/// reads once it has read the `type`. One list of variants, so the two cannot drift apart.
macro_rules! server_event {
    ($(#[$attr:meta])* pub enum ServerEvent { $($variants:tt)* }) => {
        $(#[$attr])*
        pub enum ServerEvent { $($variants)* }

        #[derive(Deserialize)]
        #[serde(remote = "ServerEvent", rename_all = "snake_case")]
        // Never built: the derive builds `ServerEvent`s from it.
        #[allow(dead_code)]
        enum EventFields { $($variants)* }
    };
}

server_event! {
/// A frame the server sends to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// First frame on every accepted connection: who you are.
    Welcome {
        /// Your name for as long as this connection lasts.
        name: String,
        /// A signed token for this person and name. Presented again (the `chat_session` cookie) it
        /// reclaims the same name, and all connections with it count as one person.
        session: String,
        /// This server's limits, so that a client can refuse what the server would.
        limits: WelcomeLimits,
    },
    /// You now follow `room`. Followed by the room's live events, starting right after `messages`.
    Joined {
        room: String,
        /// True: `messages` are exactly those after the `after` you asked for. False: your `after` was
        /// missing, too old (pruned, or too far behind) or unknown to the server, and `messages` are the
        /// room's latest: start the room afresh from them.
        recovered: bool,
        messages: Vec<ChatMessage>,
        /// The room's oldest stored sequence number (older pages can be fetched down to it), or 0 if
        /// it has no history.
        oldest_seq: u64,
        /// Who follows the room now, you included, in the order they came; in a room larger than the
        /// server's presence limit, only the first that many.
        online: Vec<String>,
        online_count: usize,
    },
    /// Someone said something in `room`, or changed what they said (`kind` `edit` or `delete`, with
    /// the `target` message); fields as in [`ChatMessage`]. The sender receives its own too.
    Message {
        room: String,
        seq: u64,
        from: String,
        text: String,
        ts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "EntryKind::is_message")]
        kind: EntryKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Quote>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        html: Option<String>,
    },
    /// Your message is stored (durably) as `seq` in `room`. Sent once per `message` frame, also for a
    /// resend of one already stored.
    Ack {
        room: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// Someone came online in `room` (their first connection following it). Not sent in rooms larger
    /// than the server's presence limit, where it would be noise (and quadratic work).
    Join { room: String, name: String, ts: u64 },
    /// Someone went offline in `room` (their last connection following it left).
    Leave { room: String, name: String, ts: u64 },
    /// Who is typing in `room` now (sent whenever that changes; empty when no one is).
    Typing { room: String, names: Vec<String> },
    /// Something the client sent was refused; unless followed by a close frame the connection is fine.
    Error {
        code: ErrorCode,
        message: String,
        /// The frame this answers, when the error is about one frame (not, say, a bad name at connect).
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        answers: Option<FrameRef>,
    },
    /// The answer to [`ClientFrame::Ping`].
    Pong,
    /// How many people are online in rooms, room by room, across the whole server (every node of a
    /// cluster): right after the welcome, every room with people in it (the fullest
    /// [`MAX_ROOM_COUNTS`], as of the last push); then, at most every 2 seconds (the server's
    /// `--room-counts-every`) and only when something changed, the rooms whose count changed, `0`
    /// meaning no one is there any more. What a room list shows, without polling.
    RoomCounts { counts: BTreeMap<String, usize> },
    /// Where you (the person) have read to, room by room: after the welcome, your rooms with a
    /// position (the [`MAX_READ_POSITIONS`] read last), with how many messages came after it (counted
    /// up to [`MAX_UNREAD`]); then, as one of your tabs moves a position, that room alone (`unread`
    /// 0).
    ReadPositions {
        rooms: BTreeMap<String, ReadPosition>,
    },
}
}

/// Reads a server event whose `type` comes first, as the server writes every one (serde writes an
/// internally tagged enum's tag first), so not from a `serde_json::Value` (its keys are sorted). Not
/// serde's derive for `tag = "type"`: to find the tag anywhere, that one reads every event into a tree
/// of values first, and then each field from the tree, which put a second copy of the reading code of
/// every type in an event into the page's WASM (11 KB of its 258 with brotli).
impl<'de> Deserialize<'de> for ServerEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TypeFirst)
    }
}

/// Reads the `type` of an event, and hands the rest of the object to `EventFields`.
struct TypeFirst;

impl<'de> Visitor<'de> for TypeFirst {
    type Value = ServerEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a server event: an object whose first key is `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerEvent, A::Error> {
        if map.next_key::<String>()?.as_deref() != Some("type") {
            return Err(de::Error::custom("a server event's first key is `type`"));
        }
        EventFields::deserialize(RestOfEvent(map))
    }
}

/// An event whose `type` was read, as the variant of an enum tagged from outside: the variant's name
/// is the `type`'s value, and its fields are the object's other keys.
struct RestOfEvent<A>(A);

impl<'de, A: MapAccess<'de>> Deserializer<'de> for RestOfEvent<A> {
    type Error = A::Error;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    /// `EventFields` asks for an enum only.
    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a server event is read as an enum"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for RestOfEvent<A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        mut self,
        seed: V,
    ) -> Result<(V::Value, Self), A::Error> {
        let variant = self.0.next_value_seed(seed)?;
        Ok((variant, self))
    }
}

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for RestOfEvent<A> {
    type Error = A::Error;

    /// `pong`: its other keys, if any, are ignored (as those a struct variant does not know).
    fn unit_variant(mut self) -> Result<(), A::Error> {
        while self.0.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    /// Every variant has named fields or none.
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, A::Error> {
        Err(de::Error::custom("no server event is a newtype variant"))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("no server event is a tuple variant"))
    }
}

/// One room's read position: the `seq` read to, and how many messages came after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPosition {
    pub seq: u64,
    pub unread: u64,
}

/// Most rooms a [`ServerEvent::ReadPositions`] lists after the welcome.
pub const MAX_READ_POSITIONS: usize = 100;
/// Unread messages are counted up to this many ("999+").
pub const MAX_UNREAD: u64 = 999;

/// Most rooms one [`ServerEvent::RoomCounts`] lists (so its size is bounded by the room name's limit).
pub const MAX_ROOM_COUNTS: usize = 256;

/// A server's limits, as the welcome tells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeLimits {
    /// Longest message (a WebSocket message's payload) the server takes, in bytes; a longer one closes
    /// the connection (1009).
    pub max_message_bytes: usize,
    /// Longest name, in characters.
    pub max_name_chars: usize,
}

impl Default for WelcomeLimits {
    /// A server's defaults: what a client assumes until it is welcomed.
    fn default() -> Self {
        WelcomeLimits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_name_chars: MAX_NAME_CHARS,
        }
    }
}

/// Which client frame an [`ServerEvent::Error`] answers: its type, and its room and `client_id` when it
/// had them. A client with several frames in flight can tell which one was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRef {
    #[serde(rename = "type")]
    pub kind: FrameKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// The type of a [`ClientFrame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    Message,
    Edit,
    Delete,
    React,
    Read,
    Join,
    Leave,
    Typing,
    Ping,
}

impl ClientFrame {
    /// What an error about this frame says it answers.
    pub fn reference(&self) -> FrameRef {
        let (kind, room, client_id) = match self {
            ClientFrame::Message {
                room, client_id, ..
            } => (FrameKind::Message, Some(room), client_id.clone()),
            ClientFrame::Edit {
                room, client_id, ..
            } => (FrameKind::Edit, Some(room), client_id.clone()),
            ClientFrame::Delete {
                room, client_id, ..
            } => (FrameKind::Delete, Some(room), client_id.clone()),
            ClientFrame::React {
                room, client_id, ..
            } => (FrameKind::React, Some(room), client_id.clone()),
            ClientFrame::Read { room, .. } => (FrameKind::Read, Some(room), None),
            ClientFrame::Join { room, .. } => (FrameKind::Join, Some(room), None),
            ClientFrame::Leave { room } => (FrameKind::Leave, Some(room), None),
            ClientFrame::Typing { room } => (FrameKind::Typing, Some(room), None),
            ClientFrame::Ping => (FrameKind::Ping, None, None),
        };
        FrameRef {
            kind,
            room: room.cloned(),
            client_id,
        }
    }
}

/// Machine-readable reason carried by [`ServerEvent::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame looked like JSON but did not parse.
    BadJson,
    /// The JSON frame has a missing or unknown `type`, or fields that type does not take.
    UnknownType,
    /// A binary frame: this protocol is text only.
    BinaryFrame,
    /// A message with nothing but whitespace in it.
    EmptyMessage,
    /// The requested name is not 1–32 printable characters. The connection is then closed.
    BadName,
    /// Someone connected already uses that name. The connection is then closed.
    NameTaken,
    /// A room name that is not 1–40 lowercase letters, digits or `-`.
    BadRoom,
    /// A message or typing notice for a room this connection does not follow (join it first).
    NotJoined,
    /// A join of a room this connection already follows.
    AlreadyJoined,
    /// A join past the number of rooms one connection may follow.
    TooManyRooms,
    /// A join that would create a new room, past the number of rooms one person may create per minute.
    TooManyNewRooms,
    /// A `client_id` that is empty, longer than 64 bytes, or has control characters.
    BadClientId,
    /// Too many frames too fast: this one was dropped. If it goes on, the connection is closed (1008).
    RateLimited,
    /// A message over the size limit. The connection is then closed (1009).
    TooBig,
    /// The server cannot take this now (shutting down, full, or its store failed): try again.
    Unavailable,
    /// The page's origin may not open a socket on this server.
    ForbiddenOrigin,
    /// Message text with control characters other than line feed and tab. The connection stays open.
    BadText,
    /// An HTTP request for a host name this server does not answer to (HTTP 421; see `--allowed-hosts`).
    ForbiddenHost,
    /// An edit or delete of a message that is not yours.
    NotAuthor,
    /// A reply to, edit, delete of or reaction to a message the room does not have (or no longer has:
    /// deleted, or gone by retention).
    NoSuchMessage,
    /// A reaction that is not 1–32 bytes without spaces, or a new emoji on a message that has 20.
    BadReaction,
    /// The operator banned this person or name: from the server (at connect, and then the connection
    /// is closed with 1008), or from the room a join or message names (the connection stays).
    Banned,
}

/// Checks a room name: 1–[`MAX_ROOM_CHARS`] characters, each a lowercase ASCII letter, a digit or `-`.
/// Used by the server to accept a room and by the page to refuse one before asking.
pub fn validate_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_CHARS {
        return Err(format!("a room name has 1 to {MAX_ROOM_CHARS} characters"));
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a room name may only have lowercase letters, digits and '-'".into());
    }
    Ok(())
}

/// Checks a requested name and returns it trimmed: 1–`max_chars` characters (the server's setting,
/// [`MAX_NAME_CHARS`] by default) with at least one visible character, and none that hides, reorders or
/// breaks text: no control characters, no line breaks, no bidirectional controls, no zero-width or
/// other default-ignorable characters (a joiner or variation selector is allowed only inside an emoji or
/// other non-ASCII sequence, e.g. 👩‍💻). Used by the server to accept a name and by the client to refuse
/// one before connecting.
///
/// These are the cheap checks, compiled into the page too. The server also compares names by their
/// confusable skeleton (`server::names::name_key`), whose Unicode tables stay out of the page's WASM.
pub fn validate_name(raw: &str, max_chars: usize) -> Result<String, String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars > max_chars {
        return Err(format!(
            "a name may have at most {max_chars} characters, this one has {chars}"
        ));
    }
    if name.chars().any(|c| c.is_control() || is_line_break(c)) {
        return Err("a name may not contain control characters".into());
    }
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if is_default_ignorable(c) {
            // A joiner or variation selector right after a non-ASCII character is part of an emoji
            // (👩‍💻, ❤️) or a script's spelling; after ASCII (or first) it only hides something.
            let joins = matches!(c, '\u{200D}' | '\u{FE0E}' | '\u{FE0F}')
                && previous.is_some_and(|p| !p.is_ascii());
            if !joins {
                return Err(format!(
                    "a name may not contain invisible or direction-changing characters (U+{:04X})",
                    c as u32
                ));
            }
        }
        previous = Some(c);
    }
    if !name.chars().any(is_visible) {
        return Err("a name needs at least one visible character".into());
    }
    Ok(name.to_owned())
}

/// Checks a message's text: no C0 control characters (below U+0020) but line feeds and tabs. Others (NUL, escape, a
/// carriage return, …) show as nothing or as garbage, and each costs six bytes (`\u001b`) in every
/// JSON frame that carries it. Used by the server to accept a message and by the page to refuse one.
pub fn validate_text(text: &str) -> Result<(), String> {
    match text.chars().find(|&c| c < ' ' && c != '\n' && c != '\t') {
        Some(c) => Err(format!(
            "message text may not contain control characters (U+{:04X}); only line breaks and tabs",
            c as u32
        )),
        None => Ok(()),
    }
}

/// Line and paragraph separators: not control characters, but they break a name over lines.
fn is_line_break(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}')
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters that render as
/// nothing, among them the zero-width space and joiners, the bidirectional controls (U+202A–U+202E,
/// U+2066–U+2069, U+200E/F, U+061C), the soft hyphen, variation selectors and tag characters. Short
/// enough to keep in the page.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{61C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// A character that leaves a mark: not blank, not ignorable, not a lone combining mark's usual home
/// (the Braille blank and Hangul fillers render as empty space too).
fn is_visible(c: char) -> bool {
    !c.is_whitespace()
        && !is_default_ignorable(c)
        && !matches!(
            c,
            '\u{2800}' | '\u{3164}' | '\u{FFA0}' | '\u{115F}' | '\u{1160}'
        )
        && !is_combining_mark(c)
}

/// The main blocks of combining marks, which draw on the character before them and alone draw
/// (almost) nothing.
fn is_combining_mark(c: char) -> bool {
    matches!(
        c,
        '\u{300}'..='\u{36F}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaction_is_1_to_32_bytes_without_spaces() {
        assert_eq!(validate_reaction("👍"), Ok(()));
        assert_eq!(validate_reaction(&"é".repeat(16)), Ok(()));
        assert!(validate_reaction("").is_err());
        assert!(validate_reaction(&"é".repeat(17)).is_err(), "34 bytes");
        assert!(validate_reaction("a b").is_err());
        assert!(validate_reaction("a\u{0}").is_err());
    }

    #[test]
    fn plain_text_is_a_message() {
        assert_eq!(
            ClientFrame::parse("hello there"),
            Ok(ClientFrame::Message {
                room: "general".into(),
                text: "hello there".into(),
                client_id: None,
                reply_to: None,
            })
        );
        // JSON that is not an object is still someone's text, e.g. a quoted word or a number.
        assert!(matches!(
            ClientFrame::parse("42"),
            Ok(ClientFrame::Message { text, .. }) if text == "42"
        ));
    }

    #[test]
    fn json_frames_parse_strictly() {
        assert_eq!(
            ClientFrame::parse(r#" {"type":"message","text":"hi"}"#),
            Ok(ClientFrame::Message {
                room: "general".into(),
                text: "hi".into(),
                client_id: None,
                reply_to: None,
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"join","room":"dev","after":7}"#),
            Ok(ClientFrame::Join {
                room: "dev".into(),
                after: Some(7),
            })
        );
        assert!(matches!(
            ClientFrame::parse("{not json"),
            Err(FrameError::BadJson(_))
        ));
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"dance"}"#),
            Err(FrameError::UnknownType(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"text":"no type"}"#),
            Err(FrameError::UnknownType(_))
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"message","text":"x","extra":1}"#),
            Err(FrameError::UnknownType(_))
        ));
    }

    #[test]
    fn events_are_tagged_by_type() {
        let json = serde_json::to_string(&ServerEvent::Error {
            code: ErrorCode::NameTaken,
            message: "taken".into(),
            answers: None,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"name_taken","message":"taken"}"#
        );
    }

    /// Every frame of docs/protocol.md's "Server → client" reads as an event, which is written back
    /// as the docs show it (the same JSON, whose keys the docs do not always sort as a map does).
    #[test]
    fn documented_events_read_and_write_back() {
        let docs = include_str!("../docs/protocol.md");
        let section = docs
            .split("## Server → client")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap();
        let frames: Vec<&str> = section
            .lines()
            .filter(|line| line.starts_with(r#"{"type":"#))
            .collect();
        let mut types = std::collections::HashSet::new();
        for frame in frames {
            let event: ServerEvent =
                serde_json::from_str(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
            let written: serde_json::Value = serde_json::to_value(&event).unwrap();
            assert_eq!(
                written,
                serde_json::from_str::<serde_json::Value>(frame).unwrap()
            );
            types.insert(std::mem::discriminant(&event));
        }
        assert_eq!(types.len(), 11, "the docs show every type of event");
    }

    /// Every variant, with and without its optional fields, reads back as written.
    #[test]
    fn events_read_back_as_written() {
        let message = ChatMessage {
            seq: 7,
            from: "alice".into(),
            text: "hi".into(),
            ts: 1_795_500_000_000,
            client_id: Some("c1".into()),
            kind: EntryKind::Edit,
            target: Some(6),
            reply_to: Some(Quote {
                seq: 5,
                from: "bob".into(),
                text: "hello".into(),
            }),
            edited: true,
            deleted: true,
            html: Some("<b>hi</b>".into()),
            reactions: vec![Reaction {
                emoji: "👍".into(),
                count: 2,
                names: vec!["bob".into(), "carol".into()],
            }],
        };
        let events = [
            ServerEvent::Welcome {
                name: "Zoë".into(),
                session: "token".into(),
                limits: WelcomeLimits::default(),
            },
            ServerEvent::Joined {
                room: "dev".into(),
                recovered: false,
                messages: vec![message.clone(), ChatMessage::default()],
                oldest_seq: 1,
                online: vec!["alice".into()],
                online_count: 1,
            },
            ServerEvent::Message {
                room: "dev".into(),
                seq: 8,
                from: "alice".into(),
                text: "a \"quoted\" \\ line\n".into(),
                ts: 1,
                client_id: Some("c2".into()),
                kind: EntryKind::Unreact,
                target: Some(7),
                reply_to: message.reply_to.clone(),
                html: Some("<p>x</p>".into()),
            },
            ServerEvent::Message {
                room: "dev".into(),
                seq: 9,
                from: "bob".into(),
                text: String::new(),
                ts: 2,
                client_id: None,
                kind: EntryKind::Message,
                target: None,
                reply_to: None,
                html: None,
            },
            ServerEvent::Ack {
                room: "dev".into(),
                seq: 8,
                client_id: None,
            },
            ServerEvent::Join {
                room: "dev".into(),
                name: "bob".into(),
                ts: 3,
            },
            ServerEvent::Leave {
                room: "dev".into(),
                name: "bob".into(),
                ts: 4,
            },
            ServerEvent::Typing {
                room: "dev".into(),
                names: vec![],
            },
            ServerEvent::Error {
                code: ErrorCode::Banned,
                message: "no".into(),
                answers: Some(FrameRef {
                    kind: FrameKind::React,
                    room: Some("dev".into()),
                    client_id: Some("c3".into()),
                }),
            },
            ServerEvent::Pong,
            ServerEvent::RoomCounts {
                counts: BTreeMap::from([("dev".into(), 0), ("general".into(), 12)]),
            },
            ServerEvent::ReadPositions {
                rooms: BTreeMap::from([(
                    "dev".into(),
                    ReadPosition {
                        seq: 3,
                        unread: 999,
                    },
                )]),
            },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(
                serde_json::from_str::<ServerEvent>(&json).unwrap(),
                event,
                "{json}"
            );
            // From bytes too, as the integration tests' clients read them.
            assert_eq!(
                serde_json::from_slice::<ServerEvent>(json.as_bytes()).unwrap(),
                event
            );
        }
    }

    #[test]
    fn an_event_is_read_from_its_type_first() {
        let read = |json: &str| serde_json::from_str::<ServerEvent>(json);
        // Keys it does not know are skipped, as before, also after a `pong`'s type.
        assert_eq!(
            read(r#"{"type":"join","room":"dev","name":"bob","ts":3,"new":[1,{"a":2}]}"#).unwrap(),
            ServerEvent::Join {
                room: "dev".into(),
                name: "bob".into(),
                ts: 3
            }
        );
        assert_eq!(
            read(r#"{"type":"pong","new":{"a":[]}}"#).unwrap(),
            ServerEvent::Pong
        );
        for refused in [
            r#"{"room":"dev","type":"typing","names":[]}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"typing","room":"dev"}"#,
            r#"{"type":7}"#,
            r#"{}"#,
            r#"["pong"]"#,
            r#""pong""#,
        ] {
            assert!(read(refused).is_err(), "{refused} accepted");
        }
    }

    #[test]
    fn errors_say_which_frame_they_answer() {
        let typing = ClientFrame::parse(r#"{"type":"typing","room":"dev"}"#).unwrap();
        let json = serde_json::to_string(&ServerEvent::Error {
            code: ErrorCode::NotJoined,
            message: "join it first".into(),
            answers: Some(typing.reference()),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"not_joined","message":"join it first","ref":{"type":"typing","room":"dev"}}"#
        );
        let message =
            ClientFrame::parse(r#"{"type":"message","text":"hi","client_id":"c1"}"#).unwrap();
        assert_eq!(
            message.reference().client_id.as_deref(),
            Some("c1"),
            "a refused message names its client_id"
        );
    }

    #[test]
    fn room_names() {
        assert!(validate_room("general").is_ok());
        assert!(validate_room("rust-2026").is_ok());
        assert!(validate_room(&"a".repeat(MAX_ROOM_CHARS)).is_ok());
        assert!(validate_room("").is_err());
        assert!(validate_room(&"a".repeat(MAX_ROOM_CHARS + 1)).is_err());
        assert!(validate_room("General").is_err());
        assert!(validate_room("a b").is_err());
        assert!(validate_room("é").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let valid = |name: &str| validate_name(name, MAX_NAME_CHARS);
        assert_eq!(valid("  alice "), Ok("alice".into()));
        assert_eq!(valid("Zoë 🦀"), Ok("Zoë 🦀".into()));
        assert!(valid("   ").is_err());
        assert!(valid(&"x".repeat(33)).is_err());
        assert!(valid(&"é".repeat(32)).is_ok());
        assert!(valid("tab\tname").is_err());
        assert!(validate_name("alice", 4).is_err());
    }

    #[test]
    fn names_may_not_hide_or_reorder_text() {
        let valid = |name: &str| validate_name(name, MAX_NAME_CHARS).is_ok();
        for hidden in [
            "alice\u{200B}",
            "\u{202E}ecila",
            "\u{200B}",
            "al\u{AD}ice",
            "\u{2066}alice\u{2069}",
            "alice\u{200D}",
            "alice\u{FE0F}",
            "\u{3164}",
            "\u{2800}",
            "\u{301}",
            "a\u{2028}b",
            "\u{E0041}",
        ] {
            assert!(!valid(hidden), "{hidden:?} accepted");
        }
        for fine in [
            "👩\u{200D}💻 dev",
            "Ali ❤\u{FE0F}",
            "Zoë",
            "李小龍",
            "mañana",
            "e\u{301}",
        ] {
            assert!(valid(fine), "{fine:?} refused");
        }
    }

    #[test]
    fn message_text_has_no_control_characters_but_newlines_and_tabs() {
        assert!(validate_text("two\nlines\tand a tab").is_ok());
        assert!(validate_text("emoji 🦀 and é").is_ok());
        assert!(validate_text("nul\u{0}").is_err());
        assert!(validate_text("esc\u{1b}[31m").is_err());
        assert!(validate_text("cr\r\n").is_err());
    }
}
