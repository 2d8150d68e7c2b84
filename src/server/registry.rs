//! The registry of connections and names: every connection the manager accepted, which person it is,
//! the name it goes by, the rooms it follows, and which person holds each name.
//!
//! Plain data behind the manager's lock (see `manager.rs`); nothing here waits or publishes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::error::ChatError;
use super::frame::{Frame, WireFormat};
use super::names::{self, name_key};
use super::outbox::{Full, Outbox};
use super::rate_limit::TokenBucket;
use super::session::{Session, Sessions};
use super::store::PersonId;

/// Identifies one WebSocket connection for as long as it lasts.
pub type ConnId = u64;

/// Who a new connection says it is.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// From a valid session token: the person, and the name they had.
    pub session: Option<Session>,
    /// A name asked for explicitly (`/ws?name=`, `/ws/{client_id}`): this one or a refusal.
    pub chosen: Option<String>,
    /// From `/ws/{client_id}`, the one route whose names may start with `Client #`.
    pub legacy: bool,
}

/// What the registry records about one connection.
pub(super) struct Record {
    pub person: PersonId,
    pub name: String,
    pub outbox: Arc<Outbox>,
    /// What it reads: the manager queues no personal JSON frame for a [`WireFormat::Legacy`] one.
    pub format: WireFormat,
    /// Rooms it follows.
    pub rooms: Vec<String>,
    /// Rooms it asked to join whose history is still being read.
    pub joining: Vec<String>,
}

/// Room creation budgets kept before full ones are swept away.
const CREATORS_SWEEP_AT: usize = 1024;

/// Which person holds a name, through how many connections.
struct NameHold {
    person: PersonId,
    conns: usize,
}

pub(super) struct Registry {
    /// A `BTreeMap` because ids only grow: iterating it lists connections in the order they came.
    records: BTreeMap<ConnId, Record>,
    /// Every name in use (by `name_key`).
    names: HashMap<String, NameHold>,
    /// Room creation budgets of the people who created rooms lately (see
    /// [`Registry::may_create_room`]).
    creators: HashMap<PersonId, TokenBucket>,
    next_id: ConnId,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            records: BTreeMap::new(),
            names: HashMap::new(),
            creators: HashMap::new(),
            next_id: 1,
        }
    }

    /// Registers a connection, reading `format`, of the person `identity` names (a new person if none).
    /// The name: the one chosen (refused if another person holds it), else the session's if it is free
    /// (or already this person's), else a fresh one.
    pub fn admit(
        &mut self,
        identity: Identity,
        format: WireFormat,
        max_name_chars: usize,
    ) -> Result<(ConnId, &Record), ChatError> {
        let person = identity
            .session
            .as_ref()
            .map_or_else(Sessions::new_person, |s| s.person);
        let free = |names: &HashMap<String, NameHold>, name: &str| {
            names
                .get(&name_key(name))
                .is_none_or(|hold| hold.person == person)
        };
        let name = match identity.chosen {
            Some(raw) => {
                let name = names::validate(&raw, max_name_chars, identity.legacy)
                    .map_err(ChatError::BadName)?;
                if !free(&self.names, &name) {
                    return Err(ChatError::NameTaken(name));
                }
                name
            }
            None => match identity.session {
                Some(Session { name, .. })
                    if names::validate(&name, max_name_chars, false).as_ref() == Ok(&name)
                        && free(&self.names, &name) =>
                {
                    name
                }
                _ => names::assign(|n| !self.names.contains_key(&name_key(n))),
            },
        };
        let id = self.next_id;
        self.next_id += 1;
        self.names
            .entry(name_key(&name))
            .or_insert(NameHold { person, conns: 0 })
            .conns += 1;
        let record = self.records.entry(id).or_insert(Record {
            person,
            name,
            outbox: Arc::new(Outbox::new()),
            format,
            rooms: Vec::new(),
            joining: Vec::new(),
        });
        Ok((id, record))
    }

    pub fn get(&self, id: ConnId) -> Option<&Record> {
        self.records.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Record> {
        self.records.get_mut(&id)
    }

    /// Forgets a connection, and its name once the person's last connection with it is gone.
    pub fn remove(&mut self, id: ConnId) -> Option<Record> {
        let record = self.records.remove(&id)?;
        let key = name_key(&record.name);
        if let Some(hold) = self.names.get_mut(&key) {
            hold.conns = hold.conns.saturating_sub(1);
            if hold.conns == 0 {
                self.names.remove(&key);
            }
        }
        Some(record)
    }

    /// Whether some connection here goes by the name whose key is `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.names.contains_key(key)
    }

    /// Every name held here (by key), with the person holding it.
    pub fn held_names(&self) -> Vec<(String, PersonId)> {
        self.names
            .iter()
            .map(|(key, hold)| (key.clone(), hold.person))
            .collect()
    }

    /// Forgets every connection (shutdown) and returns them.
    pub fn clear(&mut self) -> Vec<Record> {
        self.names.clear();
        self.creators.clear();
        std::mem::take(&mut self.records).into_values().collect()
    }

    /// Queues a personal frame for connection `to`; `Err(Full)`: it is not reading (too slow). A
    /// connection already gone takes nothing, and that is fine.
    pub fn send(&self, to: ConnId, frame: Frame) -> Result<(), Full> {
        match self.records.get(&to) {
            Some(record) => record.outbox.send(frame),
            None => Ok(()),
        }
    }

    /// Whether `person` may create one more room now: a token bucket of `per_minute` rooms, in bursts
    /// of as many. Per person, not per connection, so reconnecting does not refill it. Only people who
    /// created a room lately have a bucket; the map is swept of full buckets when it grows, so its size
    /// is bounded by how many people can create rooms within a minute or so.
    pub fn may_create_room(&mut self, person: PersonId, per_minute: f64) -> bool {
        let now = std::time::Instant::now();
        if self.creators.len() >= CREATORS_SWEEP_AT {
            self.creators.retain(|_, budget| !budget.refilled_by(now));
        }
        self.creators
            .entry(person)
            .or_insert_with(|| TokenBucket::full(per_minute / 60.0, per_minute, now))
            .take(now)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub fn records_by_id(&self) -> impl Iterator<Item = (ConnId, &Record)> {
        self.records.iter().map(|(id, record)| (*id, record))
    }
}
