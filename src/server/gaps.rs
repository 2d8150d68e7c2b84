//! Filling gaps in a room's sequence from the store.
//!
//! A message that reaches a room before the one ahead of it waits (see `Rooms::deliver`); the room
//! reports the gap, and a task here waits a moment ([`HOLD`]: the missing message is usually only a
//! little late on the bus), then, if it is still missing, reads it from the store and delivers it.
//! On a single node the history writer delivers in order, so this never runs; in a cluster it is what
//! makes the bus's losses good.
//!
//! An empty read proves nothing: it may have run just before the missing message was committed. So
//! a room moves past a missing `seq` only when the store holds later ones but not it (retention
//! deleted it); otherwise the fill holds and reads again.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;

use super::manager::ConnectionManager;
use super::metrics as m;
use super::peers::GapFiller;
use super::rooms::Fill;
use super::store::Store;

/// How long a gap may stay open before the store is asked: the missing message is usually only a
/// little late on the bus (or, from this node's own writer, a few milliseconds behind another
/// node's later one).
const HOLD: Duration = Duration::from_millis(100);
/// Messages read per store call.
const BATCH: usize = 500;
/// Fill requests waiting; more are dropped (a later report, or the periodic sync, asks again).
const QUEUE: usize = 1024;

/// Starts the task that fills gaps of `manager`'s rooms from `store`; returns the handle that asks it.
pub fn start(store: Store, manager: Arc<ConnectionManager>) -> GapFiller {
    let (filler, mut incoming) = GapFiller::new(QUEUE);
    tokio::spawn(async move {
        while let Some((room, why)) = incoming.recv().await {
            // One task per request: a slow read of one room holds up no other. Requests for a room
            // already being filled end at `begin_fill`, which lets one fill at a time through.
            tokio::spawn(fill(room, why, store.clone(), manager.clone()));
        }
    });
    filler
}

async fn fill(room: String, mut why: Fill, store: Store, manager: Arc<ConnectionManager>) {
    let mut wait = match why {
        Fill::Gap => HOLD,
        Fill::Behind => Duration::ZERO,
    };
    loop {
        tokio::time::sleep(wait).await;
        // None: nothing to fill any more, or a fill of this room is under way.
        let Some(next) = manager.begin_fill(&room, why) else {
            return;
        };
        counter!(m::GAP_FILLS).increment(1);
        match store.after(&room, next.saturating_sub(1), BATCH).await {
            Ok(messages) => {
                let full = messages.len() == BATCH;
                let still_open = manager.filled(&room, next, messages);
                (why, wait) = if full {
                    // The store may hold more right after these.
                    (Fill::Behind, Duration::ZERO)
                } else if still_open {
                    // The read ran before the missing message was committed, or the bus brought
                    // later ones meanwhile: hold again, then read if it is still missing.
                    (Fill::Gap, HOLD)
                } else {
                    return;
                };
            }
            Err(error) => {
                tracing::warn!(%error, room, "gap fill: the store could not be read");
                manager.end_fill(&room);
                wait = Duration::from_secs(1);
            }
        }
    }
}
