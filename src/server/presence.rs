//! Who is present in each room through the *other* nodes of a cluster: this node's copy, kept from
//! their presence events on the bus (see `bus.rs`) and reloaded whole from Redis whenever the bus
//! reconnects. Single-node servers keep it empty.
//!
//! Each event states a node's whole count for one person in one room (0: gone), never a difference, so
//! applying one twice, or a reload over events, converges on the same state.

use std::collections::{BTreeMap, HashMap};

/// A person present in a room through other nodes.
#[derive(Clone, Debug)]
struct Person {
    name: String,
    /// When they arrived (ms since the epoch, the arriving node's clock): orders the online list.
    since: u64,
    /// Their connections following the room, per node.
    nodes: BTreeMap<String, usize>,
}

/// One node's count for one person in one room, as the bus carries it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceRecord {
    pub room: String,
    /// The person's `name_key`.
    pub key: String,
    pub name: String,
    pub conns: usize,
    pub since: u64,
}

/// Whether an update made a person appear in or vanish from a room (as seen through other nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Arrived,
    Left,
    None,
}

#[derive(Default)]
pub struct RemotePresence {
    rooms: HashMap<String, HashMap<String, Person>>,
}

impl RemotePresence {
    /// Applies `node`'s count for one person in one room.
    pub fn apply(&mut self, node: &str, record: &PresenceRecord) -> Change {
        let people = self.rooms.entry(record.room.clone()).or_default();
        let before = people.contains_key(&record.key);
        if record.conns > 0 {
            let person = people.entry(record.key.clone()).or_insert_with(|| Person {
                name: record.name.clone(),
                since: record.since,
                nodes: BTreeMap::new(),
            });
            person.since = person.since.min(record.since);
            person.nodes.insert(node.to_owned(), record.conns);
        } else if let Some(person) = people.get_mut(&record.key) {
            person.nodes.remove(node);
            if person.nodes.is_empty() {
                people.remove(&record.key);
            }
        }
        let after = people.contains_key(&record.key);
        if people.is_empty() {
            self.rooms.remove(&record.room);
        }
        match (before, after) {
            (false, true) => Change::Arrived,
            (true, false) => Change::Left,
            _ => Change::None,
        }
    }

    /// Forgets everything `node` said (it died, or its lease ran out): the people that left with it,
    /// as (room, key, name).
    pub fn forget_node(&mut self, node: &str) -> Vec<(String, String, String)> {
        let mut left = Vec::new();
        for (room, people) in self.rooms.iter_mut() {
            people.retain(|key, person| {
                person.nodes.remove(node);
                let gone = person.nodes.is_empty();
                if gone {
                    left.push((room.clone(), key.clone(), person.name.clone()));
                }
                !gone
            });
        }
        self.rooms.retain(|_, people| !people.is_empty());
        left
    }

    /// Replaces everything with `records` (node, record) read back from Redis; returns the people
    /// who arrived or left by it, as (room, key, name, change).
    pub fn replace(
        &mut self,
        records: &[(String, PresenceRecord)],
    ) -> Vec<(String, String, String, Change)> {
        let mut fresh = RemotePresence::default();
        for (node, record) in records {
            fresh.apply(node, record);
        }
        let mut changes = Vec::new();
        for (room, people) in &self.rooms {
            for (key, person) in people {
                if !fresh.is_present(room, key) {
                    changes.push((room.clone(), key.clone(), person.name.clone(), Change::Left));
                }
            }
        }
        for (room, people) in &fresh.rooms {
            for (key, person) in people {
                if !self.is_present(room, key) {
                    changes.push((
                        room.clone(),
                        key.clone(),
                        person.name.clone(),
                        Change::Arrived,
                    ));
                }
            }
        }
        *self = fresh;
        changes
    }

    pub fn is_present(&self, room: &str, key: &str) -> bool {
        self.rooms.get(room).is_some_and(|p| p.contains_key(key))
    }

    /// The people in `room` through other nodes: (key, arrival, name).
    pub fn people<'a>(&'a self, room: &str) -> impl Iterator<Item = (&'a str, u64, &'a str)> + 'a {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|people| people.iter())
            .map(|(key, p)| (key.as_str(), p.since, p.name.as_str()))
    }

    /// Every room with someone in it through other nodes: (room, people's keys).
    pub fn rooms(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.rooms
            .iter()
            .map(|(room, people)| (room.as_str(), people.keys().map(String::as_str)))
    }

    /// The nodes this copy has heard from.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .rooms
            .values()
            .flat_map(|people| people.values())
            .flat_map(|p| p.nodes.keys().cloned())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(room: &str, name: &str, conns: usize) -> PresenceRecord {
        PresenceRecord {
            room: room.into(),
            key: name.into(),
            name: name.into(),
            conns,
            since: 1,
        }
    }

    #[test]
    fn a_person_is_present_while_any_node_counts_them() {
        let mut remote = RemotePresence::default();
        assert_eq!(remote.apply("a", &record("r", "ann", 1)), Change::Arrived);
        assert_eq!(remote.apply("b", &record("r", "ann", 2)), Change::None);
        // The same statement again changes nothing.
        assert_eq!(remote.apply("b", &record("r", "ann", 2)), Change::None);
        assert_eq!(remote.apply("a", &record("r", "ann", 0)), Change::None);
        assert_eq!(remote.apply("b", &record("r", "ann", 0)), Change::Left);
        assert!(!remote.is_present("r", "ann"));
        assert_eq!(remote.rooms().count(), 0);
    }

    #[test]
    fn a_dead_node_takes_only_its_own_people() {
        let mut remote = RemotePresence::default();
        remote.apply("a", &record("r", "ann", 1));
        remote.apply("a", &record("r", "bob", 1));
        remote.apply("b", &record("r", "bob", 1));
        let left = remote.forget_node("a");
        assert_eq!(left, [("r".into(), "ann".into(), "ann".into())]);
        assert!(remote.is_present("r", "bob"));
        assert_eq!(remote.nodes(), ["b"]);
    }

    #[test]
    fn a_reload_reports_the_difference() {
        let mut remote = RemotePresence::default();
        remote.apply("a", &record("r", "ann", 1));
        let changes = remote.replace(&[("a".into(), record("r", "bob", 1))]);
        assert!(changes.contains(&("r".into(), "ann".into(), "ann".into(), Change::Left)));
        assert!(changes.contains(&("r".into(), "bob".into(), "bob".into(), Change::Arrived)));
        assert_eq!(changes.len(), 2);
    }
}
