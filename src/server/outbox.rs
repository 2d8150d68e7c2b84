//! What one connection has waiting besides the shared [`FanoutLog`](super::fanout::FanoutLog): its cursor
//! into that log, the few frames meant for it alone (welcome, errors, pongs), and the manager's order to
//! disconnect it.
//!
//! Shared (`Arc`) between the manager, which writes, and the connection's task, which reads. It is small
//! and allocates nothing until a personal frame arrives, because every idle connection has one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::manager::{Frame, Kick};

/// Most personal frames a connection may have waiting before it counts as too slow. They answer the
/// client's own frames, which are rate-limited, so a live client never comes near it.
pub const MAX_PERSONAL_FRAMES: usize = 64;

pub struct Outbox {
    /// The connection's position in the fan-out log: the next sequence number it will take. Written by
    /// the connection's task, read by the manager to find readers that fell behind. Relaxed ordering: a
    /// slightly stale value only delays that decision to the next append.
    cursor: AtomicU64,
    /// A std `Mutex`: held for a push or a pop, never across an `.await`.
    state: Mutex<State>,
    /// Set by the heartbeat sweep: time for the connection to check on its client.
    heartbeat_due: AtomicBool,
    /// Wakes the connection for a personal frame, a kick or a heartbeat (`notify_one` keeps the wake-up
    /// if it is not waiting). One `Notify` for all three keeps an idle connection small.
    wake: Notify,
}

#[derive(Default)]
struct State {
    personal: VecDeque<Frame>,
    /// The order to disconnect, and the end of the log this connection may still be sent: the head when
    /// it was kicked (so it is not sent, say, the news of its own departure).
    kick: Option<(Kick, u64)>,
}

/// The personal queue is full: the client is not reading.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Outbox {
    pub fn new(cursor: u64) -> Self {
        Outbox {
            cursor: AtomicU64::new(cursor),
            state: Mutex::new(State::default()),
            heartbeat_due: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    pub fn set_cursor(&self, cursor: u64) {
        self.cursor.store(cursor, Ordering::Relaxed);
    }

    /// Queues a frame for this connection alone.
    pub fn send(&self, frame: Frame) -> Result<(), Full> {
        {
            let mut state = self.state();
            if state.personal.len() >= MAX_PERSONAL_FRAMES {
                return Err(Full);
            }
            state.personal.push_back(frame);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Moves every personal frame waiting into `batch`.
    pub fn take_personal(&self, batch: &mut impl Extend<Frame>) {
        let mut state = self.state();
        // Taking the queue leaves an unallocated one: personal frames are rare, idle connections many.
        batch.extend(std::mem::take(&mut state.personal));
    }

    /// Personal frames waiting.
    pub fn personal_len(&self) -> usize {
        self.state().personal.len()
    }

    /// Orders the connection closed with `kick`, sending it nothing of the log from `log_end` on; the
    /// first order wins.
    pub fn kick(&self, kick: Kick, log_end: u64) {
        self.state().kick.get_or_insert((kick, log_end));
        self.wake.notify_one();
    }

    /// The kick ordered, if any.
    pub fn kick_ordered(&self) -> Option<Kick> {
        self.state().kick.map(|(kick, _)| kick)
    }

    /// Where in the log this connection must stop, once kicked.
    pub fn log_end(&self) -> Option<u64> {
        self.state().kick.map(|(_, end)| end)
    }

    /// Asks the connection to check on its client (ping it, or give up on it).
    pub fn nudge(&self) {
        self.heartbeat_due.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether a heartbeat check was asked for since the last call.
    pub fn take_heartbeat_due(&self) -> bool {
        self.heartbeat_due.swap(false, Ordering::Relaxed)
    }

    /// Completes when a personal frame, a kick or a heartbeat check may be waiting.
    pub fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_frames_are_bounded() {
        let outbox = Outbox::new(0);
        for _ in 0..MAX_PERSONAL_FRAMES {
            assert_eq!(outbox.send(Frame::from_static(b"x")), Ok(()));
        }
        assert_eq!(outbox.send(Frame::from_static(b"x")), Err(Full));
        let mut batch: Vec<Frame> = Vec::new();
        outbox.take_personal(&mut batch);
        assert_eq!(batch.len(), MAX_PERSONAL_FRAMES);
        assert_eq!(outbox.personal_len(), 0);
    }

    #[tokio::test]
    async fn the_first_kick_wins_and_wakes() {
        let outbox = Outbox::new(0);
        outbox.kick(Kick::TOO_SLOW, 0);
        outbox.kick(Kick::SHUTDOWN, 0);
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.woken())
            .await
            .expect("woken");
        assert_eq!(outbox.kick_ordered(), Some(Kick::TOO_SLOW));
    }
}
