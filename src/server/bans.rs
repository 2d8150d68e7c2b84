//! The operator's bans, as this node holds them: which person or name may not connect (a ban from the
//! whole server) or follow a room (a ban from that room).
//!
//! Plain data behind the manager's lock (see `manager.rs`). The store keeps the bans (`admin.rs` sets
//! them); each node reads them back whole when the operator changes one here, when another node says
//! it changed one (over the bus), and every [`RELOAD_EVERY`] in case a bus message was lost.

use std::time::Duration;

use super::store::{Ban, PersonId};

/// How often each node reads the bans again, whatever it heard.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct Bans {
    bans: Vec<Ban>,
}

impl Bans {
    pub fn replace(&mut self, bans: Vec<Ban>) {
        self.bans = bans;
    }

    /// The ban that keeps `person` (going by `name_key`) out of `room`, or (`None`) out of the whole
    /// server, if any. A server-wide ban keeps them out of every room too.
    pub fn against(
        &self,
        person: Option<PersonId>,
        name_key: &str,
        room: Option<&str>,
    ) -> Option<&Ban> {
        self.bans.iter().find(|ban| {
            let who = (person.is_some() && ban.person == person)
                || ban.name_key.as_deref() == Some(name_key);
            let where_ = ban.room.is_none() || ban.room.as_deref() == room;
            who && where_
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(person: Option<PersonId>, name_key: Option<&str>, room: Option<&str>) -> Ban {
        Ban {
            id: 1,
            person,
            name_key: name_key.map(Into::into),
            name: "x".into(),
            room: room.map(Into::into),
            reason: String::new(),
            ts: 0,
        }
    }

    #[test]
    fn a_ban_keeps_its_person_or_name_out_of_its_room_or_everywhere() {
        let mut bans = Bans::default();
        bans.replace(vec![
            ban(Some(7), None, Some("dev")),
            ban(None, Some("mallory"), None),
        ]);
        assert!(bans.against(Some(7), "ann", Some("dev")).is_some());
        assert!(bans.against(Some(7), "ann", Some("general")).is_none());
        assert!(
            bans.against(Some(7), "ann", None).is_none(),
            "only from dev"
        );
        assert!(bans.against(Some(8), "mallory", None).is_some());
        assert!(
            bans.against(None, "mallory", Some("general")).is_some(),
            "everywhere"
        );
        assert!(bans.against(None, "bob", Some("dev")).is_none());
    }
}
