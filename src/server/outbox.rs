//! A connection's outbound queue, bounded twice: by frames and by bytes.
//!
//! The manager holds the [`OutboxSender`] and offers frames without ever waiting; the connection task
//! holds the [`OutboxReceiver`] and drains it into the socket. Bounding by frames alone would let a few
//! 64 KiB messages pin megabytes per stalled client; bounding by bytes alone would let a flood of tiny
//! frames grow the queue's bookkeeping. A full queue means the client is too slow: the manager drops it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::manager::Frame;

pub struct OutboxSender {
    frames: mpsc::Sender<Frame>,
    /// Bytes offered and not yet taken by the connection task. Shared with the receiver, which subtracts what it
    /// takes. Relaxed ordering is enough: it is a budget, not a synchronization point.
    queued_bytes: Arc<AtomicUsize>,
    max_frames: usize,
    max_bytes: usize,
}

pub struct OutboxReceiver {
    frames: mpsc::Receiver<Frame>,
    queued_bytes: Arc<AtomicUsize>,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: the client has fallen too far behind.
    Full,
    /// The connection task has ended (it is about to leave the manager).
    Gone,
}

/// A queue for at most `max_frames` frames and `max_bytes` bytes (each at least one frame's worth, so a
/// new queue always takes the welcome).
pub fn outbox(max_frames: usize, max_bytes: usize) -> (OutboxSender, OutboxReceiver) {
    let max_frames = max_frames.max(1);
    let (tx, rx) = mpsc::channel(max_frames);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        OutboxSender {
            frames: tx,
            queued_bytes: queued_bytes.clone(),
            max_frames,
            max_bytes,
        },
        OutboxReceiver {
            frames: rx,
            queued_bytes,
        },
    )
}

impl OutboxSender {
    /// Queues `frame` if it fits, never waiting. An empty queue takes any one frame, however large: the
    /// byte bound is about backlog, and a message the server accepted must be deliverable.
    pub fn offer(&self, frame: &Frame) -> Result<(), Refused> {
        if self.frames.is_closed() {
            return Err(Refused::Gone);
        }
        let len = frame.as_str().len();
        // Reserve the bytes first, so the receiver never subtracts bytes not yet added.
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let refused = if before > 0 && before + len > self.max_bytes {
            Refused::Full
        } else {
            match self.frames.try_send(frame.clone()) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => Refused::Full,
                Err(TrySendError::Closed(_)) => Refused::Gone,
            }
        };
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        Err(refused)
    }

    /// Frames waiting now.
    pub fn depth(&self) -> usize {
        self.max_frames - self.frames.capacity()
    }
}

impl OutboxReceiver {
    /// Waits for at least one frame, then moves up to `limit` waiting frames into `batch`. Returns 0 once
    /// the sender is gone and the queue is empty. Cancel-safe (it is `mpsc::Receiver::recv_many`).
    pub async fn recv_many(&mut self, batch: &mut Vec<Frame>, limit: usize) -> usize {
        let n = self.frames.recv_many(batch, limit).await;
        let bytes: usize = batch[batch.len() - n..]
            .iter()
            .map(|f| f.as_str().len())
            .sum();
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Frame {
        "x".repeat(len).into()
    }

    #[tokio::test]
    async fn bounded_by_frames_and_by_bytes() {
        let (tx, mut rx) = outbox(3, 100);
        assert_eq!(tx.offer(&frame(10)), Ok(()));
        assert_eq!(tx.offer(&frame(10)), Ok(()));
        assert_eq!(tx.offer(&frame(10)), Ok(()));
        assert_eq!(tx.offer(&frame(10)), Err(Refused::Full), "frame bound");
        assert_eq!(tx.depth(), 3);

        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 10).await, 3);
        assert_eq!(tx.depth(), 0);
        assert_eq!(tx.offer(&frame(60)), Ok(()));
        assert_eq!(tx.offer(&frame(60)), Err(Refused::Full), "byte bound");
        assert_eq!(tx.offer(&frame(40)), Ok(()));
    }

    #[tokio::test]
    async fn an_empty_queue_takes_one_large_frame() {
        let (tx, rx) = outbox(3, 100);
        assert_eq!(tx.offer(&frame(500)), Ok(()));
        assert_eq!(tx.offer(&frame(1)), Err(Refused::Full));
        drop(rx);
        assert_eq!(tx.offer(&frame(1)), Err(Refused::Gone));
    }
}
