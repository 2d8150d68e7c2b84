//! The rooms' online counts pushed to every page (a [`ServerEvent::RoomCounts`]), so room lists need
//! no polling: what each page was last told, and the frame that tells it what changed since.
//!
//! Plain data behind the manager's lock (see `manager.rs`). The manager asks for [`RoomCounts::changes`]
//! on a timer rather than on every join and leave: a crowd arriving at once is then one frame per page
//! per tick, not one per arrival per page (which would be quadratic in the room's size).

use std::collections::{BTreeMap, HashMap};

use super::frame::{encode, Frame};
use crate::protocol::{ServerEvent, MAX_ROOM_COUNTS};

#[derive(Default)]
pub(super) struct RoomCounts {
    /// The count every page has been told, by room (rooms told 0 are forgotten).
    told: HashMap<String, usize>,
    /// Every room with people as of the last tick (the fullest [`MAX_ROOM_COUNTS`]), for a page that
    /// connects now: what changes after it comes as the next ticks' frames.
    snapshot: Option<Frame>,
}

impl RoomCounts {
    /// Takes the counts now (rooms with people in them): the frame telling every page what changed,
    /// if anything did. At most [`MAX_ROOM_COUNTS`] rooms per frame; the rest go with the next one.
    pub fn changes(&mut self, now: Vec<(String, usize)>) -> Option<Frame> {
        let now: HashMap<String, usize> = now.into_iter().collect();
        let mut changed: BTreeMap<String, usize> = BTreeMap::new();
        for (room, count) in &now {
            if self.told.get(room) != Some(count) {
                changed.insert(room.clone(), *count);
            }
        }
        for room in self.told.keys() {
            if !now.contains_key(room) {
                changed.insert(room.clone(), 0);
            }
        }
        let changed: BTreeMap<String, usize> = changed.into_iter().take(MAX_ROOM_COUNTS).collect();
        for (room, count) in &changed {
            if *count == 0 {
                self.told.remove(room);
            } else {
                self.told.insert(room.clone(), *count);
            }
        }
        if changed.is_empty() {
            return None;
        }
        let mut fullest: Vec<(&String, &usize)> = self.told.iter().collect();
        fullest.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let counts = fullest
            .into_iter()
            .take(MAX_ROOM_COUNTS)
            .map(|(room, count)| (room.clone(), *count))
            .collect();
        self.snapshot = Some(encode(&ServerEvent::RoomCounts { counts }));
        Some(encode(&ServerEvent::RoomCounts { counts: changed }))
    }

    /// What a page connecting now is told first, if any room has people.
    pub fn snapshot(&self) -> Option<Frame> {
        self.snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(frame: &Frame) -> BTreeMap<String, usize> {
        // Unmasked server frame: 2 header bytes, or 4 with a 16-bit length.
        let start = if frame[1] & 0x7f == 126 { 4 } else { 2 };
        match serde_json::from_slice(&frame[start..]).unwrap() {
            ServerEvent::RoomCounts { counts } => counts,
            other => panic!("{other:?}"),
        }
    }

    fn now(rooms: &[(&str, usize)]) -> Vec<(String, usize)> {
        rooms.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    #[test]
    fn only_what_changed_is_told_and_an_emptied_room_is_told_zero() {
        let mut room_counts = RoomCounts::default();
        assert!(room_counts.snapshot().is_none());
        let first = room_counts.changes(now(&[("a", 2), ("b", 1)])).unwrap();
        assert_eq!(
            counts(&first),
            BTreeMap::from([("a".into(), 2), ("b".into(), 1)])
        );
        assert!(room_counts.changes(now(&[("a", 2), ("b", 1)])).is_none());
        let next = room_counts.changes(now(&[("a", 3)])).unwrap();
        assert_eq!(
            counts(&next),
            BTreeMap::from([("a".into(), 3), ("b".into(), 0)])
        );
        let snapshot = room_counts.snapshot().unwrap();
        assert_eq!(counts(&snapshot), BTreeMap::from([("a".into(), 3)]));
    }

    #[test]
    fn a_frame_lists_at_most_so_many_rooms_and_the_rest_come_next() {
        let mut room_counts = RoomCounts::default();
        let many: Vec<(String, usize)> = (0..MAX_ROOM_COUNTS + 10)
            .map(|i| (format!("room{i:04}"), 1))
            .collect();
        let first = room_counts.changes(many.clone()).unwrap();
        assert_eq!(counts(&first).len(), MAX_ROOM_COUNTS);
        let rest = room_counts.changes(many.clone()).unwrap();
        assert_eq!(counts(&rest).len(), 10);
        assert!(room_counts.changes(many).is_none());
        assert_eq!(
            counts(&room_counts.snapshot().unwrap()).len(),
            MAX_ROOM_COUNTS
        );
    }
}
