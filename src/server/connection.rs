//! One chat connection, from handshake to goodbye, as a single task on the raw `TcpStream`.
//!
//! The task waits on several things at once (`tokio::select!`):
//! - **new frames**: in the fan-out logs of the rooms it follows, past its cursor in each, or personal
//!   ones in its [`Outbox`]. It takes every frame waiting (up to [`WRITE_BATCH`]) and writes them with
//!   one vectored write: a burst
//!   costs one system call, not one per frame. The frames are already encoded (see `websocket.rs`), so
//!   nothing is copied per recipient;
//! - **the socket becoming writable** again, when a write could not take everything;
//! - **the socket becoming readable**: each client message is rate-limited, parsed and handled: a chat
//!   message goes to the history writer (which stores it, then has the manager publish it), a join
//!   starts a task that reads the room's history for the replay, the rest goes to the
//!   [`ConnectionManager`](super::manager::ConnectionManager). On the original chat's format
//!   ([`WireFormat::Legacy`]) every text frame is a chat message, and a refusal closes the connection
//!   (it has no error frames);
//! - **a kick**: the manager disconnecting it (too slow, shutdown);
//! - its **heartbeat** timer: a ping after a quiet spell, and a drop if the ping goes unanswered.
//!
//! Reading and writing never block each other: a client that stops reading still has its frames read,
//! and while frames wait to be written the task takes no more from the log, so a client that stops
//! reading falls behind in the log until the manager drops it (1013).
//!
//! Memory: an idle connection holds its socket, this task and its outbox, and no buffer or timer at all:
//! the read buffer is allocated for a read and freed when it is empty again, and one sweep task (see
//! `server::run`) keeps time for every connection's heartbeat.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::{FutureExt, OptionFuture};
use metrics::counter;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::clock::now_ms;
use super::error::ChatError;
use super::frame::{close, encode, Frame, Kick, WireFormat};
use super::history::{self, Submission};
use super::join::{JoinTicket, Joining};
use super::manager::{Draft, Registration};
use super::metrics as m;
use super::rate_limit::{RateLimiter, Verdict};
use super::registry::{ConnId, Identity};
use super::replay::ReplayLimits;
use super::store::PersonId;
use super::websocket::{self, Decoder, Incoming, Upgraded, WireError};
use super::Chat;
use crate::protocol::{
    ClientFrame, EntryKind, FrameRef, ServerEvent, DEFAULT_ROOM, MAX_READ_POSITIONS,
};

/// Most frames written with one system call.
pub const WRITE_BATCH: usize = 64;

/// How long a goodbye (what is still queued, then the close frame) may take to leave; a peer that is not
/// reading never takes it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// Runs one upgraded socket to its end: welcomes it as `identity`, has it follow `first_room` (if any),
/// and serves it, speaking `format`.
///
/// Two futures chained, not one async fn: an async fn keeps its arguments, and every local that lives
/// across an await, for as long as it runs, and what the welcome needed (the identity, the first room,
/// the socket before it was handed on) is no use to the idle connection that follows. `then` drops the
/// opening's future before the connection's starts, in the same memory.
pub fn serve(
    upgraded: Upgraded,
    chat: Arc<Chat>,
    identity: Identity,
    format: WireFormat,
    first_room: Option<String>,
) -> impl Future<Output = ()> + Send {
    open(upgraded, chat, identity, format, first_room)
        .then(|conn| OptionFuture::from(conn.map(Connection::run)))
        .map(|_| ())
}

/// Welcomes the socket as `identity` and has it follow `first_room` (if any): the connection, or
/// `None` if it was turned away.
async fn open(
    upgraded: Upgraded,
    chat: Arc<Chat>,
    identity: Identity,
    format: WireFormat,
    first_room: Option<String>,
) -> Option<Connection> {
    let Upgraded {
        stream,
        already_read,
    } = upgraded;
    // The HTTP task that served the handshake left its waker in the socket's readiness slots; that
    // waker keeps the finished task's memory (1.5 KB) alive for as long as the slots hold it. Polling
    // readiness here puts this task's waker there instead.
    std::future::poll_fn(|cx| {
        let _ = stream.poll_read_ready(cx);
        let _ = stream.poll_write_ready(cx);
        std::task::Poll::Ready(())
    })
    .await;
    let (manager, config) = (&chat.manager, &chat.config);
    if config.send_buffer_bytes > 0 {
        if let Err(error) =
            socket2::SockRef::from(&stream).set_send_buffer_size(config.send_buffer_bytes)
        {
            tracing::warn!(%error, "cannot cap the socket's send buffer");
        }
    }
    let registration = match manager.connect(identity, format) {
        Ok(registration) => registration,
        Err(error) => {
            Box::pin(turn_away(stream, error, format)).await;
            return None;
        }
    };
    // In a cluster the name must be free on every node, not only here: nothing has been sent yet, so a
    // refusal is as if the manager had refused it.
    if let Some(cluster) = &chat.cluster {
        let (key, person) = (registration.name_key.clone(), registration.person);
        if !Box::pin(cluster.claim_name(key.clone(), person)).await {
            drop(registration);
            Box::pin(turn_away(stream, ChatError::NameTaken(key), format)).await;
            return None;
        }
    }
    let person = registration.person;
    let conn = Connection::new(stream, registration, chat, format, already_read);
    let id = conn.id;
    if format == WireFormat::Json {
        // Where this person has read to, by a task of its own: the connection is served meanwhile.
        tokio::spawn(tell_read_positions(conn.chat.clone(), id, person));
    }
    tracing::debug!(conn = id, "connected");
    if let Some(room) = first_room {
        match format {
            // Boxed: this future is as large as its largest await, and a history read's is large;
            // the connection's future that follows it in the same memory would be as large.
            WireFormat::Legacy => Box::pin(conn.join_first(room)).await,
            WireFormat::Json => conn.join(room, None),
        }
    }
    Some(conn)
}

/// Tells connection `conn` where `person` has read to, with the unread counts: told even when they
/// have read nothing (no rooms), so a page knows it may start marking rooms read, and where its
/// "new messages" divider goes.
async fn tell_read_positions(chat: Arc<Chat>, conn: ConnId, person: PersonId) {
    match chat.store.read_positions(person, MAX_READ_POSITIONS).await {
        Ok(rooms) => chat.manager.tell(
            conn,
            &ServerEvent::ReadPositions {
                rooms: rooms.into_iter().collect(),
            },
        ),
        Err(error) => tracing::warn!(%error, "read positions could not be read"),
    }
}

/// Tells a client why it cannot connect (an `error` event, if it reads JSON), then closes with the
/// error's close code.
async fn turn_away(stream: TcpStream, error: ChatError, format: WireFormat) {
    tracing::debug!(%error, "connection refused");
    counter!(m::REJECTED, "reason" => error.label()).increment(1);
    let mut frames = VecDeque::new();
    if format == WireFormat::Json {
        frames.push_back(encode(&error.event(None)));
    }
    frames.push_back(websocket::close_frame(
        error.kick().code,
        &error.to_string(),
    ));
    let _ = tokio::time::timeout(CLOSE_GRACE, write_all(&stream, &mut frames)).await;
}

/// Reads the history a join needs, and finishes it (or, if the read fails, refuses it).
async fn read_and_join(chat: Arc<Chat>, ticket: JoinTicket, after: Option<u64>) {
    let limits = ReplayLimits::from_config(&chat.config);
    match history::replay(&chat.store, &ticket.room, after, limits).await {
        Ok(replay) => chat.manager.finish_join(ticket, replay),
        Err(error) => {
            tracing::error!(%error, room = %ticket.room, "reading history failed");
            chat.manager.abort_join(ticket, &ChatError::StoreFailed);
        }
    }
}

/// How a connection ended.
#[derive(Debug)]
enum Goodbye {
    /// The client closed, or the socket failed: nothing more to send.
    Gone,
    /// We end it: send this close frame (if the client still takes one).
    Close(Kick),
    /// The client closed: answer with this close frame, without the room traffic queued meanwhile (in
    /// a busy room, that could hold the answer back past the client's patience).
    Answer(Kick),
}

struct Connection {
    stream: TcpStream,
    id: ConnId,
    /// This connection in the manager, with its outbox; dropped with the connection, which disconnects it.
    registration: Registration,
    chat: Arc<Chat>,
    /// What the client reads, and so what its frames mean.
    format: WireFormat,
    /// Frames taken from the log or the outbox and not yet fully written; the first may be partly sent.
    unsent: VecDeque<Frame>,
    /// Whether the first of `unsent` is partly sent (then it must be finished before a close frame).
    front_started: bool,
    /// Bytes received and not yet decoded. Empty (and unallocated) between messages.
    received: BytesMut,
    decoder: Decoder,
    limiter: RateLimiter,
    /// When the client last sent anything (a pong counts).
    last_heard: Instant,
    /// When the unanswered ping went out, if one is out.
    pinged_at: Option<Instant>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        registration: Registration,
        chat: Arc<Chat>,
        format: WireFormat,
        already_read: Bytes,
    ) -> Self {
        let now = Instant::now();
        let config = &chat.config;
        Connection {
            stream,
            id: registration.id,
            registration,
            format,
            unsent: VecDeque::new(),
            front_started: false,
            received: BytesMut::from(&already_read[..]),
            decoder: Decoder::new(config.max_message_bytes),
            limiter: RateLimiter::new(config.msg_rate, config.msg_burst, now.into_std()),
            last_heard: now,
            pinged_at: None,
            chat,
        }
    }

    /// Serves the client until one side ends the connection, then says goodbye.
    ///
    /// Not an `async fn`: one keeps its arguments twice (as given, and moved into the body), and the
    /// connection is 336 bytes. The block captures it once and only borrows it until the end.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold the connection twice"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let goodbye = self.exchange().await;
            match goodbye {
                Goodbye::Close(kick) => {
                    let closing = self.say_goodbye(kick);
                    let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, closing)).await;
                }
                Goodbye::Answer(kick) => {
                    let answering = self.answer_close(kick);
                    let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, answering)).await;
                }
                Goodbye::Gone => {}
            }
            let id = self.id;
            // Dropping the connection drops its registration, which disconnects it from the manager:
            // here, or while unwinding from a panic anywhere in this task.
            drop(self);
            tracing::debug!(conn = id, ?goodbye, "disconnected");
        }
    }

    /// Moves frames both ways until one side ends the connection.
    async fn exchange(&mut self) -> Goodbye {
        let outbox = self.registration.outbox.clone();
        // Bytes the HTTP server read past the handshake are the client's first frames.
        if let Some(goodbye) = self.decode_received() {
            return goodbye;
        }
        loop {
            // Any wake-up while this pass runs is kept by the `Notify` (see `outbox.rs`), so the wait
            // below cannot miss a frame that arrives after the look.
            let woken = outbox.woken();
            tokio::pin!(woken);

            if let Some(kick) = outbox.kick_ordered() {
                return Goodbye::Close(kick);
            }
            if outbox.take_heartbeat_due() {
                if let Some(goodbye) = self.beat() {
                    return goodbye;
                }
            }
            // Take more only once everything taken before is written: what waits in the logs and the
            // outbox is bounded, what sits in `unsent` would not be.
            let mut took = false;
            if self.unsent.is_empty() {
                if !self.take_waiting() {
                    return self.end(Kick::TOO_SLOW);
                }
                took = !self.unsent.is_empty();
            }
            if self.write_some().is_err() {
                return Goodbye::Gone;
            }
            let idle = self.unsent.is_empty();
            if idle && self.unsent.capacity() > 8 {
                // A burst grew the queue: don't keep that memory for an idle connection.
                self.unsent = VecDeque::new();
            }
            if took && idle {
                // All written: there may be more than one batch waiting. Look again, after letting other
                // tasks run if this one has had its share.
                tokio::task::consume_budget().await;
                continue;
            }

            // `biased`: a wake-up (a kick above all) first, even while a write is blocked; then the
            // socket taking more, so that broadcasts keep flowing even while a client floods us. One
            // readiness wait for both directions, not one each: every idle connection's task holds
            // this wait, and a second one made this future 440 bytes instead of 272.
            let interest = if idle {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            tokio::select! {
                biased;
                () = &mut woken => {}
                ready = self.stream.ready(interest) => {
                    let Ok(ready) = ready else {
                        return Goodbye::Gone;
                    };
                    // Writable (asked for only while frames wait): the loop writes first, and reads
                    // on a later pass.
                    if !ready.is_writable() {
                        if let Some(goodbye) = self.read_some() {
                            return goodbye;
                        }
                    }
                }
            }
        }
    }

    /// Takes the frames waiting for this client into `unsent`: its personal ones first, then its rooms'
    /// past its cursors, up to [`WRITE_BATCH`]. False if it fell behind a room's log: too slow.
    fn take_waiting(&mut self) -> bool {
        self.registration
            .outbox
            .take(&mut self.unsent, WRITE_BATCH)
            .is_ok()
    }

    /// Writes as much of `unsent` as the socket takes now, without waiting.
    fn write_some(&mut self) -> io::Result<()> {
        match try_write(&self.stream, &mut self.unsent, &mut self.front_started) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Reads what the socket has and handles every complete message in it.
    fn read_some(&mut self) -> Option<Goodbye> {
        self.received.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.received) {
            Ok(0) => return Some(Goodbye::Gone),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                tracing::debug!(conn = self.id, %error, "read failed");
                return Some(Goodbye::Gone);
            }
        }
        let goodbye = self.decode_received();
        if self.received.is_empty() {
            // Nothing half-received: give the buffer back, so an idle connection holds none.
            self.received = BytesMut::new();
        }
        goodbye
    }

    /// Handles every complete message in `received`.
    fn decode_received(&mut self) -> Option<Goodbye> {
        loop {
            match self.decoder.decode(&mut self.received) {
                Ok(Some(message)) => {
                    if let Some(goodbye) = self.handle(message) {
                        return Some(goodbye);
                    }
                }
                Ok(None) => return None,
                Err(WireError::TooBig) => {
                    let error = ChatError::TooBig(self.chat.config.max_message_bytes);
                    return Some(self.close_over(error));
                }
                Err(error) => {
                    tracing::debug!(conn = self.id, ?error, "protocol error");
                    counter!(m::REJECTED, "reason" => "protocol").increment(1);
                    return Some(Goodbye::Close(Kick {
                        code: error.close_code(),
                        reason: error.reason(),
                    }));
                }
            }
        }
    }

    /// Handles one message from the client.
    fn handle(&mut self, message: Incoming) -> Option<Goodbye> {
        self.last_heard = Instant::now();
        self.pinged_at = None;
        let text = match message {
            Incoming::Close(code) => {
                // Answer the close handshake (echoing the client's code, RFC 6455 §5.5.1), then go.
                return Some(Goodbye::Answer(Kick {
                    code: code.unwrap_or(close::NORMAL),
                    reason: "bye",
                }));
            }
            // A pong only proves the client is alive.
            Incoming::Pong => return None,
            Incoming::Ping(payload) => {
                if let Err(goodbye) = self.rate_limit(None) {
                    return goodbye;
                }
                return self.reply(websocket::pong_frame(&payload));
            }
            Incoming::Binary(_) => {
                if let Err(goodbye) = self.rate_limit(None) {
                    return goodbye;
                }
                return self.refuse(&ChatError::BinaryFrame, None);
            }
            Incoming::Text(text) => text,
        };
        if self.format == WireFormat::Legacy {
            return self.hear_legacy(text);
        }
        // Parsed before the rate limit, so that a refusal says which frame it refuses.
        let frame = ClientFrame::parse(&text);
        let answers = frame.as_ref().ok().map(ClientFrame::reference);
        if let Err(goodbye) = self.rate_limit(answers.clone()) {
            return goodbye;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                self.chat.manager.reject(self.id, &error.into(), None);
                return None;
            }
        };
        let outcome = match frame {
            ClientFrame::Message {
                room,
                text: said,
                client_id,
                reply_to,
            } => {
                // Plain text (a terminal client's line) goes to the first room it follows.
                let room = if ClientFrame::is_plain_text(&text) {
                    self.chat.manager.first_room(self.id).unwrap_or(room)
                } else {
                    room
                };
                self.write(Draft {
                    room,
                    kind: EntryKind::Message,
                    text: said,
                    target: reply_to,
                    client_id,
                })
            }
            ClientFrame::Edit {
                room,
                seq,
                text,
                client_id,
            } => self.write(Draft {
                room,
                kind: EntryKind::Edit,
                text,
                target: Some(seq),
                client_id,
            }),
            ClientFrame::React {
                room,
                seq,
                emoji,
                client_id,
            } => self.write(Draft {
                room,
                kind: EntryKind::React,
                text: emoji,
                target: Some(seq),
                client_id,
            }),
            ClientFrame::Delete {
                room,
                seq,
                client_id,
            } => self.write(Draft {
                room,
                kind: EntryKind::Delete,
                text: String::new(),
                target: Some(seq),
                client_id,
            }),
            ClientFrame::Read { room, seq } => self.read(room, seq),
            ClientFrame::Join { room, after } => {
                self.join(room, after);
                Ok(())
            }
            ClientFrame::Leave { room } => self.chat.manager.leave_room(self.id, &room),
            ClientFrame::Typing { room } => self.chat.manager.typing(self.id, &room),
            ClientFrame::Ping => return self.reply(encode(&ServerEvent::Pong)),
        };
        if let Err(error) = outcome {
            self.chat.manager.reject(self.id, &error, answers);
        }
        None
    }

    /// A text frame from a client on the original format: all of it is message text (as the original's
    /// `receive_text` took it, a leading `{` included), for the room the connection follows. Blank text
    /// is dropped without a word: there is nothing to store, and the original page sends an empty box
    /// as readily as a full one.
    fn hear_legacy(&mut self, text: String) -> Option<Goodbye> {
        if let Err(goodbye) = self.rate_limit(None) {
            return goodbye;
        }
        if text.trim().is_empty() {
            return None;
        }
        let room = self
            .chat
            .manager
            .first_room(self.id)
            .unwrap_or_else(|| DEFAULT_ROOM.to_owned());
        let draft = Draft {
            room,
            kind: EntryKind::Message,
            text,
            target: None,
            client_id: None,
        };
        match self.write(draft) {
            Ok(()) => None,
            Err(error) => self.refuse(&error, None),
        }
    }

    /// Counts one frame against the rate limit. `Err` ends its handling: refused (and told so, the error
    /// naming the frame it `answers`), or, for a sustained flood, the connection ends.
    fn rate_limit(&mut self, answers: Option<FrameRef>) -> Result<(), Option<Goodbye>> {
        match self.limiter.check(self.last_heard.into_std()) {
            Verdict::Accept => Ok(()),
            Verdict::Refuse => Err(self.refuse(&ChatError::RateLimited, answers)),
            Verdict::Disconnect => Err(Some(self.close_over(ChatError::Flooding))),
        }
    }

    /// Refuses a frame the client sent: a JSON client is told why and carries on; one on the original
    /// format, which has no words for it, is closed with the error's code and reason.
    fn refuse(&mut self, error: &ChatError, answers: Option<FrameRef>) -> Option<Goodbye> {
        self.chat.manager.reject(self.id, error, answers);
        match self.format {
            WireFormat::Json => None,
            // The manager has removed it already: only the close frame is left to send.
            WireFormat::Legacy => Some(Goodbye::Close(error.kick())),
        }
    }

    /// Queues an answer for this client alone (a pong). Through the outbox, like every personal frame:
    /// bounded in frames and bytes, so a client that sends pings and never reads is dropped as too slow
    /// instead of growing the server.
    fn reply(&mut self, frame: Frame) -> Option<Goodbye> {
        match self.registration.outbox.send(frame) {
            Ok(()) => None,
            Err(_) => Some(self.end(Kick::TOO_SLOW)),
        }
    }

    /// Hands a chat message to the history writer, which stores it, then acknowledges and publishes it.
    /// Moves the person's read position in `room`: their other tabs are told at once, and the store
    /// keeps it, by a task of its own (nothing waits for it; a position lost to a failing store is
    /// sent again by the page the next time it reads).
    fn read(&self, room: String, seq: u64) -> Result<(), ChatError> {
        let person = self.chat.manager.read(self.id, room.clone(), seq)?;
        let store = self.chat.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.set_read(person, &room, seq, now_ms()).await {
                tracing::warn!(%error, room, "a read position could not be stored");
            }
        });
        Ok(())
    }

    /// Hands an entry for the room's log to the history writer, which acknowledges it once stored.
    fn write(&self, draft: Draft) -> Result<(), ChatError> {
        let message = self.chat.manager.prepare_message(self.id, draft)?;
        self.chat.writer.submit(Submission {
            sender: self.id,
            message,
            reply: None,
        })
    }

    /// Starts following `room`. Usually the room's recent messages are in memory and the manager
    /// completes the join at once; otherwise its history is read by a task of its own (this one goes on
    /// serving the socket meanwhile), which then has the manager send the `joined` snapshot and subscribe
    /// this connection (see `ConnectionManager::begin_join` for why nothing is missed in between).
    fn join(&self, room: String, after: Option<u64>) {
        if let Some(ticket) = self.begin_join(room, after) {
            tokio::spawn(read_and_join(self.chat.clone(), ticket, after));
        }
    }

    /// Joins `room` before reading anything from the client: an original-format client sends its
    /// first message without waiting for anything, and that message must find it in the room. Its
    /// frames wait in the socket meanwhile.
    async fn join_first(&self, room: String) {
        if let Some(ticket) = self.begin_join(room, None) {
            read_and_join(self.chat.clone(), ticket, None).await;
        }
    }

    /// Starts a join; the ticket if it must read history.
    fn begin_join(&self, room: String, after: Option<u64>) -> Option<JoinTicket> {
        let ticket = match self.chat.manager.begin_join(self.id, &room, after) {
            Ok(Joining::Done) => {
                counter!(m::JOINS, "source" => "memory").increment(1);
                return None;
            }
            Ok(Joining::NeedsHistory(ticket)) => ticket,
            Err(error) => {
                let answers = ClientFrame::Join { room, after }.reference();
                self.chat.manager.reject(self.id, &error, Some(answers));
                return None;
            }
        };
        counter!(m::JOINS, "source" => "store").increment(1);
        Some(ticket)
    }

    /// The heartbeat sweep came by: ping a quiet client, or drop one that never answered.
    fn beat(&mut self) -> Option<Goodbye> {
        let now = Instant::now();
        match self.pinged_at {
            Some(at) if now.duration_since(at) >= self.chat.config.ping_timeout => {
                tracing::debug!(conn = self.id, "no answer to ping");
                counter!(m::PING_TIMEOUTS).increment(1);
                Some(self.end(Kick::PING_TIMEOUT))
            }
            Some(_) => None,
            None if now.duration_since(self.last_heard) >= self.chat.config.ping_interval => {
                self.pinged_at = Some(now);
                self.unsent.push_back(websocket::ping_frame());
                None
            }
            None => None,
        }
    }

    /// Ends the connection over something the client did: tells it why, removes it, closes with the code.
    fn close_over(&mut self, error: ChatError) -> Goodbye {
        self.chat.manager.reject(self.id, &error, None);
        self.end(error.kick())
    }

    /// Ends the connection: removes it from the manager (its rooms hear it leave) and closes with `kick`.
    fn end(&mut self, kick: Kick) -> Goodbye {
        self.chat.manager.disconnect(self.id, Some(kick));
        Goodbye::Close(kick)
    }

    /// Sends what is still waiting for this client (e.g. the error that explains the close), unless it
    /// is being dropped for not reading, then the close frame.
    async fn say_goodbye(&mut self, kick: Kick) -> io::Result<()> {
        if kick == Kick::TOO_SLOW {
            // Only the frame under way, which may be half sent: the stream must stay well-formed for
            // the close frame to mean anything.
            self.unsent.truncate(1);
        } else {
            while self.take_waiting() && !self.unsent.is_empty() {
                write_all(&self.stream, &mut self.unsent).await?;
            }
        }
        self.unsent
            .push_back(websocket::close_frame(kick.code, kick.reason));
        write_all(&self.stream, &mut self.unsent).await
    }

    /// Answers the client's close: finishes the frame under way, if one is partly sent, then sends the
    /// close frame. Nothing else: the client is leaving and reads nothing more.
    async fn answer_close(&mut self, kick: Kick) -> io::Result<()> {
        self.unsent.truncate(usize::from(self.front_started));
        self.unsent
            .push_back(websocket::close_frame(kick.code, kick.reason));
        write_all(&self.stream, &mut self.unsent).await
    }
}

/// Writes the front of `frames` with one vectored write, dropping what was fully sent and advancing
/// the first frame past what was partly sent (`front_started` says whether there is such a frame).
fn try_write(
    stream: &TcpStream,
    frames: &mut VecDeque<Frame>,
    front_started: &mut bool,
) -> io::Result<()> {
    while !frames.is_empty() {
        let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
        let count = frames.len().min(WRITE_BATCH);
        for (slice, frame) in slices.iter_mut().zip(frames.iter()) {
            *slice = IoSlice::new(frame);
        }
        let mut written = stream.try_write_vectored(slices.get(..count).unwrap_or_default())?;
        // Every byte written came from one of the frames: the loop ends when they are accounted for.
        while let (true, Some(first)) = (written > 0, frames.front_mut()) {
            if written >= first.len() {
                written -= first.len();
                frames.pop_front();
                *front_started = false;
            } else {
                first.advance(written);
                written = 0;
                *front_started = true;
            }
        }
    }
    Ok(())
}

/// Writes all of `frames`, waiting for the socket as needed.
async fn write_all(stream: &TcpStream, frames: &mut VecDeque<Frame>) -> io::Result<()> {
    // It finishes every frame, so no caller needs to know whether one is left partly sent.
    let mut front_started = false;
    while !frames.is_empty() {
        stream.writable().await?;
        match try_write(stream, frames, &mut front_started) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => other?,
        }
    }
    Ok(())
}
