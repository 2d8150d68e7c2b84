//! The fan-out log: one copy of every broadcast frame, read by every connection at its own pace.
//!
//! Instead of copying each frame into one queue per connection, the manager appends it once here; each
//! connection keeps only a cursor (a position in the log) and, when woken, takes the frames past its cursor.
//! The log keeps the newest frames within two bounds, `--queue-frames` and `--queue-bytes`. A connection
//! whose cursor falls behind the oldest frame kept has fallen further behind than either bound allows:
//! it is too slow, and is disconnected (1013). So one stalled client costs the server no memory at all
//! beyond its cursor, and the log's size is fixed whatever the number of connections.
//!
//! There is one log per room. Each entry carries the room's sequence number when it is a chat message
//! (0 for presence and typing events), so a connection that has just been replayed a room's history can
//! skip what the replay already gave it (see `outbox.rs`).
//!
//! An entry holds its event once per wire format a reader may need (see [`Encoded`]): the JSON frame
//! always, the original format's line when the room had a member reading that format. Each reader takes
//! its own format's frame, and passes entries that have none for it.
//!
//! Waking is not the log's business: whoever appends wakes the room's members (see `manager.rs`), each
//! through its own outbox, so a connection following several rooms has one thing to wait on.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::frame::{Frame, WireFormat};

pub struct FanoutLog {
    /// A std `Mutex`: held only to push or to clone a few `Frame`s (reference counts), never across an
    /// `.await`.
    ring: Mutex<Ring>,
    max_frames: usize,
    max_bytes: usize,
}

struct Ring {
    /// Each event, with its message sequence number (0 for other events).
    frames: VecDeque<(Encoded, u64)>,
    /// Position of `frames[0]` (positions count every frame ever appended).
    first_position: u64,
    /// Bytes of all frames kept, in every format.
    bytes: usize,
}

/// One event, encoded once per wire format that someone reads: cloning it copies no frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// For [`WireFormat::Json`] readers; every event has one.
    pub json: Frame,
    /// For [`WireFormat::Legacy`] readers: `None` when the event has no words in that format, or no one
    /// reading it was there to need them.
    pub legacy: Option<Frame>,
}

impl Encoded {
    /// An event only JSON readers see.
    #[cfg(test)]
    pub fn json(json: Frame) -> Self {
        Encoded { json, legacy: None }
    }

    fn len(&self) -> usize {
        self.json.len() + self.legacy.as_ref().map_or(0, Frame::len)
    }

    fn get(&self, format: WireFormat) -> Option<&Frame> {
        match format {
            WireFormat::Json => Some(&self.json),
            WireFormat::Legacy => self.legacy.as_ref(),
        }
    }
}

/// The reader's cursor points at a frame no longer kept: it fell too far behind.
#[derive(Debug, PartialEq, Eq)]
pub struct Lagged;

impl FanoutLog {
    /// A log keeping at most `max_frames` frames and `max_bytes` bytes (always at least the newest frame).
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        FanoutLog {
            ring: Mutex::new(Ring {
                frames: VecDeque::new(),
                first_position: 0,
                bytes: 0,
            }),
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    /// The position the next appended frame will get: a new reader starts here.
    pub fn head(&self) -> u64 {
        let ring = self.ring();
        ring.first_position + ring.frames.len() as u64
    }

    /// Appends `event` (a chat message numbered `message_seq`, or 0 for any other event). Returns the
    /// oldest position still kept: readers whose cursor is below it have lost frames.
    pub fn append(&self, event: Encoded, message_seq: u64) -> u64 {
        let first_position = {
            let mut ring = self.ring();
            ring.bytes += event.len();
            ring.frames.push_back((event, message_seq));
            while ring.frames.len() > self.max_frames
                || (ring.bytes > self.max_bytes && ring.frames.len() > 1)
            {
                let Some(oldest) = ring.frames.pop_front() else {
                    break;
                };
                ring.bytes = ring.bytes.saturating_sub(oldest.0.len());
                ring.first_position += 1;
            }
            ring.first_position
        };
        first_position
    }

    /// Moves the `format` frames past `cursor` (and before `end`, if given) into `batch`, up to `limit`
    /// of them, and advances `cursor` over them. Entries without a frame in `format` are passed, and
    /// `keep(position, message_seq)` may skip one too (the cursor still passes it). Returns how many
    /// frames went into `batch`.
    pub fn read(
        &self,
        cursor: &mut u64,
        end: Option<u64>,
        format: WireFormat,
        batch: &mut impl Extend<Frame>,
        limit: usize,
        mut keep: impl FnMut(u64, u64) -> bool,
    ) -> Result<usize, Lagged> {
        let ring = self.ring();
        if *cursor < ring.first_position {
            return Err(Lagged);
        }
        let head = ring.first_position + ring.frames.len() as u64;
        let end = end.unwrap_or(u64::MAX).min(head);
        let mut taken = 0;
        while *cursor < end && taken < limit {
            let index = usize::try_from(*cursor - ring.first_position).unwrap_or(usize::MAX);
            let Some((event, message_seq)) = ring.frames.get(index) else {
                break;
            };
            if let Some(frame) = event.get(format) {
                if keep(*cursor, *message_seq) {
                    batch.extend([frame.clone()]);
                    taken += 1;
                }
            }
            *cursor += 1;
        }
        Ok(taken)
    }

    /// Frames between `cursor` and the head.
    pub fn behind(&self, cursor: u64) -> u64 {
        self.head().saturating_sub(cursor)
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // The ring's invariants hold between statements; a panic elsewhere must not poison every reader.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::copy_from_slice(text.as_bytes())
    }

    /// An event only JSON readers see.
    fn event(text: &str) -> Encoded {
        Encoded::json(frame(text))
    }

    const JSON: WireFormat = WireFormat::Json;

    fn texts(batch: &[Frame]) -> Vec<&str> {
        batch
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect()
    }

    #[test]
    fn readers_take_what_is_past_their_cursor() {
        let log = FanoutLog::new(8, 1024);
        let all = |_, _| true;
        let mut early = log.head();
        log.append(event("a"), 1);
        let mut late = log.head();
        log.append(event("b"), 0);
        log.append(event("c"), 2);

        let mut batch = Vec::new();
        log.read(&mut early, None, JSON, &mut batch, 2, all)
            .unwrap();
        assert_eq!(texts(&batch), ["a", "b"]);
        batch.clear();
        log.read(&mut early, None, JSON, &mut batch, 10, all)
            .unwrap();
        assert_eq!(texts(&batch), ["c"]);
        batch.clear();
        log.read(&mut late, Some(3), JSON, &mut batch, 10, all)
            .unwrap();
        assert_eq!(texts(&batch), ["b", "c"]);
        batch.clear();
        let mut capped = 1;
        log.read(&mut capped, Some(2), JSON, &mut batch, 10, all)
            .unwrap();
        assert_eq!(texts(&batch), ["b"], "nothing from the end on");
        assert_eq!(log.behind(late), 0);
        batch.clear();
        let mut skipping = 0;
        let taken = log
            .read(&mut skipping, None, JSON, &mut batch, 10, |_, seq| seq != 1)
            .unwrap();
        assert_eq!((taken, skipping), (2, 3), "skipped frames are passed");
        assert_eq!(texts(&batch), ["b", "c"]);
    }

    #[test]
    fn bounded_by_frames_and_by_bytes() {
        let log = FanoutLog::new(3, 1000);
        let mut reader = log.head();
        for text in ["1", "2", "3"] {
            assert_eq!(log.append(event(text), 0), 0);
        }
        assert_eq!(
            log.append(event("4"), 0),
            1,
            "the frame bound evicts the oldest"
        );
        assert_eq!(
            log.read(&mut reader, None, JSON, &mut Vec::new(), 10, |_, _| true),
            Err(Lagged)
        );

        let log = FanoutLog::new(100, 10);
        log.append(event("aaaa"), 0);
        log.append(event("bbbb"), 0);
        assert_eq!(
            log.append(event("cccc"), 0),
            1,
            "the byte bound evicts the oldest"
        );
        // The newest frame is always kept, however large.
        assert_eq!(log.append(event(&"x".repeat(50)), 0), 3);
    }

    #[test]
    fn each_reader_takes_its_own_format_and_passes_what_has_none() {
        let log = FanoutLog::new(8, 1024);
        let said = Encoded {
            json: frame("{message}"),
            legacy: Some(frame("ann says: hi")),
        };
        log.append(said.clone(), 1);
        log.append(Encoded::json(frame("{join}")), 0);
        log.append(
            Encoded {
                json: frame("{leave}"),
                legacy: Some(frame("ann left the chat")),
            },
            0,
        );
        let read = |format| {
            let (mut cursor, mut batch) = (0, Vec::new());
            let taken = log
                .read(&mut cursor, None, format, &mut batch, 10, |_, _| true)
                .unwrap();
            assert_eq!((taken, cursor), (batch.len(), 3), "every entry is passed");
            batch
        };
        let (json, legacy) = (read(WireFormat::Json), read(WireFormat::Legacy));
        assert_eq!(
            json,
            [frame("{message}"), frame("{join}"), frame("{leave}")]
        );
        assert_eq!(legacy, [frame("ann says: hi"), frame("ann left the chat")]);
        // Encoded once: every reader of a format gets the same bytes, not a copy.
        let again = read(WireFormat::Legacy);
        assert_eq!(again[0].as_ptr(), legacy[0].as_ptr());
        assert_eq!(json[0].as_ptr(), said.json.as_ptr());
    }

    #[test]
    fn both_formats_count_against_the_byte_bound() {
        let log = FanoutLog::new(100, 20);
        let both = || Encoded {
            json: frame("123456"),
            legacy: Some(frame("123456")),
        };
        assert_eq!(log.append(both(), 1), 0);
        assert_eq!(log.append(both(), 2), 1, "24 bytes kept would exceed 20");
    }
}
