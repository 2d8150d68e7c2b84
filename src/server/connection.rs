//! One WebSocket connection, from upgrade to goodbye, as a single task.
//!
//! The task waits on several things at once (`tokio::select!`):
//! - **new frames**: in the shared fan-out log past its cursor, or personal ones in its [`Outbox`]; it
//!   takes every frame waiting (up to [`WRITE_BATCH`] at a time), feeds them all to the socket and
//!   flushes once, so a burst costs one write, not one per frame;
//! - the **socket**: each client frame is rate-limited, parsed and handed to the [`ConnectionManager`];
//! - a **kick**: the manager disconnecting it (too slow, shutdown);
//! - its **heartbeat** timer: a ping after a quiet spell, and a drop if the ping goes unanswered.
//!
//! One task rather than a reader and a writer: half the tasks, wake-ups and memory per connection. The
//! price is that while a write is blocked on a client that doesn't read, that client's frames aren't read
//! either, which only slows down that client. A blocked write still gives way to a kick, so a stalled
//! client can always be dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use metrics::counter;
use tokio::time::{sleep_until, Instant};

use super::config::Config;
use super::error::{close, ChatError};
use super::manager::{encode, ConnId, ConnectionManager, Frame, Joined, Kick};
use super::metrics as m;
use super::names::NameRequest;
use super::outbox::Outbox;
use super::rate_limit::{RateLimiter, Verdict};
use crate::protocol::{ClientFrame, ServerEvent};

/// Most frames taken from the queue per flush.
pub const WRITE_BATCH: usize = 64;

/// How long a goodbye (close frame) may take to leave; a peer that is not reading never takes it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs one upgraded socket to its end.
pub async fn serve(
    socket: WebSocket,
    manager: Arc<ConnectionManager>,
    config: Arc<Config>,
    request: NameRequest,
) {
    let joined = match manager.join(request) {
        Ok(joined) => joined,
        Err(error) => return refuse(socket, error).await,
    };
    let id = joined.id;
    tracing::debug!(conn = id, name = %joined.name, "connected");
    let goodbye = Connection::new(socket, joined, &manager, &config)
        .run()
        .await;
    manager.leave(id);
    tracing::debug!(conn = id, ?goodbye, "disconnected");
}

/// Tells a client why it cannot join (an `error` event), then closes with the error's close code.
async fn refuse(mut socket: WebSocket, error: ChatError) {
    tracing::debug!(%error, "connection refused");
    counter!(m::REJECTED, "reason" => error.label()).increment(1);
    let goodbye = async {
        socket.send(Message::Text(encode(&error.event()))).await?;
        socket
            .send(close_frame(
                error.close_code().unwrap_or(close::POLICY),
                &error.to_string(),
            ))
            .await
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
}

/// How a connection ended.
#[derive(Debug)]
enum Goodbye {
    /// The client closed, or the socket failed: nothing more to send.
    Gone,
    /// We end it: send this close frame (if the client still takes one).
    Close(Kick),
}

struct Connection<'a> {
    socket: WebSocket,
    id: ConnId,
    outbox: Arc<Outbox>,
    manager: &'a ConnectionManager,
    config: &'a Config,
    limiter: RateLimiter,
    /// When the client last sent anything (a pong counts).
    last_heard: Instant,
    /// Whether a ping is out and unanswered.
    pinged: bool,
}

impl<'a> Connection<'a> {
    fn new(
        socket: WebSocket,
        joined: Joined,
        manager: &'a ConnectionManager,
        config: &'a Config,
    ) -> Self {
        let now = Instant::now();
        Connection {
            socket,
            id: joined.id,
            outbox: joined.outbox,
            manager,
            config,
            limiter: RateLimiter::new(config.msg_rate, config.msg_burst, now.into_std()),
            last_heard: now,
            pinged: false,
        }
    }

    async fn run(mut self) -> Goodbye {
        let goodbye = self.exchange().await;
        if let Goodbye::Close(kick) = goodbye {
            let _ = tokio::time::timeout(CLOSE_GRACE, self.say_goodbye(kick)).await;
        }
        goodbye
    }

    /// Sends what is still waiting for this client (e.g. the error that explains the close), unless it
    /// is being dropped for not reading, then the close frame.
    async fn say_goodbye(&mut self, kick: Kick) -> Result<(), axum::Error> {
        if kick != Kick::TOO_SLOW {
            let mut rest = Vec::new();
            while self.take_waiting(&mut rest) && !rest.is_empty() {
                for frame in rest.drain(..) {
                    self.socket.feed(Message::Text(frame)).await?;
                }
            }
        }
        self.socket.send(close_frame(kick.code, kick.reason)).await
    }

    /// Moves the frames waiting for this client (its personal ones first, then the log's past its
    /// cursor, up to [`WRITE_BATCH`]) into `batch`. False if it fell behind the log: too slow.
    fn take_waiting(&self, batch: &mut Vec<Frame>) -> bool {
        self.outbox.take_personal(batch);
        let mut cursor = self.outbox.cursor();
        let kept_up = self
            .manager
            .log()
            .read(&mut cursor, self.outbox.log_end(), batch, WRITE_BATCH)
            .is_ok();
        self.outbox.set_cursor(cursor);
        kept_up
    }

    /// Moves frames both ways until one side ends the connection.
    async fn exchange(&mut self) -> Goodbye {
        let manager = self.manager;
        let outbox = self.outbox.clone();
        let mut batch: Vec<Frame> = Vec::new();
        let heartbeat = sleep_until(self.last_heard + self.config.ping_interval);
        tokio::pin!(heartbeat);
        loop {
            // Enabled before looking for frames, so a frame that arrives after the look still wakes us.
            let appended = manager.log().changed();
            let mail = outbox.mail();
            tokio::pin!(appended, mail);
            appended.as_mut().enable();

            loop {
                if let Some(kick) = outbox.kick_ordered() {
                    return Goodbye::Close(kick);
                }
                if !self.take_waiting(&mut batch) {
                    manager.kick(self.id, Kick::TOO_SLOW);
                    return Goodbye::Close(Kick::TOO_SLOW);
                }
                if batch.is_empty() {
                    break;
                }
                if let Some(goodbye) = self.write(&mut batch).await {
                    return goodbye;
                }
            }

            // `biased`: a kick wins over everything; then frames to send, so that replies and broadcasts
            // keep flowing even while a client floods us.
            tokio::select! {
                biased;
                kick = outbox.wait_for_kick() => return Goodbye::Close(kick),
                () = &mut mail => {}
                () = &mut appended => {}
                received = self.socket.next() => match received {
                    Some(Ok(message)) => if let Some(goodbye) = self.read(message) {
                        return goodbye;
                    },
                    Some(Err(error)) if is_too_big(&error) => {
                        return self.refuse(ChatError::TooBig(self.config.max_message_bytes));
                    }
                    Some(Err(error)) => {
                        tracing::debug!(conn = self.id, %error, "read failed");
                        return Goodbye::Gone;
                    }
                    None => return Goodbye::Gone,
                },
                () = &mut heartbeat => {
                    if let Some(goodbye) = self.beat().await {
                        return goodbye;
                    }
                    let next = if self.pinged {
                        Instant::now() + self.config.ping_timeout
                    } else {
                        self.last_heard + self.config.ping_interval
                    };
                    heartbeat.as_mut().reset(next);
                }
            }
        }
    }

    /// Sends a batch of frames with one flush. A kick interrupts it: a client that stopped reading can
    /// block this write for ever.
    async fn write(&mut self, batch: &mut Vec<Frame>) -> Option<Goodbye> {
        let outbox = self.outbox.clone();
        let socket = &mut self.socket;
        let write = async {
            for frame in batch.drain(..) {
                socket.feed(Message::Text(frame)).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            biased;
            kick = outbox.wait_for_kick() => Some(Goodbye::Close(kick)),
            written = write => written.err().map(|_| Goodbye::Gone),
        }
    }

    /// Handles one frame from the client.
    fn read(&mut self, message: Message) -> Option<Goodbye> {
        self.last_heard = Instant::now();
        self.pinged = false;
        let frame = match message {
            Message::Close(_) => return Some(Goodbye::Gone),
            // tungstenite answers pings itself; a pong only proves the client is alive.
            Message::Pong(_) => return None,
            frame => frame,
        };
        match self.limiter.check(self.last_heard.into_std()) {
            Verdict::Accept => {}
            Verdict::Refuse => {
                self.manager.reject(self.id, &ChatError::RateLimited);
                return None;
            }
            Verdict::Disconnect => return Some(self.refuse(ChatError::Flooding)),
        }
        let outcome = match frame {
            Message::Text(text) => match ClientFrame::parse(text.as_str()) {
                Ok(ClientFrame::Message { text }) => self.manager.say(self.id, text),
                Ok(ClientFrame::Ping) => {
                    self.manager.send_to(self.id, &ServerEvent::Pong);
                    Ok(())
                }
                Err(error) => Err(error.into()),
            },
            Message::Binary(_) => Err(ChatError::BinaryFrame),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(()),
        };
        if let Err(error) = outcome {
            self.manager.reject(self.id, &error);
        }
        None
    }

    /// The heartbeat timer fired: ping a quiet client, or drop one that never answered.
    async fn beat(&mut self) -> Option<Goodbye> {
        if self.pinged {
            tracing::debug!(conn = self.id, "no answer to ping");
            counter!(m::PING_TIMEOUTS).increment(1);
            self.manager.kick(
                self.id,
                Kick {
                    code: close::GOING_AWAY,
                    reason: "ping timeout",
                },
            );
            return Some(Goodbye::Gone);
        }
        if self.last_heard.elapsed() < self.config.ping_interval {
            return None; // heard from it since the timer was set
        }
        self.pinged = true;
        let outbox = self.outbox.clone();
        let ping = self.socket.send(Message::Ping(Default::default()));
        tokio::select! {
            biased;
            kick = outbox.wait_for_kick() => Some(Goodbye::Close(kick)),
            sent = ping => sent.err().map(|_| Goodbye::Gone),
        }
    }

    /// Ends the connection over something the client did: tells it why, removes it, closes with the code.
    fn refuse(&mut self, error: ChatError) -> Goodbye {
        self.manager.reject(self.id, &error);
        let reason = match error {
            ChatError::Flooding => "flooding",
            ChatError::TooBig(_) => "message too big",
            _ => "refused",
        };
        let kick = Kick {
            code: error.close_code().unwrap_or(close::POLICY),
            reason,
        };
        self.manager.kick(self.id, kick);
        Goodbye::Close(kick)
    }
}

/// Whether a read failed because the client's message was over the size limit.
fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

fn close_frame(code: u16, reason: &str) -> Message {
    // A close frame's reason is limited to 123 bytes: cut at a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}
