//! The load generator: real WebSocket clients against a running chat server (this project's, or the
//! FastAPI reference in `bench/reference/`), measuring what the fan-out engine promises.
//!
//! ```text
//! cargo bench --features ssr --bench loadgen -- --help
//! ```
//! `tools/bench.sh` (`make bench`) starts both servers pinned to one core and runs every scenario.
//!
//! Two modes:
//! - `fanout`: N clients in one room, K of them sending at a total rate R for a measured window. Every
//!   message carries its sender, sequence number and send time, so each receipt gives a latency and is
//!   checked against the sender's sequence (lost, duplicated, out of order). With `--server-pid`, the
//!   server's CPU time over the window is divided by the deliveries made in it. `--stalled` adds one
//!   client that connects and then never reads.
//! - `idle`: N connections that send nothing; the server's resident memory before and after, per
//!   connection.
//! - `hostile`: one client fills the room with `--history` messages of `--pad` bytes; then N clients that
//!   never read (small receive buffers) leave and rejoin it with `after: 0` over and over, each time
//!   asking for a replay of everything, and send WebSocket pings, for `--duration` seconds. The server's
//!   peak resident memory above where it started, per hostile client, is what one such connection can
//!   pin; the result also says how many of them the server closed.
//!
//! Single-threaded on purpose: the script pins it to the core the server does not use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::task::LocalSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// This project's server: `/ws?name=…`, JSON events.
    Groupchat,
    /// The seed's FastAPI chat: `/ws/{id}`, plain text `Client #{id} says: …`.
    Reference,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Fanout,
    Idle,
    Hostile,
}

#[derive(Parser, Debug)]
#[command(about = "WebSocket chat load generator")]
struct Args {
    #[arg(long, value_enum, default_value = "groupchat")]
    target: Target,
    #[arg(long, value_enum, default_value = "fanout")]
    mode: Mode,
    /// Server address; loopback only.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// The server's process id, for its CPU time and memory (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// How many of the connections send.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of sending before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Add one client that connects and never reads.
    #[arg(long)]
    stalled: bool,
    /// Bytes of padding added to each message (to fill a stalled client's buffers sooner).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Messages in the room before the hostile clients start (`--mode hostile`).
    #[arg(long, default_value_t = 150)]
    history: usize,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// A label printed with the result.
    #[arg(long, default_value = "")]
    label: String,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    assert!(
        args.addr.starts_with("127.") || args.addr.starts_with("localhost"),
        "the load generator only targets loopback"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = LocalSet::new();
    let outcome = local.block_on(&runtime, async {
        match args.mode {
            Mode::Fanout => fanout(&args).await,
            Mode::Idle => idle(&args).await,
            Mode::Hostile => hostile(&args).await,
        }
    });
    match outcome {
        Ok(line) => println!("RESULT {line}"),
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Connecting

fn url(args: &Args, i: usize) -> String {
    match args.target {
        Target::Groupchat => format!("ws://{}/ws?name=bench-{i}", args.addr),
        Target::Reference => format!("ws://{}/ws/{i}", args.addr),
    }
}

/// Opens `count` connections (numbered from `first`), `--connect-concurrency` at a time; ours are
/// returned after their welcome.
async fn connect_many(args: &Args, first: usize, count: usize) -> Result<Vec<Ws>, String> {
    let mut out: Vec<Option<Ws>> = (0..count).map(|_| None).collect();
    let mut pending = futures::stream::iter(first..first + count)
        .map(|i| async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url(args, i))
                .await
                .map_err(|e| format!("connection {i}: {e}"))?;
            if args.target == Target::Groupchat {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => {}
                    other => return Err(format!("connection {i}: no welcome ({other:?})")),
                }
            }
            Ok::<_, String>((i - first, ws))
        })
        .buffer_unordered(args.connect_concurrency.max(1));
    while let Some(result) = pending.next().await {
        let (slot, ws) = result?;
        out[slot] = Some(ws);
    }
    Ok(out
        .into_iter()
        .map(|ws| ws.expect("every slot filled"))
        .collect())
}

/// The client that never reads. Its receive buffer is made small, as a phone's on a bad link would be,
/// so the server meets a full socket within seconds instead of after megabytes.
/// Connection number `i` (its name, on this project's server).
async fn connect_stalled(args: &Args, i: usize) -> Result<Ws, String> {
    let addr: std::net::SocketAddr = args
        .addr
        .parse()
        .map_err(|e| format!("{}: {e}", args.addr))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .set_recv_buffer_size(4096)
        .map_err(|e| e.to_string())?;
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(url(args, i), MaybeTlsStream::Plain(stream))
        .await
        .map_err(|e| format!("stalled client: {e}"))?;
    if args.target == Target::Groupchat {
        let _welcome = ws.next().await;
    }
    Ok(ws)
}

// ---------------------------------------------------------------------------------------------------
// Fan-out

/// What every receiver records, shared by all receiver tasks (one thread: `Rc<RefCell<_>>`).
struct Tally {
    started: Instant,
    window: (u64, u64),
    latency: Histogram<u64>,
    /// Receipts of messages sent inside the window.
    in_window: u64,
    /// Per receiver, per sender: the next sequence number expected.
    next: Vec<Vec<u64>>,
    /// Receipts of benchmark messages, duplicates included.
    receipts: u64,
    duplicated_or_late: u64,
    gaps: u64,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    text: Option<&'a str>,
}

/// Our message text: `b:{sender}:{seq}:{sent_micros}:{padding}`.
fn parse_payload(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.strip_prefix("b:")?.split(':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((sender, seq, sent))
}

fn payload_of<'a>(target: Target, frame: &'a str) -> Option<&'a str> {
    match target {
        Target::Groupchat => {
            let event: Event<'a> = serde_json::from_str(frame).ok()?;
            (event.kind == "message").then_some(event.text?)
        }
        Target::Reference => frame.split_once(" says: ").map(|(_, text)| text),
    }
}

async fn receive(
    target: Target,
    me: usize,
    mut stream: SplitStream<Ws>,
    tally: Rc<RefCell<Tally>>,
    stop_at: Instant,
) {
    loop {
        let next = tokio::time::timeout_at(stop_at.into(), stream.next()).await;
        let Ok(Some(Ok(Message::Text(frame)))) = next else {
            match next {
                Ok(Some(Ok(_))) => continue,
                _ => return,
            }
        };
        let Some((sender, seq, sent)) = payload_of(target, frame.as_str()).and_then(parse_payload)
        else {
            continue;
        };
        let mut t = tally.borrow_mut();
        t.receipts += 1;
        let now = t.started.elapsed().as_micros() as u64;
        let expected = &mut t.next[me][sender];
        if seq == *expected {
            *expected += 1;
        } else if seq > *expected {
            *expected = seq + 1;
            t.gaps += 1;
        } else {
            t.duplicated_or_late += 1;
        }
        if sent >= t.window.0 && sent < t.window.1 {
            t.in_window += 1;
            let _ = t.latency.record(now.saturating_sub(sent).max(1));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    index: usize,
    pad: usize,
    mut sink: SplitSink<Ws, Message>,
    period: Duration,
    offset: Duration,
    started: Instant,
    stop_at: Instant,
    sent: Rc<RefCell<Vec<u64>>>,
) {
    tokio::time::sleep(offset).await;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seq = 0u64;
    let padding = "x".repeat(pad);
    loop {
        ticks.tick().await;
        if Instant::now() >= stop_at {
            break;
        }
        let now = started.elapsed().as_micros() as u64;
        let text = format!("b:{index}:{seq}:{now}:{padding}");
        if sink.send(Message::Text(text.into())).await.is_err() {
            break;
        }
        seq += 1;
    }
    sent.borrow_mut()[index] = seq;
    // Keep the connection open until the receivers are done.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = sink.close().await;
}

async fn fanout(args: &Args) -> Result<String, String> {
    let senders = args.senders.clamp(1, args.clients);
    let mut sockets = connect_many(args, 0, args.clients).await?;
    // Joins of late connections may still be arriving at early ones: let them settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled = if args.stalled {
        Some(connect_stalled(args, args.clients).await?)
    } else {
        None
    };

    let started = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.duration);
    let drain = Duration::from_secs(2);
    let window_micros = (
        warmup.as_micros() as u64,
        (warmup + window).as_micros() as u64,
    );
    let tally = Rc::new(RefCell::new(Tally {
        started,
        window: window_micros,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        in_window: 0,
        next: vec![vec![0; senders]; args.clients],
        receipts: 0,
        duplicated_or_late: 0,
        gaps: 0,
    }));
    let sent = Rc::new(RefCell::new(vec![0u64; senders]));
    let send_stop = started + warmup + window;
    let receive_stop = send_stop + drain;
    let period = Duration::from_secs_f64(senders as f64 / args.rate);

    let mut tasks = Vec::new();
    for (i, ws) in sockets.drain(..).enumerate() {
        let (sink, stream) = ws.split();
        tasks.push(tokio::task::spawn_local(receive(
            args.target,
            i,
            stream,
            tally.clone(),
            receive_stop,
        )));
        if i < senders {
            let offset = period.mul_f64(i as f64 / senders as f64);
            tasks.push(tokio::task::spawn_local(send(
                i,
                args.pad,
                sink,
                period,
                offset,
                started,
                send_stop,
                sent.clone(),
            )));
        } else {
            // Receivers keep their sending half alive (dropping it would not close, but be tidy).
            tokio::task::spawn_local(async move {
                let _sink = sink;
                tokio::time::sleep_until(receive_stop.into()).await;
            });
        }
    }

    let pid = args.server_pid;
    tokio::time::sleep_until((started + warmup).into()).await;
    let cpu_before = pid.and_then(cpu_ticks);
    let rss_before = pid.and_then(rss_kib);
    tokio::time::sleep_until(send_stop.into()).await;
    let cpu_after = pid.and_then(cpu_ticks);
    let rss_after = pid.and_then(rss_kib);
    for task in tasks {
        let _ = task.await;
    }

    let stalled_end = match stalled {
        Some(ws) => Some(stalled_outcome(ws).await),
        None => None,
    };

    let t = tally.borrow();
    let sent = sent.borrow();
    let expected: u64 = sent.iter().sum::<u64>() * args.clients as u64;
    let unique = t.receipts - t.duplicated_or_late;
    let lost = expected.saturating_sub(unique);
    let per_sec = t.in_window as f64 / window.as_secs_f64();
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if t.in_window > 0 => {
            Some((b - a) as f64 * 1e6 / clock_ticks_per_sec() / t.in_window as f64)
        }
        _ => None,
    };
    let q = |p: f64| t.latency.value_at_quantile(p) as f64 / 1000.0;
    Ok(format!(
        concat!(
            "{{\"label\":{:?},\"target\":\"{:?}\",\"clients\":{},\"senders\":{},\"rate\":{},",
            "\"deliveries_per_sec\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},",
            "\"lost\":{},\"duplicated_or_late\":{},\"out_of_order\":{},\"cpu_us_per_delivery\":{},",
            "\"rss_kib_start\":{},\"rss_kib_end\":{},\"stalled\":{}}}"
        ),
        args.label,
        args.target,
        args.clients,
        senders,
        args.rate,
        per_sec,
        q(0.5),
        q(0.99),
        t.latency.max() as f64 / 1000.0,
        lost,
        t.duplicated_or_late,
        t.gaps,
        cpu_us.map_or("null".into(), |v| format!("{v:.2}")),
        rss_before.map_or("null".into(), |v| v.to_string()),
        rss_after.map_or("null".into(), |v| v.to_string()),
        stalled_end.map_or("null".into(), |s| format!("{s:?}")),
    ))
}

/// How the never-reading client's connection ended, read only now: the close code the server sent,
/// `"open"` if it was never closed, or `"reset"` if it was dropped without a close frame.
async fn stalled_outcome(mut ws: Ws) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Err(_) => return "open".into(),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return format!("closed {}", u16::from(frame.code))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return "reset".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Idle connections

async fn idle(args: &Args) -> Result<String, String> {
    let pid = args.server_pid.ok_or("--mode idle needs --server-pid")?;
    let before = rss_kib(pid).ok_or("cannot read the server's memory")?;
    let sockets = connect_many(args, 0, args.clients).await?;
    // Idle clients still read what the server sends them (joins, pings), like any live client.
    let mut open = 0;
    for ws in sockets {
        open += 1;
        tokio::task::spawn_local(async move {
            let mut ws = ws;
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid).ok_or("cannot read the server's memory")?;
    let per_conn = (after.saturating_sub(before)) as f64 / args.clients as f64;
    Ok(format!(
        "{{\"label\":{:?},\"target\":\"{:?}\",\"clients\":{},\"held\":{},\"rss_kib_before\":{},\"rss_kib_after\":{},\"rss_kib_per_connection\":{:.2}}}",
        args.label, args.target, args.clients, open, before, after, per_conn
    ))
}

// ---------------------------------------------------------------------------------------------------
// Hostile clients

async fn hostile(args: &Args) -> Result<String, String> {
    let pid = args.server_pid.ok_or("--mode hostile needs --server-pid")?;
    if args.target != Target::Groupchat {
        return Err("--mode hostile speaks this project's protocol only".into());
    }
    // The room's history: `--history` messages of `--pad` bytes, each acknowledged (stored) before
    // the next is sent, so the seeder reads as it goes (it follows the room: a seeder that only sent
    // would itself be dropped as too slow).
    let mut seeder = connect_many(args, args.clients + 1, 1)
        .await?
        .pop()
        .ok_or("no seeder")?;
    let text = "x".repeat(args.pad.max(1));
    for i in 0..args.history {
        let frame = serde_json::json!({
            "type": "message", "room": "general", "text": text, "client_id": format!("seed-{i}")
        });
        seeder
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), seeder.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"ack\"") => break,
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"error\"") => {
                    // Sent before its join completed: send it again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    seeder
                        .send(Message::text(frame.to_string()))
                        .await
                        .map_err(|e| format!("seeding: {e}"))?;
                }
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("seeding: {i} acks, then {other:?}")),
            }
        }
    }
    drop(seeder);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid).ok_or("cannot read the server's memory")?;

    let closed = Rc::new(RefCell::new(0usize));
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    for i in 0..args.clients {
        let ws = connect_stalled(args, i).await?;
        let closed = closed.clone();
        tokio::task::spawn_local(async move {
            let (mut sink, _never_read) = ws.split();
            let leave = Message::text(r#"{"type":"leave","room":"general"}"#);
            let join = Message::text(r#"{"type":"join","room":"general","after":0}"#);
            while Instant::now() < end {
                let mut burst = vec![leave.clone(), join.clone()];
                burst.extend((0..8).map(|_| Message::Ping(vec![0u8; 125].into())));
                for message in burst {
                    if sink.send(message).await.is_err() {
                        *closed.borrow_mut() += 1;
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let mut peak = before;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = *closed.borrow();
    let pinned = peak.saturating_sub(before) as f64 / args.clients.max(1) as f64;
    Ok(format!(
        "{{\"label\":{:?},\"target\":\"{:?}\",\"clients\":{},\"history\":{},\"pad\":{},\"rss_kib_before\":{},\"rss_kib_peak\":{},\"pinned_kib_per_hostile\":{:.0},\"hostile_closed\":{}}}",
        args.label, args.target, args.clients, args.history, args.pad, before, peak, pinned, closed
    ))
}

// ---------------------------------------------------------------------------------------------------
// The server's process, from /proc

/// User + system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fields: HashMap<&str, &str> = status.lines().filter_map(|l| l.split_once(':')).collect();
    fields
        .get("VmRSS")?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()
}
