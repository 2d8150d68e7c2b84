//! The browser's end of `/ws` (feature `hydrate` only): opens the WebSocket with gloo-net and runs one
//! local task that moves frames both ways (outgoing [`ClientFrame`]s from the page, incoming
//! [`ServerEvent`]s into the [`ChatState`]), watches the link's health and reconnects after a drop.
//!
//! Browsers answer the server's WebSocket pings without telling the page, so the page cannot see them;
//! to notice a dead link it sends its own `ping` after a quiet spell and gives up on the socket when no
//! frame at all comes back in time. After any drop it reconnects with capped exponential backoff and
//! jitter, so a restarted server is not hit by every client in the same millisecond.
//!
//! On every new link: the welcome's session token goes to `POST /api/session`, whose answer sets the
//! `chat_session` cookie (HttpOnly: the page never writes or reads it itself), so the next link, and
//! other tabs, are the same person under the same name; every followed room is rejoined with
//! the last sequence number the page has of it, so the server replays exactly what was missed; and once
//! a room is joined, the messages still waiting for an acknowledgement are sent again (under their
//! `client_id`, so the server stores each once).

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::{pin_mut, select_biased, FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message, WebSocketError};
use gloo_timers::future::TimeoutFuture;

use crate::chat_state::{backoff_ms, ChatState};
use crate::protocol::{ClientFrame, ErrorCode, FrameKind, ServerEvent};

/// The page's handle on its link. Dropping it closes the socket for good (that is how the page closes
/// it on cleanup or before connecting under another name).
pub struct Link(UnboundedSender<Command>);

/// What the page asks of its link.
enum Command {
    /// Send this frame now (if there is a socket).
    Send(ClientFrame),
    /// A new message waits in `ChatState::pending`: the link sends those itself, one at a time.
    MessagesWaiting,
}

impl Link {
    /// Sends `frame` on the socket; false if the link is gone.
    pub fn send(&self, frame: ClientFrame) -> bool {
        self.0.unbounded_send(Command::Send(frame)).is_ok()
    }

    /// Tells the link a message was added to the chat state's pending ones.
    pub fn messages_waiting(&self) {
        let _ = self.0.unbounded_send(Command::MessagesWaiting);
    }
}

/// Quiet time after which the page pings the server, in ms.
const QUIET_MS: f64 = 20_000.0;
/// Time the server has to answer anything after a ping, in ms.
const ANSWER_MS: f64 = 10_000.0;
/// How long after a "later" refusal (rate limit, busy) the unacknowledged messages are sent again, in ms.
const RESEND_MS: f64 = 1_500.0;
/// Longest the page waits for the server to set the session cookie after a welcome, in ms.
const SESSION_MS: u32 = 5_000;
/// Close code the server uses when it refuses who we are (bad or taken name): retrying won't help.
const CLOSE_POLICY: u16 = 1008;

/// Opens `/ws` on the page's own host, as `name` if given, and starts the task that keeps it open.
pub fn open(name: Option<&str>, chat: ChatState) -> Link {
    let (link, commands) = unbounded();
    leptos::task::spawn_local(keep_open(socket_url(name), commands, chat));
    Link(link)
}

/// `ws://host/ws?room=` (or `wss://` on an https page: the page joins its rooms itself), with `&name=`
/// when one was chosen.
fn socket_url(name: Option<&str>) -> String {
    let location = leptos::prelude::window().location();
    let scheme = match location.protocol().ok().as_deref() {
        Some("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_default();
    match name {
        Some(name) => format!(
            "{scheme}://{host}/ws?room=&name={}",
            String::from(js_sys::encode_uri_component(name))
        ),
        None => format!("{scheme}://{host}/ws?room="),
    }
}

/// How one socket's life ended.
enum End {
    /// The page dropped its link: stop for good.
    PageGone,
    /// The server refused us for who we are: retrying won't help.
    Refused(String),
    /// The link dropped; `welcomed` says whether it had worked (which resets the backoff).
    Lost { reason: String, welcomed: bool },
}

/// Connects, and reconnects after every drop, until the page goes or the server refuses us.
async fn keep_open(url: String, mut outgoing: UnboundedReceiver<Command>, chat: ChatState) {
    let mut failures: u32 = 0;
    loop {
        let end = match WebSocket::open(&url) {
            Ok(ws) => drive(ws, &mut outgoing, chat).await,
            Err(error) => End::Lost {
                reason: error.to_string(),
                welcomed: false,
            },
        };
        let reason = match end {
            End::PageGone => return,
            End::Refused(reason) => return chat.closed(reason),
            End::Lost { reason, welcomed } => {
                failures = if welcomed { 1 } else { failures + 1 };
                reason
            }
        };
        // Wait out the backoff (the indicator counts it down); the page may go meanwhile. Frames the
        // page sends now are dropped: the page only sends messages on a joined room (the rest wait in
        // `ChatState::pending`, sent again once the room is rejoined), and joins and typing notices
        // mean nothing without a link.
        let wait = backoff_ms(failures, js_sys::Math::random());
        chat.reconnecting(reason, (js_sys::Date::now() + wait) as u64);
        let delay = TimeoutFuture::new(wait as u32).fuse();
        pin_mut!(delay);
        loop {
            select_biased! {
                frame = outgoing.next() => if frame.is_none() { return },
                () = delay => break,
            }
        }
    }
}

/// Runs one socket until it ends.
async fn drive(
    mut ws: WebSocket,
    outgoing: &mut UnboundedReceiver<Command>,
    chat: ChatState,
) -> End {
    let mut welcomed = false;
    // The one message (or change to one) sent and not yet acknowledged. One at a time, oldest first: one
    // the server refuses for now (rate limit, busy store) is sent again before any later one, so a
    // person's messages and changes always arrive in the order they were made.
    let mut in_flight: Option<String> = None;
    let mut last_heard = js_sys::Date::now();
    let mut pinged_at: Option<f64> = None;
    // When to send again: set when the server refused the message in flight for now (rate limit, busy
    // store), which says "later", not "never".
    let mut resend_at: Option<f64> = None;
    // When to ask again for the rooms whose join the server refused for now (busy store).
    let mut rejoin_at: Option<f64> = None;
    let lost = |reason: String, welcomed: bool| End::Lost { reason, welcomed };
    loop {
        let now = js_sys::Date::now();
        let heartbeat_in = match pinged_at {
            Some(at) => at + ANSWER_MS - now,
            None => last_heard + QUIET_MS - now,
        };
        let wake_in = [resend_at, rejoin_at]
            .into_iter()
            .flatten()
            .fold(heartbeat_in, |soonest, at| soonest.min(at - now));
        let send = outgoing.next().fuse();
        let receive = ws.next().fuse();
        let timer = TimeoutFuture::new(wake_in.max(0.0) as u32).fuse();
        pin_mut!(send, receive, timer);
        // The page's side first: once it has dropped its link, this task must not touch the state
        // again (a newer link may own it by then).
        let step = select_biased! {
            frame = send => Step::Send(frame),
            received = receive => Step::Received(received),
            () = timer => Step::Timer,
        };
        match step {
            // The message is in `chat.pending` already: it goes out below, in its turn.
            Step::Send(Some(Command::MessagesWaiting)) => {}
            Step::Send(Some(Command::Send(frame))) => {
                if let Err(reason) = send_frame(&mut ws, &frame).await {
                    return lost(reason, welcomed);
                }
            }
            Step::Send(None) => {
                let _ = ws.close(Some(1000), Some("page closed"));
                return End::PageGone;
            }
            Step::Received(Some(Ok(Message::Text(text)))) => {
                last_heard = js_sys::Date::now();
                pinged_at = None;
                match serde_json::from_str::<ServerEvent>(&text) {
                    Ok(event) => {
                        if let ServerEvent::Welcome { session, .. } = &event {
                            welcomed = true;
                            // Before the name shows: once it does, a new tab (which sends the
                            // cookie) must be the same person.
                            remember_session(session).await;
                        }
                        let is_welcome = matches!(event, ServerEvent::Welcome { .. });
                        if let ServerEvent::Error {
                            code: ErrorCode::Unavailable,
                            answers: Some(answers),
                            ..
                        } = &event
                        {
                            if answers.kind == FrameKind::Join && rejoin_at.is_none() {
                                rejoin_at = Some(js_sys::Date::now() + RESEND_MS);
                            }
                        }
                        // Only an error that answers the message in flight (by its `client_id`)
                        // settles it; errors about other frames (a typing notice, a join) do not.
                        if let (ServerEvent::Error { code, answers, .. }, Some(id)) =
                            (&event, &in_flight)
                        {
                            // A message, an edit, a delete or a reaction: all go out this way.
                            let about_it = answers
                                .as_ref()
                                .is_some_and(|a| a.client_id.as_ref() == Some(id));
                            match code {
                                _ if !about_it => {}
                                ErrorCode::RateLimited | ErrorCode::Unavailable => {
                                    in_flight = None;
                                    resend_at = Some(js_sys::Date::now() + RESEND_MS);
                                }
                                // Refused for good: shown as an error, not sent again.
                                _ => {
                                    chat.drop_pending(id);
                                    in_flight = None;
                                }
                            }
                        }
                        chat.apply(event);
                        if is_welcome {
                            for (room, after) in chat.take_joins() {
                                let join = ClientFrame::Join { room, after };
                                if let Err(reason) = send_frame(&mut ws, &join).await {
                                    return lost(reason, welcomed);
                                }
                            }
                        }
                    }
                    Err(error) => leptos::logging::warn!("unreadable event {text:?}: {error}"),
                }
            }
            // The server sends text only; anything else is ignored.
            Step::Received(Some(Ok(Message::Bytes(_)))) => {}
            // An error event is always followed by the close event, which says more.
            Step::Received(Some(Err(WebSocketError::ConnectionError))) => {}
            Step::Received(Some(Err(WebSocketError::ConnectionClose(close)))) => {
                let reason = if close.reason.is_empty() {
                    format!("connection closed (code {})", close.code)
                } else {
                    close.reason
                };
                return if close.code == CLOSE_POLICY && !welcomed {
                    End::Refused(reason)
                } else {
                    lost(reason, welcomed)
                };
            }
            Step::Received(Some(Err(error))) => return lost(error.to_string(), welcomed),
            Step::Received(None) => return lost("connection closed".into(), welcomed),
            Step::Timer if resend_at.is_some_and(|at| at <= js_sys::Date::now()) => {
                resend_at = None;
            }
            Step::Timer if rejoin_at.is_some_and(|at| at <= js_sys::Date::now()) => {
                rejoin_at = None;
                for (room, after) in chat.take_joins() {
                    let join = ClientFrame::Join { room, after };
                    if let Err(reason) = send_frame(&mut ws, &join).await {
                        return lost(reason, welcomed);
                    }
                }
            }
            Step::Timer if pinged_at.is_some() => {
                // Dropping the socket closes it; the server will notice on its side.
                return lost("no answer from the server".into(), welcomed);
            }
            Step::Timer => {
                if let Err(reason) = send_frame(&mut ws, &ClientFrame::Ping).await {
                    return lost(reason, welcomed);
                }
                pinged_at = Some(js_sys::Date::now());
            }
        }
        // The message in flight is settled once it left `pending` (acknowledged, seen, or replayed);
        // then the next one goes, unless the server asked us to wait.
        if in_flight.as_deref().is_some_and(|id| !chat.is_pending(id)) {
            in_flight = None;
        }
        if in_flight.is_none() && resend_at.is_none() {
            if let Some(next) = chat.next_to_send() {
                if let Err(reason) = send_frame(&mut ws, &next.frame()).await {
                    return lost(reason, welcomed);
                }
                in_flight = Some(next.client_id);
            }
        }
    }
}

/// Sends one frame as JSON text; the error says why the link failed.
async fn send_frame(ws: &mut WebSocket, frame: &ClientFrame) -> Result<(), String> {
    let json = serde_json::to_string(frame).expect("client frames always serialize");
    ws.send(Message::Text(json))
        .await
        .map_err(|error| format!("send failed: {error}"))
}

/// Hands the session token to the server, which keeps it in the `chat_session` cookie (HttpOnly, so
/// only the server can set it): the browser sends it with every later `/ws` handshake on this site,
/// from every tab. Waits at most a few seconds (frames meanwhile wait in the socket); if it fails, the
/// next welcome tries again.
async fn remember_session(token: &str) {
    let keep = crate::api::keep_session(token.to_owned());
    let deadline = TimeoutFuture::new(SESSION_MS);
    pin_mut!(keep);
    match futures::future::select(keep, deadline).await {
        futures::future::Either::Left((Ok(()), _)) => {}
        futures::future::Either::Left((Err(error), _)) => {
            leptos::logging::warn!("cannot keep the session cookie: {error}")
        }
        futures::future::Either::Right(_) => {
            leptos::logging::warn!("cannot keep the session cookie: no answer in time")
        }
    }
}

enum Step {
    Send(Option<Command>),
    Received(Option<Result<Message, WebSocketError>>),
    Timer,
}
