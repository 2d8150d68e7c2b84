//! The page's handle on its link to the server (see `socket.rs`), shared through the context: opened
//! by the app in the browser, used by the composer to send.

use leptos::prelude::*;

use crate::chat_state::{ChatState, Outgoing, Pending};
use crate::protocol::ClientFrame;

/// The link, once it is opened (in the browser only).
#[derive(Clone, Copy)]
pub struct Sender(StoredValue<Option<SocketLink>, LinkStorage>);

/// In the browser the link holds a WebSocket, which stays on the page's one thread. The server's
/// render may finish (and clean up) on another thread than it started on, so there the (empty) value
/// must be thread-safe: a thread-bound value would panic when dropped elsewhere.
#[cfg(feature = "hydrate")]
type LinkStorage = LocalStorage;
#[cfg(not(feature = "hydrate"))]
type LinkStorage = SyncStorage;

/// The link, as the server renders the page: there is none.
#[cfg(not(feature = "hydrate"))]
pub struct SocketLink;

#[cfg(not(feature = "hydrate"))]
impl SocketLink {
    #[allow(dead_code)] // the server never sends: it renders
    fn send(&self, _: ClientFrame) -> bool {
        false
    }
    fn messages_waiting(&self) {}
}

#[cfg(feature = "hydrate")]
pub use crate::socket::Link as SocketLink;

impl Sender {
    /// No link yet.
    pub fn empty() -> Self {
        Sender(StoredValue::new_with_storage(None))
    }

    /// Replaces the link (dropping, and so closing, the previous one first).
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // the server opens no link
    pub fn set(&self, link: Option<SocketLink>) {
        self.0.set_value(None);
        if link.is_some() {
            self.0.set_value(link);
        }
    }

    /// Drops the link, if the page has not been torn down already.
    pub fn close(&self) {
        self.0.try_set_value(None);
    }

    /// Sends one frame on the socket; false if there is no open link.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))] // used by browser-only effects
    pub fn send(&self, frame: ClientFrame) -> bool {
        self.0
            .with_value(|link| link.as_ref().is_some_and(|link| link.send(frame)))
    }

    /// Adds a message or a change to one (`what`) to the chat state's pending ones, under a fresh
    /// `client_id`, and tells the link: it goes out in its turn, and again after a reconnect until the
    /// server has stored it.
    pub fn queue(&self, chat: ChatState, room: &str, text: String, what: Outgoing) {
        chat.add_pending(Pending::new(new_client_id(), room.to_owned(), text, what));
        self.messages_waiting();
    }

    /// Tells the link a new message waits in the chat state's pending ones.
    pub fn messages_waiting(&self) {
        self.0.with_value(|link| {
            if let Some(link) = link {
                link.messages_waiting();
            }
        });
    }
}

/// A fresh id for a message or change this page sends: random enough that one person's ids never
/// collide.
pub fn new_client_id() -> String {
    #[cfg(feature = "hydrate")]
    {
        let part = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
        format!("{:08x}{:08x}{:08x}", part(), part(), part())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        String::new()
    }
}
