//! Which accepted sockets get served, before any of them is a chat socket.
//!
//! Every accepted socket holds a slot until it upgrades to a WebSocket (then `--max-connections` counts
//! it, see `upgrade.rs`) or closes. Slots are bounded in total (`--max-http-connections`) and per peer
//! address (`--max-http-per-ip`): a socket past either bound is closed at once, before hyper reads a
//! byte of it. Together with the header-read timeout (`--header-timeout`, set on hyper's connection in
//! `run`), this bounds what a slowloris costs: at most `max_http_per_ip` sockets from one address, each
//! for at most the timeout, and never so many that a client from elsewhere cannot get in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::config::Config;

/// The slots of one server.
#[derive(Clone)]
pub struct HttpSlots {
    inner: Arc<Inner>,
}

struct Inner {
    max_total: usize,
    max_per_ip: usize,
    // A plain mutex: it is held for one map update per accepted or closed socket, never across an
    // await, and only the accept loop and closing connections touch it.
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    /// Slots held per peer address; an address with none is removed, so the map holds at most
    /// `max_total` entries.
    by_ip: HashMap<IpAddr, usize>,
}

/// Why a socket got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Every slot of the server is taken.
    Server,
    /// This address holds all the slots one address may.
    Address,
}

impl Full {
    /// The `reason` label of the refusal metric.
    pub fn label(self) -> &'static str {
        match self {
            Full::Server => "http_connections",
            Full::Address => "http_connections_per_ip",
        }
    }
}

/// A slot held by one socket; given back when dropped.
pub struct Slot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl HttpSlots {
    pub fn new(config: &Config) -> HttpSlots {
        HttpSlots {
            inner: Arc::new(Inner {
                max_total: config.max_http_connections,
                max_per_ip: config.max_http_per_ip,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    /// A slot for a socket from `ip`, if one is free.
    pub fn take(&self, ip: IpAddr) -> Result<Slot, Full> {
        let mut held = self.inner.held();
        if held.total >= self.inner.max_total {
            return Err(Full::Server);
        }
        let mine = held.by_ip.entry(ip).or_insert(0);
        if *mine >= self.inner.max_per_ip {
            return Err(Full::Address);
        }
        *mine += 1;
        held.total += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Slots held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.inner.held().total
    }
}

impl Inner {
    fn held(&self) -> MutexGuard<'_, Held> {
        // The map is consistent after every statement that changes it: a panic elsewhere while it was
        // locked leaves nothing half-done, so a poisoned lock is safe to keep using.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.inner.held();
        held.total = held.total.saturating_sub(1);
        if let Some(mine) = held.by_ip.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                held.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per_ip: usize) -> HttpSlots {
        HttpSlots::new(&Config {
            max_http_connections: total,
            max_http_per_ip: per_ip,
            ..Config::default()
        })
    }

    #[test]
    fn an_address_gets_its_share_and_the_server_its_total() {
        let slots = slots(3, 2);
        let (a, b, c) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).err(), Some(Full::Address));
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(c).err(), Some(Full::Server));
        // A slot given back is free again, for anyone.
        drop(a1);
        assert_eq!(slots.held(), 2);
        let _c1 = slots.take(c).unwrap();
        assert_eq!(slots.take(a).err(), Some(Full::Server));
    }

    #[test]
    fn addresses_with_no_slot_are_forgotten() {
        let slots = slots(10, 10);
        for i in 0..5u8 {
            drop(slots.take(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert_eq!(slots.held(), 0);
        assert!(slots.inner.held().by_ip.is_empty());
    }
}
