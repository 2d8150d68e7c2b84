//! Filling gaps in a room's sequence from the store.
//!
//! A message that reaches a room before the one ahead of it waits (see `Rooms::deliver`); the room
//! reports the gap, and a task here waits a moment (`peers::HOLD`: the missing message is usually only a little
//! late on the bus), then reads what is still missing from the store and delivers it. On a single node
//! the history writer delivers in order, so this never runs; in a cluster it is what makes the bus's
//! losses good.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;

use super::manager::ConnectionManager;
use super::metrics as m;
use super::peers::GapFiller;
use super::store::Store;

/// Messages read per store call.
const BATCH: usize = 500;
/// Gap reports waiting; more are dropped (a later report, or the periodic sync, asks again).
const QUEUE: usize = 1024;

/// Starts the task that fills gaps of `manager`'s rooms from `store`; returns the handle that asks it.
pub fn start(store: Store, manager: Arc<ConnectionManager>) -> GapFiller {
    let (filler, mut incoming) = GapFiller::new(QUEUE);
    tokio::spawn(async move {
        while let Some((room, wait)) = incoming.recv().await {
            // One task per gap: a slow read of one room holds up no other.
            tokio::spawn(fill(room, wait, store.clone(), manager.clone()));
        }
    });
    filler
}

async fn fill(room: String, wait: Duration, store: Store, manager: Arc<ConnectionManager>) {
    tokio::time::sleep(wait).await;
    loop {
        // None: no longer following a sequence here, or a fill of this room is under way.
        let Some(next) = manager.begin_fill(&room) else {
            return;
        };
        counter!(m::GAP_FILLS).increment(1);
        let read = store.after(&room, next.saturating_sub(1), BATCH).await;
        let full = read.as_ref().is_ok_and(|messages| messages.len() == BATCH);
        let still_open = match read {
            Ok(messages) => manager.filled(&room, next, messages),
            Err(error) => {
                tracing::warn!(%error, room, "gap fill: the store could not be read");
                manager.end_fill(&room);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !(still_open || full) {
            return;
        }
    }
}
