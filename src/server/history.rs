//! History on the way in and out: the writer task that stores every message before anyone sees it, the
//! retention task that deletes what is no longer kept, and the replay a joining connection gets.
//!
//! **Writing.** Connections hand messages to one writer task through a bounded queue. The writer runs on
//! a thread of its own (with a one-thread tokio runtime), not among the connection tasks: each store
//! round trip wakes it, and on the shared runtime every wake-up would queue behind the thousand
//! connection tasks the last broadcast just woke (measured: +5 ms median latency at 100 messages/s to
//! 1,000 clients). The writer takes
//! everything waiting (up to [`MAX_BATCH`]), stores it in one transaction (one disk sync for the whole
//! batch: under load, batches grow and the cost per message falls), and only then has the manager
//! acknowledge each message to its sender and publish it to its room. One task, so sequence numbers are
//! published in the order they were given. A full queue refuses the message (`unavailable`, "busy"); a
//! failed transaction refuses the whole batch; in both cases the client may resend with the same
//! `client_id`, which is stored at most once.
//!
//! **Pruning.** Retention (`--retain-messages`, `--retain-days`) runs every minute on a thread of its
//! own, not the writer's: a pass over a large backlog takes seconds, and on the writer's thread every
//! acknowledgement would wait for all of it. It deletes in short transactions that take turns with the
//! writer's batches (see `Store::prune`), so a batch waits for one small delete at most. Each room that
//! lost messages has its in-memory recent messages dropped as soon as it is done (see
//! [`apply_retention`]); every other room keeps its own.
//!
//! **Replaying.** See [`replay`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::clock::now_ms;
use super::error::ChatError;
use super::manager::ConnectionManager;
use super::metrics as m;
use super::registry::ConnId;
use super::replay::{Replay, ReplayLimits};
use super::store::{NewMessage, PruneReport, Retention, Store, Stored, PRUNE_BATCH_ROWS};

/// Most messages stored in one transaction.
pub const MAX_BATCH: usize = 256;

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A message waiting to be stored, and the connection to acknowledge it to.
pub struct Submission {
    pub sender: ConnId,
    pub message: NewMessage,
    /// Told what became of it, for a submitter that is not a connection (the admin API).
    pub reply: Option<oneshot::Sender<Stored>>,
}

/// The way into the writer task; cheap to clone.
#[derive(Clone)]
pub struct HistoryWriter {
    queue: mpsc::Sender<Submission>,
}

impl HistoryWriter {
    /// Starts the writer on its own thread: it stores what is submitted into `store` and tells
    /// `manager`. It ends when every `HistoryWriter` is dropped. Unless `retention` keeps everything, a
    /// second thread applies it every minute (the first time at once), until the writer ends.
    pub fn start(
        store: Store,
        manager: Arc<ConnectionManager>,
        retention: Retention,
        queue_len: usize,
    ) -> std::io::Result<(HistoryWriter, std::thread::JoinHandle<()>)> {
        let (queue, submissions) = mpsc::channel(queue_len.max(1));
        // Dropped when the writer ends, which stops the pruner.
        let (stop_pruning, writer_ended) = oneshot::channel::<()>();
        if retention.max_messages > 0 || !retention.max_age.is_zero() {
            // A thread and a runtime of its own, for the writer's reason: when a delete commits it
            // must wake at once to hand the write turn back, not queue behind the connection tasks.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (store, manager) = (store.clone(), manager.clone());
            std::thread::Builder::new()
                .name("history-pruner".into())
                .spawn(move || {
                    runtime.block_on(prune_every_minute(store, manager, retention, writer_ended))
                })?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || {
                let _stop_pruning = stop_pruning;
                runtime.block_on(write(submissions, store, manager));
            })?;
        Ok((HistoryWriter { queue }, thread))
    }

    /// Queues a message for storing, without waiting: a full queue is refused.
    pub fn submit(&self, submission: Submission) -> Result<(), ChatError> {
        self.queue.try_send(submission).map_err(|_| ChatError::Busy)
    }
}

async fn write(
    mut submissions: mpsc::Receiver<Submission>,
    store: Store,
    manager: Arc<ConnectionManager>,
) {
    let mut batch: Vec<Submission> = Vec::new();
    loop {
        if submissions.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let messages: Vec<&NewMessage> = batch.iter().map(|s| &s.message).collect();
        let started = std::time::Instant::now();
        let stored = store.append(&messages).await;
        metrics::histogram!(m::STORE_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::STORE_BATCHES).increment(1);
        match stored {
            Ok(outcomes) => {
                let new = outcomes
                    .iter()
                    .filter(|o| matches!(o, super::store::Stored::New(_)))
                    .count();
                metrics::counter!(m::MESSAGES_STORED).increment(new as u64);
                for (submission, outcome) in batch.drain(..).zip(outcomes) {
                    if let Some(reply) = submission.reply {
                        let _ = reply.send(outcome.clone());
                    }
                    manager.stored(submission.sender, &submission.message, outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, messages = batch.len(), "storing messages failed");
                for submission in batch.drain(..) {
                    let answers = submission.message.reference();
                    manager.reject(submission.sender, &ChatError::StoreFailed, Some(answers));
                }
            }
        }
    }
}

/// Applies `retention` every [`PRUNE_EVERY`] until `writer_ended` resolves (the writer is gone).
async fn prune_every_minute(
    store: Store,
    manager: Arc<ConnectionManager>,
    retention: Retention,
    writer_ended: oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(PRUNE_EVERY);
    // A pass that overran the minute (a huge backlog) is not followed by another at once.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let passes = async {
        loop {
            ticks.tick().await;
            match apply_retention(&store, &manager, retention).await {
                Ok(report) if report.rooms.is_empty() => {}
                Ok(report) => tracing::info!(
                    deleted = report.deleted(),
                    rooms = report.rooms.len(),
                    batches = report.batches,
                    longest_batch_ms = report.longest_batch.as_secs_f64() * 1e3,
                    "retention: deleted old messages"
                ),
                Err(error) => tracing::warn!(%error, "retention failed"),
            }
        }
    };
    // Stopping mid-pass is safe: each batch is a transaction of its own.
    tokio::select! {
        () = passes => {}
        _ = writer_ended => {}
    }
}

/// Deletes what `retention` no longer keeps (see `Store::prune`), and drops the in-memory recent
/// messages of each room that lost some, as soon as that room is done: they may hold deleted messages
/// (the next join there reads the store). Other rooms keep theirs.
pub async fn apply_retention(
    store: &Store,
    manager: &ConnectionManager,
    retention: Retention,
) -> Result<PruneReport, sqlx::Error> {
    store
        .prune(retention, now_ms(), PRUNE_BATCH_ROWS, |room| {
            manager.forget_recent_in(room)
        })
        .await
}

/// What to send a client joining `room` that has everything up to `after` (if it says so).
///
/// Exactly the missed messages when the store still has all of them and there are at most
/// `max_missed`; otherwise (nothing given, pruned, too far behind, or an `after` the room never reached,
/// as after a store reset) the room's latest `fresh` messages, marked not recovered.
pub async fn replay(
    store: &Store,
    room: &str,
    after: Option<u64>,
    limits: ReplayLimits,
) -> Result<Replay, sqlx::Error> {
    let bounds = store.bounds(room).await?;
    if let Some(after) = after {
        // The first message the store still has (none: the next one to come).
        let first_kept = match bounds.oldest_seq {
            0 => bounds.last_seq + 1,
            oldest => oldest,
        };
        if limits.can_catch_up(after, bounds.last_seq) && after.saturating_add(1) >= first_kept {
            let max_missed = usize::try_from(limits.max_missed).unwrap_or(usize::MAX);
            // Read within the byte bound: a catch-up too large for one frame is never read whole,
            // however often a client asks for it.
            let messages = store
                .after_within(room, after, max_missed, limits.max_bytes, 0)
                .await?;
            // Retention may have run between the two reads: then this is not a continuation. And a
            // catch-up the bound cut short (it did not reach the room's last message) starts the room
            // afresh instead.
            let complete = messages.last().map_or(after, |m| m.seq) >= bounds.last_seq;
            if messages.first().is_none_or(|m| m.seq == after + 1)
                && complete
                && limits.fits(&messages)
            {
                let last_seq = messages.last().map_or(bounds.last_seq, |m| m.seq);
                return Ok(Replay {
                    recovered: true,
                    messages,
                    oldest_seq: bounds.oldest_seq,
                    after,
                    last_seq: last_seq.max(bounds.last_seq),
                });
            }
        }
    }
    let latest = store
        .before_within(room, None, limits.fresh, limits.max_bytes, 0)
        .await?;
    let messages = limits.newest_that_fit(latest.iter());
    let last_seq = messages.last().map_or(0, |m| m.seq).max(bounds.last_seq);
    Ok(Replay {
        recovered: false,
        messages,
        oldest_seq: bounds.oldest_seq,
        after: 0,
        last_seq,
    })
}
