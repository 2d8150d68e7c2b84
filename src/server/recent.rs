//! The newest messages of a room people are in, kept in memory, so that most joins (a page opening,
//! a reconnect after a short drop) are answered at once, without a task or a trip to the store.
//!
//! A [`Recent`] holds a contiguous run of a room's newest messages, ending at the room's last sequence
//! number. It starts from a join's store read (see `ConnectionManager::finish_join` for when that read
//! is known to be current) and then follows every message the room publishes; a message that does not
//! continue it (which would mean one was missed) throws it away, and the next join reads the store again.

use std::collections::VecDeque;

use super::replay::{Replay, ReplayLimits};
use crate::protocol::{ChatMessage, EntryKind};

/// Most bytes of message text kept per room.
const MAX_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct Recent {
    messages: VecDeque<ChatMessage>,
    bytes: usize,
    /// Most messages kept.
    capacity: usize,
    /// The room's last sequence number.
    last_seq: u64,
    /// The oldest sequence number the store has (0: none), as last known.
    oldest_seq: u64,
}

impl Recent {
    /// Starts from a store read: `messages` are all of the room's messages after some point, up to
    /// `last_seq`.
    pub fn new(replay: &Replay, capacity: usize) -> Recent {
        let mut recent = Recent {
            messages: VecDeque::new(),
            bytes: 0,
            capacity: capacity.max(1),
            last_seq: replay.last_seq,
            oldest_seq: replay.oldest_seq,
        };
        for message in &replay.messages {
            recent.keep(message.clone());
        }
        recent.last_seq = recent
            .messages
            .back()
            .map_or(recent.last_seq, |m| m.seq.max(recent.last_seq));
        recent
    }

    /// Follows a message the room published. False if it does not continue what is kept: the cache
    /// can no longer be trusted.
    pub fn push(&mut self, message: &ChatMessage) -> bool {
        if message.seq <= self.last_seq {
            // Already kept (the store read that started this cache had it).
            return true;
        }
        if message.seq != self.last_seq + 1 {
            return false;
        }
        if message.kind != EntryKind::Message {
            // An edit or delete: what is kept may hold the message it changes as it was. (Rare
            // enough that the next join reading the store costs nothing worth a cleverer cache.)
            return false;
        }
        self.last_seq = message.seq;
        if self.oldest_seq == 0 {
            self.oldest_seq = message.seq;
        }
        self.keep(message.clone());
        true
    }

    /// What a client joining with `after` is sent, if what is kept is enough to say; `None`: read the
    /// store.
    pub fn replay(&self, after: Option<u64>, limits: ReplayLimits) -> Option<Replay> {
        let first_kept = self.messages.front().map_or(self.last_seq + 1, |m| m.seq);
        if let Some(after) = after {
            if limits.can_catch_up(after, self.last_seq) {
                if after + 1 < first_kept {
                    return None;
                }
                let missed: Vec<ChatMessage> = self
                    .messages
                    .iter()
                    .filter(|m| m.seq > after)
                    .cloned()
                    .collect();
                if limits.fits(&missed) {
                    return Some(Replay {
                        recovered: true,
                        messages: missed,
                        oldest_seq: self.oldest_seq,
                        after,
                        last_seq: self.last_seq,
                    });
                }
            }
        }
        // Afresh: the latest `fresh`, if they are all here (or everything the store has is).
        let has_all = match self.messages.front() {
            Some(first) => first.seq <= self.oldest_seq,
            None => self.oldest_seq == 0,
        };
        if self.messages.len() < limits.fresh && !has_all {
            return None;
        }
        Some(Replay {
            recovered: false,
            messages: limits.newest_that_fit(self.messages.iter()),
            oldest_seq: self.oldest_seq,
            after: 0,
            last_seq: self.last_seq,
        })
    }

    fn keep(&mut self, message: ChatMessage) {
        self.bytes += message.text.len();
        self.messages.push_back(message);
        while self.messages.len() > self.capacity
            || (self.bytes > MAX_BYTES && self.messages.len() > 1)
        {
            let Some(dropped) = self.messages.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(dropped.text.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> ChatMessage {
        ChatMessage {
            seq,
            from: "ann".into(),
            text: format!("m{seq}"),
            ts: 0,
            client_id: None,
            ..ChatMessage::default()
        }
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        replay.messages.iter().map(|m| m.seq).collect()
    }

    const LIMITS: ReplayLimits = ReplayLimits {
        fresh: 3,
        max_missed: 100,
        max_bytes: 1 << 20,
    };

    #[test]
    fn an_empty_room_answers_everything() {
        let mut recent = Recent::new(&Replay::default(), 5);
        let fresh = recent.replay(None, LIMITS).unwrap();
        assert!(!fresh.recovered && fresh.messages.is_empty());
        for seq in 1..=7 {
            assert!(recent.push(&message(seq)));
        }
        assert!(recent.push(&message(7)), "a repeat is harmless");
        assert_eq!(seqs(&recent.replay(None, LIMITS).unwrap()), [5, 6, 7]);
        let caught_up = recent.replay(Some(4), LIMITS).unwrap();
        assert!(caught_up.recovered);
        assert_eq!(seqs(&caught_up), [5, 6, 7]);
        assert!(recent.replay(Some(7), LIMITS).unwrap().messages.is_empty());
        // Kept: 3..=7. Further back needs the store; past the end starts afresh.
        assert!(recent.replay(Some(1), LIMITS).is_none());
        assert!(recent.replay(Some(2), LIMITS).unwrap().recovered);
        let reset = recent.replay(Some(50), LIMITS).unwrap();
        assert!(!reset.recovered);
        assert_eq!(seqs(&reset), [5, 6, 7]);
    }

    #[test]
    fn a_partial_start_only_answers_what_it_covers() {
        // Started from a rejoin's read: messages 41..=42 of a room whose store goes back to 1.
        let read = Replay {
            recovered: true,
            messages: vec![message(41), message(42)],
            oldest_seq: 1,
            after: 40,
            last_seq: 42,
        };
        let mut recent = Recent::new(&read, 10);
        assert!(
            recent.replay(None, LIMITS).is_none(),
            "3 latest: not all here"
        );
        assert!(recent.push(&message(43)));
        assert_eq!(seqs(&recent.replay(None, LIMITS).unwrap()), [41, 42, 43]);
        assert!(!recent.push(&message(45)), "a gap: no longer trusted");
    }
}
