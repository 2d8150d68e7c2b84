//! Cluster mode's live side, over Redis: what crosses nodes as it happens (each room's messages,
//! presence and typing, on the room's pub/sub channel), this node's lease, and name leases, so that a
//! name is unique across the cluster. PostgreSQL, not this, is the source of truth for history.
//!
//! **The bus may drop or reorder**: Redis pub/sub delivers at most once, and nothing at all while a
//! node is cut off. So a message from the bus only ever takes its turn in its room (`Rooms::deliver`,
//! by `seq`); a gap it reveals is filled from the store (`gaps.rs`) after a short wait. Messages lost at
//! the end of a burst reveal no gap: every [`SYNC_EVERY`], and at once after a reconnect, each room this
//! node follows is compared with the store's last `seq`.
//!
//! **Presence** is stated, never diffed: each node keeps its own people in a Redis hash
//! (`chat:presence:{node}`) and publishes each change as that person's whole count. A node's lease
//! (`chat:node:{node}`, [`LEASE`]) is renewed every [`TICK`]; when it runs out (the node died), every
//! other node forgets that node's people, announcing their leaves, and clears its hashes.
//!
//! **Names**: `chat:name:{key}` maps each node holding the name to the person holding it there. A
//! claim (a Lua script, atomic in Redis) succeeds if every live holder is the same person. With Redis
//! unreachable a claim is granted on this node's own word (the node checks its own connections anyway),
//! and re-stated when Redis is back.
//!
//! **One task, one order.** Everything this node says to Redis goes through one task and one queue
//! (`peers::Cluster`), so a name released and claimed again by the same person reaches Redis in that order.
//! The queue is bounded; what does not fit is dropped and marks the node for a full restatement, as
//! does every reconnect: the store and the hashes make the bus's losses good.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metrics::{counter, gauge, histogram};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::clock::now_ms;
use super::manager::ConnectionManager;
use super::metrics as m;
use super::peers::{BusEvent, Cluster, Command, GapFiller, Shared};
use super::presence::PresenceRecord;
use super::store::{PersonId, Store};

/// How long a node's lease lasts without renewal: its people leave the others' presence this long after
/// it died, plus up to one [`TICK`].
pub const LEASE: Duration = Duration::from_secs(8);
/// How often the lease is renewed and other nodes' leases checked.
const TICK: Duration = Duration::from_secs(2);
/// How often the rooms followed here are compared with the store.
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Longest any one Redis call may take before the connection counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Events waiting to go out to Redis.
const QUEUE: usize = 8192;

#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    event: BusEvent,
}

/// Starts the bus task for node `node` on Redis at `url`, and returns this node's handle on it. The
/// task keeps reconnecting until the process ends; the server serves from the first moment, degraded
/// while Redis is away.
pub fn start(
    url: &str,
    node: String,
    manager: Arc<ConnectionManager>,
    store: Store,
    gaps: GapFiller,
) -> anyhow::Result<Cluster> {
    let client = redis::Client::open(url)?;
    let (cluster, queue) = Cluster::new(node, QUEUE);
    let task = BusTask {
        client,
        node: cluster.node.clone(),
        manager,
        store,
        gaps,
        shared: cluster.shared.clone(),
    };
    tokio::spawn(task.run(queue));
    Ok(cluster)
}

struct BusTask {
    client: redis::Client,
    node: Arc<str>,
    manager: Arc<ConnectionManager>,
    store: Store,
    gaps: GapFiller,
    shared: Arc<Shared>,
}

fn channel(room: &str) -> String {
    format!("chat:room:{room}")
}
fn node_key(node: &str) -> String {
    format!("chat:node:{node}")
}
fn presence_key(node: &str) -> String {
    format!("chat:presence:{node}")
}
fn names_of_key(node: &str) -> String {
    format!("chat:names:{node}")
}
fn name_key(key: &str) -> String {
    format!("chat:name:{key}")
}
const NODES: &str = "chat:nodes";

/// Claims a name: KEYS[1] the name's hash; ARGV: this node, the person, the node-lease prefix.
/// Holders on dead nodes (no lease) are cleared on the way. Returns "" when granted, else the holder.
const CLAIM: &str = r#"
local holders = redis.call('HGETALL', KEYS[1])
for i = 1, #holders, 2 do
  local node, person = holders[i], holders[i + 1]
  if node ~= ARGV[1] and person ~= ARGV[2] then
    if redis.call('EXISTS', ARGV[3] .. node) == 1 then
      return person
    end
    redis.call('HDEL', KEYS[1], node)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ''
"#;

async fn call<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, ()> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            tracing::warn!(%error, "redis call failed");
            Err(())
        }
        Err(_) => {
            tracing::warn!("redis call timed out");
            Err(())
        }
    }
}

impl BusTask {
    async fn run(self, mut queue: mpsc::Receiver<Command>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Ok((conn, pubsub)) = self.connect().await {
                backoff = Duration::from_millis(100);
                self.shared.connected.store(true, Ordering::Relaxed);
                gauge!(m::BUS_CONNECTED).set(1.0);
                tracing::info!(node = %self.node, "bus connected");
                if self.serve(conn, pubsub, &mut queue).await.is_break() {
                    return;
                }
                self.shared.connected.store(false, Ordering::Relaxed);
                gauge!(m::BUS_CONNECTED).set(0.0);
                tracing::warn!(node = %self.node, "bus lost; delivering this node's own messages meanwhile");
            }
            // Away from Redis: claims are granted on this node's word, the rest waits for the
            // restatement. Only the wait is bounded; the queue is drained meanwhile.
            let deadline = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    command = queue.recv() => match command {
                        None => return,
                        Some(Command::Claim { answer, .. }) => { let _ = answer.send(true); }
                        Some(_) => {}
                    }
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            counter!(m::BUS_RECONNECTS).increment(1);
        }
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), ()> {
        let conn = call(self.client.get_multiplexed_async_connection()).await?;
        let mut pubsub = call(self.client.get_async_pubsub()).await?;
        call(pubsub.psubscribe("chat:room:*")).await?;
        Ok((conn, pubsub))
    }

    /// Serves one Redis connection until it fails (`Continue`: reconnect) or the queue closes.
    async fn serve(
        &self,
        mut conn: MultiplexedConnection,
        pubsub: redis::aio::PubSub,
        queue: &mut mpsc::Receiver<Command>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        // Subscribed first, then restated: whatever happens after the restatement's reads arrives.
        if self.restate(&mut conn).await.is_err() {
            return Continue(());
        }
        let mut messages = pubsub.into_on_message();
        let mut tick = tokio::time::interval(TICK);
        let mut sync = tokio::time::interval(SYNC_EVERY);
        loop {
            if self.shared.restate.swap(false, Ordering::Relaxed)
                && self.restate(&mut conn).await.is_err()
            {
                return Continue(());
            }
            let outcome = tokio::select! {
                command = queue.recv() => match command {
                    None => return Break(()),
                    Some(command) => self.execute(&mut conn, command, queue).await,
                },
                message = messages.next() => match message {
                    None => Err(()),
                    Some(message) => {
                        self.receive(message.get_payload_bytes());
                        Ok(())
                    }
                },
                _ = tick.tick() => self.renew_and_reap(&mut conn).await,
                _ = sync.tick() => {
                    self.sync_rooms().await;
                    Ok(())
                }
            };
            if outcome.is_err() {
                return Continue(());
            }
        }
    }

    /// Carries out one command, and any publications queued right behind it in the same round trip.
    async fn execute(
        &self,
        conn: &mut MultiplexedConnection,
        command: Command,
        queue: &mut mpsc::Receiver<Command>,
    ) -> Result<(), ()> {
        match command {
            Command::Publish(event) => {
                let mut pipe = redis::pipe();
                self.add_publication(&mut pipe, &event);
                let mut next = None;
                for _ in 0..256 {
                    match queue.try_recv() {
                        Ok(Command::Publish(event)) => self.add_publication(&mut pipe, &event),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                call(pipe.query_async::<()>(conn)).await?;
                match next {
                    Some(command) => Box::pin(self.execute(conn, command, queue)).await,
                    None => Ok(()),
                }
            }
            Command::Claim {
                key,
                person,
                answer,
            } => {
                // On failure the answer is dropped: the claim is granted (see `Cluster::claim_name`).
                let granted = self.claim(conn, &key, person).await?;
                let _ = answer.send(granted);
                Ok(())
            }
            Command::Holder { key, answer } => {
                let holders: Vec<(String, String)> =
                    call(redis::cmd("HGETALL").arg(name_key(&key)).query_async(conn)).await?;
                let person = holders.iter().find_map(|(_, person)| person.parse().ok());
                let _ = answer.send(person);
                Ok(())
            }
            Command::Depart { done } => {
                call(
                    redis::cmd("DEL")
                        .arg(node_key(&self.node))
                        .query_async::<()>(conn),
                )
                .await?;
                // As any other node would bury a dead one; the others notice the lease gone.
                self.bury(conn, &self.node).await?;
                let _ = done.send(());
                Ok(())
            }
            Command::Release { key } => {
                call(
                    redis::pipe()
                        .cmd("HDEL")
                        .arg(name_key(&key))
                        .arg(&*self.node)
                        .ignore()
                        .cmd("SREM")
                        .arg(names_of_key(&self.node))
                        .arg(&key)
                        .ignore()
                        .query_async::<()>(conn),
                )
                .await
            }
        }
    }

    fn add_publication(&self, pipe: &mut redis::Pipeline, event: &BusEvent) {
        if let BusEvent::Presence(record) = event {
            let field = format!("{}\n{}", record.room, record.key);
            if record.conns == 0 {
                pipe.cmd("HDEL")
                    .arg(presence_key(&self.node))
                    .arg(field)
                    .ignore();
            } else if let Ok(json) = serde_json::to_string(record) {
                pipe.cmd("HSET")
                    .arg(presence_key(&self.node))
                    .arg(field)
                    .arg(json)
                    .ignore();
            }
        }
        let envelope = Envelope {
            node: self.node.to_string(),
            event: event.clone(),
        };
        if let Ok(json) = serde_json::to_string(&envelope) {
            pipe.cmd("PUBLISH")
                .arg(channel(event.room()))
                .arg(json)
                .ignore();
        }
    }

    /// One event from another node.
    fn receive(&self, payload: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
            tracing::warn!("unreadable bus event");
            return;
        };
        if *envelope.node == *self.node {
            return;
        }
        if matches!(envelope.event, BusEvent::BansChanged) {
            tokio::spawn(super::admin::reload_bans(
                self.store.clone(),
                self.manager.clone(),
            ));
            return;
        }
        if let BusEvent::Message { message, .. } = &envelope.event {
            let lag_ms = now_ms().saturating_sub(message.ts);
            histogram!(m::BUS_LAG_SECONDS).record(lag_ms as f64 / 1e3);
        }
        let gaps = self.manager.apply_bus(&envelope.node, envelope.event);
        for gap in gaps {
            self.gaps.request(gap);
        }
    }

    /// States everything this node holds (its lease, its people, its names), reads back the other
    /// nodes' people, and catches every followed room up with the store: after a (re)connect, or
    /// when something could not be queued.
    async fn restate(&self, conn: &mut MultiplexedConnection) -> Result<(), ()> {
        self.renew(conn).await?;
        // This node's people, whole: the hash is rebuilt, and each record published.
        let mine = self.manager.local_presence();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(presence_key(&self.node)).ignore();
        for record in &mine {
            self.add_publication(&mut pipe, &BusEvent::Presence(record.clone()));
        }
        call(pipe.query_async::<()>(conn)).await?;
        // This node's names: claimed again, and whatever it no longer holds let go.
        let held = self.manager.held_names();
        let listed: Vec<String> = call(
            redis::cmd("SMEMBERS")
                .arg(names_of_key(&self.node))
                .query_async(conn),
        )
        .await?;
        let held_keys: HashSet<&str> = held.iter().map(|(key, _)| key.as_str()).collect();
        for stale in listed.iter().filter(|k| !held_keys.contains(k.as_str())) {
            call(
                redis::cmd("HDEL")
                    .arg(name_key(stale))
                    .arg(&*self.node)
                    .query_async::<()>(conn),
            )
            .await?;
        }
        for (key, person) in &held {
            if !self.claim(conn, key, *person).await? {
                tracing::warn!(name = %key, "a name held here while Redis was away is held elsewhere too");
            }
        }
        // The other nodes' people.
        let nodes: Vec<String> = call(redis::cmd("SMEMBERS").arg(NODES).query_async(conn)).await?;
        let mut records = Vec::new();
        for node in nodes.iter().filter(|n| **n != *self.node) {
            if self.buried_if_dead(conn, node).await? {
                continue;
            }
            let fields: Vec<(String, String)> = call(
                redis::cmd("HGETALL")
                    .arg(presence_key(node))
                    .query_async(conn),
            )
            .await?;
            records.extend(fields.into_iter().filter_map(|(_, json)| {
                Some((
                    node.clone(),
                    serde_json::from_str::<PresenceRecord>(&json).ok()?,
                ))
            }));
        }
        self.manager.replace_remote_presence(&records);
        self.sync_rooms().await;
        Ok(())
    }

    async fn renew(&self, conn: &mut MultiplexedConnection) -> Result<(), ()> {
        call(
            redis::pipe()
                .cmd("SET")
                .arg(node_key(&self.node))
                .arg(now_ms())
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .ignore()
                .cmd("SADD")
                .arg(NODES)
                .arg(&*self.node)
                .ignore()
                .query_async::<()>(conn),
        )
        .await
    }

    /// Renews this node's lease, and buries every node whose lease ran out.
    async fn renew_and_reap(&self, conn: &mut MultiplexedConnection) -> Result<(), ()> {
        self.renew(conn).await?;
        let mut nodes: Vec<String> =
            call(redis::cmd("SMEMBERS").arg(NODES).query_async(conn)).await?;
        nodes.extend(self.manager.remote_nodes());
        nodes.sort();
        nodes.dedup();
        for node in nodes.iter().filter(|n| **n != *self.node) {
            self.buried_if_dead(conn, node).await?;
        }
        Ok(())
    }

    /// Claims the name `key` for `person` on this node (the `CLAIM` script), and lists it among this
    /// node's names if granted; whether it was.
    async fn claim(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        person: PersonId,
    ) -> Result<bool, ()> {
        let holder: String = call(
            redis::Script::new(CLAIM)
                .key(name_key(key))
                .arg(&*self.node)
                .arg(person.to_string())
                .arg(node_key(""))
                .invoke_async(conn),
        )
        .await?;
        if holder.is_empty() {
            call(
                redis::cmd("SADD")
                    .arg(names_of_key(&self.node))
                    .arg(key)
                    .query_async::<()>(conn),
            )
            .await?;
        }
        Ok(holder.is_empty())
    }

    /// Buries `node` if its lease ran out; whether it did.
    async fn buried_if_dead(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
    ) -> Result<bool, ()> {
        let alive: bool = call(redis::cmd("EXISTS").arg(node_key(node)).query_async(conn)).await?;
        if !alive {
            self.bury(conn, node).await?;
        }
        Ok(!alive)
    }

    /// A node whose lease ran out: its people leave here, and its records go from Redis (any node
    /// may do this, as often as it likes).
    async fn bury(&self, conn: &mut MultiplexedConnection, node: &str) -> Result<(), ()> {
        self.manager.forget_node(node);
        let names: Vec<String> = call(
            redis::cmd("SMEMBERS")
                .arg(names_of_key(node))
                .query_async(conn),
        )
        .await?;
        let mut pipe = redis::pipe();
        for key in &names {
            pipe.cmd("HDEL").arg(name_key(key)).arg(node).ignore();
        }
        pipe.cmd("DEL")
            .arg(names_of_key(node))
            .arg(presence_key(node))
            .ignore()
            .cmd("SREM")
            .arg(NODES)
            .arg(node)
            .ignore();
        call(pipe.query_async::<()>(conn)).await?;
        tracing::info!(node, "a node's lease ran out: its people left");
        Ok(())
    }

    /// Compares each room followed here with the store, and fills what the bus lost.
    async fn sync_rooms(&self) {
        let sequences = self.manager.sequences();
        if sequences.is_empty() {
            return;
        }
        let names: Vec<String> = sequences.iter().map(|(room, _)| room.clone()).collect();
        let Ok(sizes) = self.store.room_sizes(&names).await else {
            return;
        };
        for (room, last) in sizes {
            let behind = sequences
                .iter()
                .any(|(r, next)| *r == room && last >= *next);
            if behind {
                self.gaps.request_now(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_tagged_json() {
        let envelope = Envelope {
            node: "a".into(),
            event: BusEvent::Typing {
                room: "dev".into(),
                key: "ann".into(),
                name: "Ann".into(),
            },
        };
        let json = serde_json::to_string(&envelope).unwrap();
        assert_eq!(
            json,
            r#"{"node":"a","kind":"typing","room":"dev","key":"ann","name":"Ann"}"#
        );
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.event, BusEvent::Typing { .. }));
    }
}
