//! What one connection has waiting: its [`Subscription`]s (a cursor into each followed room's
//! [`FanoutLog`]), the few frames meant for it alone (welcome, joined snapshots, acks, errors, pongs),
//! and the manager's order to disconnect it.
//!
//! Shared (`Arc`) between the manager, which writes, and the connection's task, which reads. It is small
//! and allocates nothing until a personal frame arrives, because every idle connection has one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::fanout::{FanoutLog, Lagged};
use super::frame::{Frame, Kick, WireFormat};

/// Most personal frames a connection may have waiting before it counts as too slow. They answer the
/// client's own frames (WebSocket pongs included), which are rate-limited, so a live client never comes
/// near it.
pub const MAX_PERSONAL_FRAMES: usize = 64;

/// Most bytes of personal frames a connection may have waiting before it counts as too slow. Room for
/// the largest `joined` snapshot (its replay is bounded by `--replay-bytes`, 256 KiB of text, which
/// JSON may at most double) and then some; a client that asks for more without reading is dropped.
pub const MAX_PERSONAL_BYTES: usize = 1024 * 1024;

/// One connection following one room.
pub struct Subscription {
    pub room: String,
    pub log: Arc<FanoutLog>,
    /// Which of each entry's frames the connection takes.
    format: WireFormat,
    /// The connection's position in the room's log: the next position it will take. Written by the
    /// connection's task, read by the manager to find readers that fell behind. Relaxed ordering: a
    /// slightly stale value only delays that decision to the next append.
    cursor: AtomicU64,
    /// The highest message sequence number this connection has been given in the room, by the join's
    /// replay or live. The log may repeat messages the replay already had (see `manager::finish_join`);
    /// those are skipped, so nothing shows twice.
    delivered_seq: AtomicU64,
    /// Log position from which presence and typing events are news to this connection: earlier ones
    /// were already counted in its `joined` snapshot.
    live_from: u64,
    /// Once the connection is kicked: the log's head then. Nothing from there on is sent to it (it is
    /// not, say, sent the news of its own departure).
    end: AtomicU64,
}

impl Subscription {
    /// Reads the room's `format` frames from log position `start`, where presence news starts at
    /// `live_from`, having been given the room's messages up to `delivered_seq`.
    pub fn new(
        room: String,
        log: Arc<FanoutLog>,
        format: WireFormat,
        start: u64,
        live_from: u64,
        delivered_seq: u64,
    ) -> Self {
        Subscription {
            room,
            log,
            format,
            cursor: AtomicU64::new(start),
            delivered_seq: AtomicU64::new(delivered_seq),
            live_from,
            end: AtomicU64::new(u64::MAX),
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// Moves up to `limit` frames of the room that are news to this connection into `batch`; returns
    /// how many.
    pub fn read(&self, batch: &mut impl Extend<Frame>, limit: usize) -> Result<usize, Lagged> {
        let mut cursor = self.cursor();
        let mut delivered = self.delivered_seq.load(Ordering::Relaxed);
        let end = match self.end.load(Ordering::Relaxed) {
            u64::MAX => None,
            end => Some(end),
        };
        let live_from = self.live_from;
        let taken = self.log.read(
            &mut cursor,
            end,
            self.format,
            batch,
            limit,
            |position, seq| {
                if seq == 0 {
                    position >= live_from
                } else if seq > delivered {
                    delivered = seq;
                    true
                } else {
                    false
                }
            },
        );
        self.cursor.store(cursor, Ordering::Relaxed);
        self.delivered_seq.store(delivered, Ordering::Relaxed);
        taken
    }
}

pub struct Outbox {
    /// A std `Mutex`: held for a push or a pop, never across an `.await`.
    state: Mutex<State>,
    /// Set by the heartbeat sweep: time for the connection to check on its client.
    heartbeat_due: AtomicBool,
    /// Wakes the connection for anything: news in a followed room, a personal frame, a kick or a
    /// heartbeat (`notify_one` keeps the wake-up if it is not waiting, so none is lost). One `Notify` for
    /// all of it keeps an idle connection small, and lets a connection in many rooms wait on one thing.
    wake: Notify,
}

#[derive(Default)]
struct State {
    personal: VecDeque<Frame>,
    /// Bytes in `personal`.
    personal_bytes: usize,
    subscriptions: Vec<Arc<Subscription>>,
    kick: Option<Kick>,
}

/// The personal queue is full: the client is not reading.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            heartbeat_due: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Queues a frame for this connection alone: refused past [`MAX_PERSONAL_FRAMES`] or
    /// [`MAX_PERSONAL_BYTES`] waiting (but a frame into an empty queue is always taken).
    pub fn send(&self, frame: Frame) -> Result<(), Full> {
        {
            let mut state = self.state();
            let bytes = state.personal_bytes.saturating_add(frame.len());
            if !state.personal.is_empty()
                && (state.personal.len() >= MAX_PERSONAL_FRAMES || bytes > MAX_PERSONAL_BYTES)
            {
                return Err(Full);
            }
            state.personal_bytes = bytes;
            state.personal.push_back(frame);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Starts reading a room.
    pub fn subscribe(&self, subscription: Arc<Subscription>) {
        self.state().subscriptions.push(subscription);
        self.wake.notify_one();
    }

    /// Stops reading a room.
    pub fn unsubscribe(&self, room: &str) {
        self.state().subscriptions.retain(|s| s.room != room);
    }

    /// Moves what is waiting into `batch`: every personal frame, then up to `limit` frames from the
    /// followed rooms. `Err` if the connection fell behind a room's log: too slow.
    pub fn take(&self, batch: &mut impl Extend<Frame>, limit: usize) -> Result<(), Lagged> {
        let mut state = self.state();
        // Taking the queue leaves an unallocated one: personal frames are rare, idle connections many.
        batch.extend(std::mem::take(&mut state.personal));
        state.personal_bytes = 0;
        let mut room_for = limit;
        for subscription in &state.subscriptions {
            room_for = room_for.saturating_sub(subscription.read(batch, room_for)?);
            if room_for == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Frames waiting: personal ones and every followed room's.
    pub fn backlog(&self) -> u64 {
        let state = self.state();
        state.personal.len() as u64
            + state
                .subscriptions
                .iter()
                .map(|s| s.log.behind(s.cursor()))
                .sum::<u64>()
    }

    /// Wakes the connection: a followed room has news.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Orders the connection closed with `kick`, sending it nothing more of its rooms; the first order
    /// wins.
    pub fn kick(&self, kick: Kick) {
        let mut state = self.state();
        if state.kick.is_none() {
            state.kick = Some(kick);
            for subscription in &state.subscriptions {
                subscription
                    .end
                    .store(subscription.log.head(), Ordering::Relaxed);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The kick ordered, if any.
    pub fn kick_ordered(&self) -> Option<Kick> {
        self.state().kick
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

    /// Completes when something may be waiting.
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
    use crate::server::fanout::Encoded;

    #[test]
    fn personal_frames_are_bounded() {
        let outbox = Outbox::new();
        for _ in 0..MAX_PERSONAL_FRAMES {
            assert_eq!(outbox.send(Frame::from_static(b"x")), Ok(()));
        }
        assert_eq!(outbox.send(Frame::from_static(b"x")), Err(Full));
        let mut batch: Vec<Frame> = Vec::new();
        outbox.take(&mut batch, 10).unwrap();
        assert_eq!(batch.len(), MAX_PERSONAL_FRAMES);
        assert_eq!(outbox.backlog(), 0);
    }

    #[test]
    fn personal_frames_are_bounded_in_bytes_too() {
        let outbox = Outbox::new();
        let big = Frame::from(vec![0u8; MAX_PERSONAL_BYTES / 2]);
        assert_eq!(outbox.send(big.clone()), Ok(()));
        assert_eq!(outbox.send(big.clone()), Ok(()));
        assert_eq!(outbox.send(Frame::from_static(b"x")), Err(Full));
        let mut batch: Vec<Frame> = Vec::new();
        outbox.take(&mut batch, 10).unwrap();
        let huge = Frame::from(vec![0u8; 2 * MAX_PERSONAL_BYTES]);
        assert_eq!(
            outbox.send(huge),
            Ok(()),
            "an empty queue takes any one frame"
        );
        assert_eq!(outbox.send(Frame::from_static(b"x")), Err(Full));
    }

    #[test]
    fn a_subscription_skips_what_its_replay_gave_and_presence_from_before_it() {
        let log = Arc::new(FanoutLog::new(16, 1 << 20));
        let frame = |text: &'static str| Frame::from_static(text.as_bytes());
        let event = |text| Encoded::json(frame(text));
        log.append(event("m4"), 4); // stored before the replay was read: in it
        log.append(event("ann joined"), 0); // counted in the snapshot
        let live_from = log.head();
        log.append(event("m5"), 5);
        log.append(event("bob joined"), 0);
        let outbox = Outbox::new();
        outbox.subscribe(Arc::new(Subscription::new(
            "r".into(),
            log.clone(),
            WireFormat::Json,
            0,
            live_from,
            4,
        )));
        let mut batch: Vec<Frame> = Vec::new();
        outbox.take(&mut batch, 10).unwrap();
        assert_eq!(batch, [frame("m5"), frame("bob joined")]);
        // Kicked: nothing after the kick goes out.
        outbox.kick(Kick::SHUTDOWN);
        log.append(event("m6"), 6);
        batch.clear();
        outbox.take(&mut batch, 10).unwrap();
        assert!(batch.is_empty());
    }

    #[tokio::test]
    async fn the_first_kick_wins_and_wakes() {
        let outbox = Outbox::new();
        outbox.kick(Kick::TOO_SLOW);
        outbox.kick(Kick::SHUTDOWN);
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.woken())
            .await
            .expect("woken");
        assert_eq!(outbox.kick_ordered(), Some(Kick::TOO_SLOW));
    }
}
