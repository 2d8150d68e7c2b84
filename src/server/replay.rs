//! What a joining connection is sent of a room's history ([`Replay`]), and the one rule for how much
//! that may be ([`ReplayLimits`]), shared by the store's replay (`history::replay`) and the in-memory
//! one (`recent.rs`).

use crate::protocol::ChatMessage;

/// What a joining connection is sent of the room's history.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    /// `messages` continue exactly from the `after` the client asked for.
    pub recovered: bool,
    pub messages: Vec<ChatMessage>,
    /// The room's oldest stored sequence number (0: none).
    pub oldest_seq: u64,
    /// The sequence number the client already has everything up to: `after` when recovered, else 0.
    pub after: u64,
    /// The room's last sequence number when this was read.
    pub last_seq: u64,
}

/// How much one join may be sent.
#[derive(Clone, Copy, Debug)]
pub struct ReplayLimits {
    /// Messages sent to a client joining afresh (or one too far behind to catch up).
    pub fresh: usize,
    /// Most missed messages replayed to a client that says what it has.
    pub max_missed: u64,
    /// Most bytes of message text in one replay. A `joined` frame is queued whole for a client that may
    /// not be reading, so its size is bounded in bytes, not only in messages: a catch-up larger than
    /// this starts the room afresh instead (the client pages older history over HTTP), and a fresh
    /// start keeps only as many of the latest messages as fit (always the newest one).
    pub max_bytes: usize,
}

impl ReplayLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &super::config::Config) -> ReplayLimits {
        ReplayLimits {
            fresh: config.history_on_join,
            max_missed: config.replay_limit,
            max_bytes: config.replay_bytes,
        }
    }

    /// Whether a client that has everything up to `after` may be replayed the rest of a room whose
    /// last sequence number is `last_seq` (if it is all still there): `after` is one the room reached,
    /// and no more than `max_missed` behind.
    pub fn can_catch_up(&self, after: u64, last_seq: u64) -> bool {
        after <= last_seq && last_seq - after <= self.max_missed
    }

    /// Whether `missed` (the messages a catch-up would send) fit in one replay.
    pub fn fits(&self, missed: &[ChatMessage]) -> bool {
        text_bytes(missed) <= self.max_bytes
    }

    /// The newest of `latest` (oldest first) that fit in one replay: at most `fresh` of them, and at
    /// least the newest one.
    pub fn newest_that_fit<'a>(
        &self,
        latest: impl DoubleEndedIterator<Item = &'a ChatMessage>,
    ) -> Vec<ChatMessage> {
        let mut bytes = 0usize;
        let mut kept: Vec<ChatMessage> = Vec::new();
        for message in latest.rev().take(self.fresh) {
            bytes = bytes.saturating_add(size(message));
            if bytes > self.max_bytes && !kept.is_empty() {
                break;
            }
            kept.push(message.clone());
        }
        kept.reverse();
        kept
    }
}

fn text_bytes(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .fold(0usize, |sum, m| sum.saturating_add(size(m)))
}

/// What a message counts against the byte bound: its text, sender and `client_id`, as the store's
/// budgeted reads count them (`Store::after_within`, `Store::before_within`).
pub fn size(message: &ChatMessage) -> usize {
    message.text.len()
        + message.from.len()
        + message.client_id.as_ref().map_or(0, String::len)
        + message.html.as_ref().map_or(0, String::len)
        + message
            .reply_to
            .as_ref()
            .map_or(0, |q| q.text.len() + q.from.len())
        + message
            .reactions
            .iter()
            .map(|r| r.emoji.len() + r.names.iter().map(String::len).sum::<usize>())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, len: usize) -> ChatMessage {
        ChatMessage {
            seq,
            from: "ann".into(),
            text: "x".repeat(len),
            ts: 0,
            client_id: None,
            ..ChatMessage::default()
        }
    }

    #[test]
    fn a_replay_is_bounded_in_messages_and_in_bytes() {
        let limits = ReplayLimits {
            fresh: 3,
            max_missed: 10,
            max_bytes: 100,
        };
        let small: Vec<_> = (1..=5).map(|seq| message(seq, 10)).collect();
        let seqs = |kept: Vec<ChatMessage>| kept.iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(limits.newest_that_fit(small.iter())), [3, 4, 5]);
        let large: Vec<_> = (1..=5).map(|seq| message(seq, 40)).collect();
        assert_eq!(seqs(limits.newest_that_fit(large.iter())), [4, 5]);
        let huge = [message(1, 500)];
        assert_eq!(
            seqs(limits.newest_that_fit(huge.iter())),
            [1],
            "the newest always"
        );
        assert!(limits.fits(&small));
        assert!(!limits.fits(&large));
        assert!(limits.can_catch_up(5, 15) && !limits.can_catch_up(4, 15));
        assert!(!limits.can_catch_up(16, 15), "past the end of the room");
    }
}
