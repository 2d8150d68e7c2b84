//! The browser's end of `/ws` (feature `hydrate` only): opens the WebSocket with gloo-net and runs one
//! local task that moves frames both ways: outgoing [`ClientFrame`]s from the page, incoming
//! [`ServerEvent`]s into the [`ChatState`].

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message, WebSocketError};

use leptos::prelude::Set;

use crate::chat_state::{ChatState, LinkStatus};
use crate::protocol::{ClientFrame, ServerEvent};

/// The page's handle on an open link: frames sent here go out on the socket. Dropping the last one closes
/// the socket (that is how the page closes it on cleanup or before reconnecting).
pub type Outbox = UnboundedSender<ClientFrame>;

/// Opens `/ws` on the page's own host, as `name` if given, and starts the task that drives it.
pub fn open(name: Option<&str>, chat: ChatState) -> Option<Outbox> {
    chat.link.set(LinkStatus::Connecting);
    let url = socket_url(name);
    let ws = match WebSocket::open(&url) {
        Ok(ws) => ws,
        Err(error) => {
            chat.closed(format!("cannot open {url}: {error}"));
            return None;
        }
    };
    let (outbox, outgoing) = unbounded();
    leptos::task::spawn_local(drive(ws, outgoing, chat));
    Some(outbox)
}

/// `ws://host/ws` (or `wss://` on an https page), with `?name=` when one was chosen.
fn socket_url(name: Option<&str>) -> String {
    let location = leptos::prelude::window().location();
    let scheme = match location.protocol().ok().as_deref() {
        Some("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_default();
    match name {
        Some(name) => format!(
            "{scheme}://{host}/ws?name={}",
            String::from(js_sys::encode_uri_component(name))
        ),
        None => format!("{scheme}://{host}/ws"),
    }
}

/// One step of the link: something the page wants to send, or something the socket received.
type Step = Either<Option<ClientFrame>, Option<Result<Message, WebSocketError>>>;

async fn drive(mut ws: WebSocket, mut outgoing: UnboundedReceiver<ClientFrame>, chat: ChatState) {
    loop {
        // The page's side is polled first, so once the page has dropped its outbox this link stops at
        // once and never touches the state again (a newer link may own it by then).
        let step: Step = match select(outgoing.next(), ws.next()).await {
            Either::Left((frame, _)) => Either::Left(frame),
            Either::Right((received, _)) => Either::Right(received),
        };
        match step {
            Either::Left(Some(frame)) => {
                let json = serde_json::to_string(&frame).expect("client frames always serialize");
                if let Err(error) = ws.send(Message::Text(json)).await {
                    chat.closed(format!("send failed: {error}"));
                    return;
                }
            }
            Either::Left(None) => {
                let _ = ws.close(Some(1000), Some("page closed"));
                return;
            }
            Either::Right(Some(Ok(Message::Text(text)))) => {
                match serde_json::from_str::<ServerEvent>(&text) {
                    Ok(event) => chat.apply(event),
                    Err(error) => leptos::logging::warn!("unreadable event {text:?}: {error}"),
                }
            }
            // The server sends text only; anything else is ignored.
            Either::Right(Some(Ok(Message::Bytes(_)))) => {}
            // An error event is always followed by the close event, which says more.
            Either::Right(Some(Err(WebSocketError::ConnectionError))) => {}
            Either::Right(Some(Err(WebSocketError::ConnectionClose(close)))) => {
                let reason = if close.reason.is_empty() {
                    format!("connection closed (code {})", close.code)
                } else {
                    close.reason
                };
                chat.closed(reason);
                return;
            }
            Either::Right(Some(Err(error))) => {
                chat.closed(error.to_string());
                return;
            }
            Either::Right(None) => {
                chat.closed("connection closed");
                return;
            }
        }
    }
}
