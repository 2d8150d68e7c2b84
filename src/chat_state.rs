//! The chat page's reactive state, and how each [`ServerEvent`] changes it.
//!
//! Compiled on both sides: the server renders it empty, the browser fills it from the socket. Keeping the
//! event handling here (not in the socket code) lets it be unit-tested on the host.

use leptos::prelude::*;

use crate::protocol::ServerEvent;

/// The most lines the page keeps; older ones scroll away, so a long session does not grow without bound.
pub const MAX_LINES: usize = 500;

/// The state of the link to the server, shown by the connection indicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// Opening the socket, or waiting for the server's welcome.
    Connecting,
    /// Welcomed: messages go out and come in.
    Open,
    /// The link dropped and the page is about to reconnect; `reason` says why it dropped.
    Reconnecting { reason: String },
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

    /// What the indicator says.
    pub fn label(&self) -> String {
        match self {
            LinkStatus::Connecting => "connecting…".into(),
            LinkStatus::Open => "connected".into(),
            LinkStatus::Reconnecting { reason } => format!("reconnecting… ({reason})"),
            LinkStatus::Closed { reason } => format!("disconnected: {reason}"),
        }
    }
}

/// One entry of the message list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Unique on this page, assigned on arrival: the key of the keyed list.
    pub key: u64,
    pub kind: LineKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineKind {
    Message {
        from: String,
        text: String,
        ts: u64,
        /// Sent by this page's own name.
        mine: bool,
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

/// Every signal the chat page renders from. `Copy`, so closures can each take it.
#[derive(Clone, Copy)]
pub struct ChatState {
    pub link: RwSignal<LinkStatus>,
    /// Our own name, once the server has welcomed us.
    pub me: RwSignal<Option<String>>,
    /// Who is online, in join order (in a large room, only those the server listed).
    pub online: RwSignal<Vec<String>>,
    /// How many are online.
    pub online_count: RwSignal<usize>,
    pub lines: RwSignal<Vec<Line>>,
    next_key: StoredValue<u64>,
}

impl Default for ChatState {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatState {
    pub fn new() -> Self {
        ChatState {
            link: RwSignal::new(LinkStatus::Connecting),
            me: RwSignal::new(None),
            online: RwSignal::new(Vec::new()),
            online_count: RwSignal::new(0),
            lines: RwSignal::new(Vec::new()),
            next_key: StoredValue::new(0),
        }
    }

    /// Applies one event from the server.
    pub fn apply(&self, event: ServerEvent) {
        match event {
            ServerEvent::Welcome {
                name,
                online,
                online_count,
            } => {
                self.me.set(Some(name));
                self.online.set(online);
                self.online_count.set(online_count);
                self.link.set(LinkStatus::Open);
            }
            ServerEvent::Message { from, text, ts, .. } => {
                let mine = self
                    .me
                    .with_untracked(|me| me.as_deref() == Some(from.as_str()));
                self.push(LineKind::Message {
                    from,
                    text,
                    ts,
                    mine,
                });
            }
            ServerEvent::Join { name, .. } => {
                self.online.update(|online| online.push(name.clone()));
                self.online_count.update(|n| *n += 1);
                self.push(LineKind::Joined { name });
            }
            ServerEvent::Leave { name, .. } => {
                self.online.update(|online| online.retain(|n| *n != name));
                self.online_count.update(|n| *n = n.saturating_sub(1));
                self.push(LineKind::Left { name });
            }
            ServerEvent::Error { message, .. } => self.push(LineKind::Error { text: message }),
            ServerEvent::Pong => {}
        }
    }

    /// The socket closed for good: show why, and forget who was online (we can no longer tell).
    pub fn closed(&self, reason: impl Into<String>) {
        self.link.set(LinkStatus::Closed {
            reason: reason.into(),
        });
        self.online.set(Vec::new());
        self.online_count.set(0);
    }

    /// The link dropped and a reconnect is coming: show it, and forget who was online.
    pub fn reconnecting(&self, reason: impl Into<String>) {
        self.link.set(LinkStatus::Reconnecting {
            reason: reason.into(),
        });
        self.online.set(Vec::new());
        self.online_count.set(0);
    }

    /// Shows a problem found on this side (e.g. a name refused before connecting).
    pub fn local_error(&self, text: impl Into<String>) {
        self.push(LineKind::Error { text: text.into() });
    }

    fn push(&self, kind: LineKind) {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        self.lines.update(|lines| {
            if lines.len() >= MAX_LINES {
                lines.drain(..=lines.len() - MAX_LINES);
            }
            lines.push(Line { key, kind });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leptos::prelude::Owner;

    fn message(from: &str, text: &str) -> ServerEvent {
        ServerEvent::Message {
            id: 1,
            from: from.into(),
            text: text.into(),
            ts: 0,
        }
    }

    #[test]
    fn events_build_the_list_and_presence() {
        let owner = Owner::new();
        owner.set();
        let chat = ChatState::new();
        chat.apply(ServerEvent::Welcome {
            name: "bob".into(),
            online: vec!["ann".into(), "bob".into()],
            online_count: 2,
        });
        chat.apply(ServerEvent::Join {
            id: 2,
            name: "cy".into(),
            ts: 0,
        });
        chat.apply(message("bob", "hi"));
        chat.apply(message("ann", "hello"));
        chat.apply(ServerEvent::Leave {
            id: 3,
            name: "ann".into(),
            ts: 0,
        });

        assert_eq!(chat.link.get_untracked(), LinkStatus::Open);
        assert_eq!(chat.online.get_untracked(), vec!["bob", "cy"]);
        assert_eq!(chat.online_count.get_untracked(), 2);
        let lines = chat.lines.get_untracked();
        let keys: Vec<u64> = lines.iter().map(|l| l.key).collect();
        assert_eq!(keys, vec![0, 1, 2, 3]);
        assert!(matches!(
            &lines[1].kind,
            LineKind::Message { mine: true, .. }
        ));
        assert!(matches!(
            &lines[2].kind,
            LineKind::Message { mine: false, .. }
        ));
        assert_eq!(lines[3].kind, LineKind::Left { name: "ann".into() });
    }

    #[test]
    fn the_list_is_capped() {
        let owner = Owner::new();
        owner.set();
        let chat = ChatState::new();
        for i in 0..MAX_LINES + 10 {
            chat.apply(message("x", &i.to_string()));
        }
        let lines = chat.lines.get_untracked();
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].key, 10);
    }
}
