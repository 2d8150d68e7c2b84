//! The fan-out log: one copy of every broadcast frame, read by every connection at its own pace.
//!
//! Instead of copying each frame into one queue per connection, the manager appends it once here; each
//! connection keeps only a cursor (a sequence number) and, when woken, takes the frames past its cursor.
//! The log keeps the newest frames within two bounds, `--queue-frames` and `--queue-bytes`. A connection
//! whose cursor falls behind the oldest frame kept has fallen further behind than either bound allows:
//! it is too slow, and is disconnected (1013). So one stalled client costs the server no memory at all
//! beyond its cursor, and the log's size is fixed whatever the number of connections.
//!
//! Waking: [`FanoutLog::append`] wakes every connection waiting on [`FanoutLog::changed`] at once
//! (`Notify::notify_waiters`). A connection must *enable* its `Notified` before it checks the log, so an
//! append between the check and the wait is not missed.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::manager::Frame;

pub struct FanoutLog {
    /// A std `Mutex`: held only to push or to clone a few `Frame`s (reference counts), never across an
    /// `.await`.
    ring: Mutex<Ring>,
    appended: Notify,
    max_frames: usize,
    max_bytes: usize,
}

struct Ring {
    frames: VecDeque<Frame>,
    /// Sequence number of `frames[0]`.
    first_seq: u64,
    /// Bytes of all frames kept.
    bytes: usize,
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
                first_seq: 0,
                bytes: 0,
            }),
            appended: Notify::new(),
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    /// The sequence number the next appended frame will get: a new reader starts here.
    pub fn head(&self) -> u64 {
        let ring = self.ring();
        ring.first_seq + ring.frames.len() as u64
    }

    /// Appends `frame` and wakes every waiting reader. Returns the oldest sequence number still kept:
    /// readers whose cursor is below it have lost frames.
    pub fn append(&self, frame: Frame) -> u64 {
        let first_seq = {
            let mut ring = self.ring();
            ring.bytes += frame.len();
            ring.frames.push_back(frame);
            while ring.frames.len() > self.max_frames
                || (ring.bytes > self.max_bytes && ring.frames.len() > 1)
            {
                let oldest = ring
                    .frames
                    .pop_front()
                    .expect("more than one frame is kept");
                ring.bytes -= oldest.len();
                ring.first_seq += 1;
            }
            ring.first_seq
        };
        self.appended.notify_waiters();
        first_seq
    }

    /// Moves up to `limit` frames past `cursor` (and before `end`, if given) into `batch`, and advances
    /// `cursor` over them.
    pub fn read(
        &self,
        cursor: &mut u64,
        end: Option<u64>,
        batch: &mut impl Extend<Frame>,
        limit: usize,
    ) -> Result<(), Lagged> {
        let ring = self.ring();
        if *cursor < ring.first_seq {
            return Err(Lagged);
        }
        let start = (*cursor - ring.first_seq) as usize;
        let limit = match end {
            Some(end) => limit.min(end.saturating_sub(*cursor) as usize),
            None => limit,
        };
        let taken = ring.frames.range(start..).take(limit);
        let count = taken.len();
        batch.extend(taken.cloned());
        *cursor += count as u64;
        Ok(())
    }

    /// Frames between `cursor` and the head.
    pub fn behind(&self, cursor: u64) -> u64 {
        self.head().saturating_sub(cursor)
    }

    /// A future that completes at the next [`FanoutLog::append`]. Enable it before checking the log.
    pub fn changed(&self) -> Notified<'_> {
        self.appended.notified()
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

    fn texts(batch: &[Frame]) -> Vec<&str> {
        batch
            .iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect()
    }

    #[test]
    fn readers_take_what_is_past_their_cursor() {
        let log = FanoutLog::new(8, 1024);
        let mut early = log.head();
        log.append(frame("a"));
        let mut late = log.head();
        log.append(frame("b"));
        log.append(frame("c"));

        let mut batch = Vec::new();
        log.read(&mut early, None, &mut batch, 2).unwrap();
        assert_eq!(texts(&batch), ["a", "b"]);
        batch.clear();
        log.read(&mut early, None, &mut batch, 10).unwrap();
        assert_eq!(texts(&batch), ["c"]);
        batch.clear();
        log.read(&mut late, Some(3), &mut batch, 10).unwrap();
        assert_eq!(texts(&batch), ["b", "c"]);
        batch.clear();
        let mut capped = 1;
        log.read(&mut capped, Some(2), &mut batch, 10).unwrap();
        assert_eq!(texts(&batch), ["b"], "nothing from the end on");
        assert_eq!(log.behind(late), 0);
    }

    #[test]
    fn bounded_by_frames_and_by_bytes() {
        let log = FanoutLog::new(3, 1000);
        let mut reader = log.head();
        for text in ["1", "2", "3"] {
            assert_eq!(log.append(frame(text)), 0);
        }
        assert_eq!(
            log.append(frame("4")),
            1,
            "the frame bound evicts the oldest"
        );
        assert_eq!(
            log.read(&mut reader, None, &mut Vec::new(), 10),
            Err(Lagged)
        );

        let log = FanoutLog::new(100, 10);
        log.append(frame("aaaa"));
        log.append(frame("bbbb"));
        assert_eq!(
            log.append(frame("cccc")),
            1,
            "the byte bound evicts the oldest"
        );
        // The newest frame is always kept, however large.
        assert_eq!(log.append(frame(&"x".repeat(50))), 3);
    }

    #[tokio::test]
    async fn an_enabled_waiter_sees_an_append_made_before_it_waits() {
        let log = FanoutLog::new(8, 1024);
        let changed = log.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        log.append(frame("a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), changed)
            .await
            .expect("woken");
    }
}
