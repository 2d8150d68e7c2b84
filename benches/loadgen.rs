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
//!   server's CPU time over the window is divided by the deliveries made in it: every process named
//!   there, each with everything it started (PostgreSQL's backends), in total and one by one.
//!   `--stalled` adds one client that connects and then never reads.
//! - `idle`: N connections that send nothing; the server's resident memory before and after, per
//!   connection.
//! - `hostile`: one client fills the room with `--history` messages of `--pad` bytes; then N clients that
//!   never read (small receive buffers) leave and rejoin it with `after: 0` over and over, each time
//!   asking for a replay of everything, and send WebSocket pings, for `--duration` seconds. The server's
//!   peak resident memory above where it started, per hostile client, is what one such connection can
//!   pin; the result also says how many of them the server closed.
//!
//! `--addr` may name several servers (the nodes of a cluster): client `i` connects to the `i % n`th, so
//! the clients, and the senders among them, are spread evenly.
//!
//! **Its own CPU.** Every fan-out result says how busy the load generator itself was over the window
//! (`loadgen_cpu_pct`, of one core), how long it was ready to run but kept off its core by other work
//! (`loadgen_wait_pct`: the machine may be shared), and how many deliveries it read per wake-up
//! (`deliveries_per_loadgen_wakeup`). Past about 80 % busy or waiting it is the bottleneck, not the
//! server: it reads late, each read finds many frames waiting, and the server's writes find no sleeping
//! reader to wake, so the server looks cheaper per delivery than it is (and latencies grow with the load
//! generator's queue, not the server's). `make bench` flags such runs. The servers' own wait for their
//! core is reported too (`server_wait_pct`).
//!
//! Single-threaded on purpose: the script pins it to the one core the servers do not use (this project's
//! machine has two), where more threads would only take turns. On a machine with cores to spare, run
//! several load generators on separate cores instead, each with its share of `--clients`.

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
    /// Server addresses (comma-separated: the nodes of a cluster, clients spread over them); loopback only.
    #[arg(long, default_value = "127.0.0.1:3000", value_delimiter = ',')]
    addr: Vec<String>,
    /// The server's processes, for their CPU time and memory (from /proc): `pid` or `name=pid`,
    /// comma-separated. Each counts with every process it started. Memory is the first one's.
    #[arg(long, value_delimiter = ',', value_parser = process)]
    server_pid: Vec<(String, u32)>,
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
    /// Profile the servers' cores over the measured window (`perf record -a -g` into this file).
    #[arg(long)]
    perf: Option<std::path::PathBuf>,
    /// The cores `--perf` samples: the ones the servers are pinned to.
    #[arg(long, default_value = "0")]
    perf_cpus: String,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `--server-pid`'s values: `name=pid`, or a bare `pid` (named `server`).
fn process(value: &str) -> Result<(String, u32), String> {
    let (name, pid) = value.split_once('=').unwrap_or(("server", value));
    let pid = pid.parse().map_err(|e| format!("{pid}: {e}"))?;
    Ok((name.to_string(), pid))
}

fn main() {
    let args = Args::parse();
    assert!(
        args.addr
            .iter()
            .all(|a| a.starts_with("127.") || a.starts_with("localhost")),
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

/// The server client `i` connects to.
fn addr(args: &Args, i: usize) -> &str {
    &args.addr[i % args.addr.len()]
}

fn url(args: &Args, i: usize) -> String {
    let addr = addr(args, i);
    match args.target {
        Target::Groupchat => format!("ws://{addr}/ws?name=bench-{i}"),
        Target::Reference => format!("ws://{addr}/ws/{i}"),
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
/// so the server meets a full socket within seconds instead of after megabytes. Connection number `i`
/// (its name, on this project's server: names are unique).
async fn connect_stalled(args: &Args, i: usize) -> Result<Ws, String> {
    let addr: std::net::SocketAddr = addr(args, i)
        .parse()
        .map_err(|e| format!("{}: {e}", addr(args, i)))?;
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
    /// Per receiver, its receipts of benchmark messages without duplicates: what each server (node)
    /// failed to deliver to its own clients.
    unique_by_receiver: Vec<u64>,
    /// Receivers whose connection ended (closed by the server, or reset) before the end of the run.
    closed_early: u64,
    /// Error events received (a send refused, say: then every client misses that message, and the
    /// sender, unlike the page, does not send it again), and the first of them.
    errors: u64,
    first_error: Option<String>,
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
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                    tally.borrow_mut().closed_early += 1;
                    return;
                }
                Ok(Some(Ok(_))) => continue,
                Err(_) => return,
            }
        };
        let Some((sender, seq, sent)) = payload_of(target, frame.as_str()).and_then(parse_payload)
        else {
            if target == Target::Groupchat && frame.contains("\"type\":\"error\"") {
                let mut t = tally.borrow_mut();
                t.errors += 1;
                t.first_error.get_or_insert_with(|| frame.to_string());
            }
            continue;
        };
        let mut t = tally.borrow_mut();
        t.receipts += 1;
        let now = t.started.elapsed().as_micros() as u64;
        let expected = &mut t.next[me][sender];
        if seq == *expected {
            *expected += 1;
            t.unique_by_receiver[me] += 1;
        } else if seq > *expected {
            *expected = seq + 1;
            t.gaps += 1;
            t.unique_by_receiver[me] += 1;
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
        unique_by_receiver: vec![0; args.clients],
        closed_early: 0,
        errors: 0,
        first_error: None,
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

    let pids: Vec<u32> = args.server_pid.iter().map(|(_, pid)| *pid).collect();
    tokio::time::sleep_until((started + warmup).into()).await;
    let profile = args
        .perf
        .as_deref()
        .map(|out| Profile::start(out, &args.perf_cpus, &args.server_pid))
        .transpose()?;
    let cpu_before = CpuSample::take(&pids);
    let rss_before = pids.first().copied().and_then(rss_kib);
    tokio::time::sleep_until(send_stop.into()).await;
    let cpu_after = CpuSample::take(&pids);
    if let Some(profile) = profile {
        profile.stop()?;
    }
    let rss_after = pids.first().copied().and_then(rss_kib);
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
    // The same, client by client, summed per server: which node's clients missed what.
    let sent_total: u64 = sent.iter().sum();
    let mut lost_by_server = vec![0u64; args.addr.len()];
    for (i, received) in t.unique_by_receiver.iter().enumerate() {
        lost_by_server[i % args.addr.len()] += sent_total.saturating_sub(*received);
    }
    let per_sec = t.in_window as f64 / window.as_secs_f64();
    // Over the window: the servers' CPU per delivery, each process's and all together (none if any of
    // them is missing), and how long they waited for their core; the load generator's own CPU, its wait
    // for its core, and how many deliveries it took in per wake-up, each in percent of the window.
    let elapsed = (cpu_after.at - cpu_before.at).as_secs_f64();
    let pct_of_window = |ns: u64| ns as f64 / 1e9 / elapsed * 100.0;
    let per_delivery = |ticks: u64| ticks as f64 * 1e6 / clock_ticks_per_sec() / t.in_window as f64;
    let servers: Vec<Option<Usage>> = cpu_before
        .servers
        .iter()
        .zip(&cpu_after.servers)
        .map(|(a, b)| Some((*b)? - (*a)?))
        .collect();
    let server_total: Option<Usage> = if servers.is_empty() {
        None
    } else {
        servers
            .iter()
            .try_fold(Usage::default(), |sum, u| Some(sum + (*u)?))
    };
    let cpu_us = server_total
        .filter(|_| t.in_window > 0)
        .map(|u| per_delivery(u.ticks));
    let server_wait_pct = server_total.map(|u| pct_of_window(u.waiting_ns));
    let cpu_by_process: serde_json::Map<String, serde_json::Value> = args
        .server_pid
        .iter()
        .zip(&servers)
        .map(|((name, _), usage)| {
            let us = usage
                .filter(|_| t.in_window > 0)
                .map(|u| (per_delivery(u.ticks) * 100.0).round() / 100.0);
            (name.clone(), us.into())
        })
        .collect();
    let own = match (cpu_before.own, cpu_after.own) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let loadgen_cpu_pct = own.map(|u| u.ticks as f64 / clock_ticks_per_sec() / elapsed * 100.0);
    let loadgen_wait_pct = own.map(|u| pct_of_window(u.waiting_ns));
    let deliveries_per_wakeup =
        own.map(|u| t.in_window as f64 / window.as_secs_f64() * elapsed / u.sleeps.max(1) as f64);
    let q = |p: f64| t.latency.value_at_quantile(p) as f64 / 1000.0;
    Ok(format!(
        concat!(
            "{{\"label\":{:?},\"target\":\"{:?}\",\"clients\":{},\"senders\":{},\"rate\":{},",
            "\"deliveries_per_sec\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},",
            "\"lost\":{},\"duplicated_or_late\":{},\"out_of_order\":{},\"cpu_us_per_delivery\":{},",
            "\"cpu_us_by_process\":{},\"server_wait_pct\":{},\"loadgen_cpu_pct\":{},",
            "\"loadgen_wait_pct\":{},\"deliveries_per_loadgen_wakeup\":{},",
            "\"rss_kib_start\":{},\"rss_kib_end\":{},\"stalled\":{},",
            "\"server_errors\":{},\"first_server_error\":{},\"closed_by_server\":{},",
            "\"lost_by_server\":{:?}}}"
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
        serde_json::Value::Object(cpu_by_process),
        server_wait_pct.map_or("null".into(), |v| format!("{v:.0}")),
        loadgen_cpu_pct.map_or("null".into(), |v| format!("{v:.0}")),
        loadgen_wait_pct.map_or("null".into(), |v| format!("{v:.0}")),
        deliveries_per_wakeup.map_or("null".into(), |v| format!("{v:.1}")),
        rss_before.map_or("null".into(), |v| v.to_string()),
        rss_after.map_or("null".into(), |v| v.to_string()),
        stalled_end.map_or("null".into(), |s| format!("{s:?}")),
        t.errors,
        serde_json::Value::from(t.first_error.clone()),
        t.closed_early,
        lost_by_server,
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
    let pid = args
        .server_pid
        .first()
        .map(|(_, pid)| *pid)
        .ok_or("--mode idle needs --server-pid")?;
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
    let pid = args
        .server_pid
        .first()
        .map(|(_, pid)| *pid)
        .ok_or("--mode hostile needs --server-pid")?;
    if args.target != Target::Groupchat {
        return Err("--mode hostile speaks this project's protocol only".into());
    }
    // The room's history: `--history` messages of `--pad` bytes, each acknowledged (stored).
    let mut seeder = connect_many(args, args.clients + 1, 1)
        .await?
        .pop()
        .ok_or("no seeder")?;
    // The welcome comes before the seeder is in `general`: a message sent before its `joined` would be
    // refused (`not_joined`).
    loop {
        match tokio::time::timeout(Duration::from_secs(30), seeder.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"joined\"") => break,
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("seeding: no joined ({other:?})")),
        }
    }
    let text = "x".repeat(args.pad.max(1));
    // One message at a time, reading until its ack: the seeder is in the room too, so every message
    // comes back to it, and a seeder that sent all of them before reading would hold megabytes unread
    // and be closed as a slow consumer (1013) before the room was full.
    for i in 0..args.history {
        let frame = serde_json::json!({
            "type": "message", "room": "general", "text": text, "client_id": format!("seed-{i}")
        });
        seeder
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("seeding: {e}"))?;
        // One deadline for the ack, whatever else comes meanwhile (the server's pings keep coming).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline.into(), seeder.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"ack\"") => break,
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"error\"") => {
                    return Err(format!("seeding: {i} acks, then {t}"))
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
// Profiling the servers' cores

/// `perf record` sampling every process on the servers' cores, call graphs included, for the window.
struct Profile(std::process::Child);

impl Profile {
    /// Also writes, beside `out` (as `.procs`), every server process as `name pid` lines, descendants
    /// included, so that `tools/bench_profile.py` can tell whose samples are whose.
    fn start(
        out: &std::path::Path,
        cpus: &str,
        servers: &[(String, u32)],
    ) -> Result<Profile, String> {
        let roots: Vec<u32> = servers.iter().map(|(_, pid)| *pid).collect();
        let mut procs = String::new();
        for ((name, _), tree) in servers.iter().zip(process_trees(&roots)) {
            for pid in tree {
                procs.push_str(&format!("{name} {pid}\n"));
            }
        }
        let procs_file = out.with_extension("procs");
        std::fs::write(&procs_file, procs).map_err(|e| format!("{}: {e}", procs_file.display()))?;
        let child = std::process::Command::new("perf")
            .args([
                "record", "--quiet", "-a", "-g", "-F", "999", "-C", cpus, "-o",
            ])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("perf record: {e}"))?;
        Ok(Profile(child))
    }

    /// Stops the recording as Ctrl-C would (perf then writes its file out), and waits for it: it runs
    /// on our core, after the window.
    fn stop(mut self) -> Result<(), String> {
        let pid = libc::pid_t::try_from(self.0.id()).map_err(|e| e.to_string())?;
        // SAFETY: signalling our own child, which has not been waited for yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = self.0.wait().map_err(|e| format!("perf record: {e}"))?;
        // perf exits with the signal's status when interrupted; only a failure to start says more.
        if status.code().is_some_and(|c| c != 0 && c != 130) {
            return Err(format!("perf record: {status}"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The servers' processes and our own, from /proc

/// What the scheduler has counted so far, for the load generator itself and for each server process
/// with everything it started (none for a process that is gone).
struct CpuSample {
    at: Instant,
    own: Option<Usage>,
    servers: Vec<Option<Usage>>,
}

impl CpuSample {
    fn take(servers: &[u32]) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            own: usage(std::process::id()),
            servers: tree_usage(servers),
        }
    }
}

/// A process's counters, summed over its threads.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// User + system CPU time, its own and its waited-for children's, in clock ticks.
    ticks: u64,
    /// Nanoseconds its threads were ready to run but kept waiting for a core by other work: on a shared
    /// machine a process reads late this way just as if it were busy itself, and its CPU time alone would
    /// not show it.
    waiting_ns: u64,
    /// Times its threads went to sleep (voluntary context switches): for the load generator, how often it
    /// had read everything there was, so that the server's next write had a reader to wake.
    sleeps: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, earlier: Usage) -> Usage {
        Usage {
            ticks: self.ticks.saturating_sub(earlier.ticks),
            waiting_ns: self.waiting_ns.saturating_sub(earlier.waiting_ns),
            sleeps: self.sleeps.saturating_sub(earlier.sleeps),
        }
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            ticks: self.ticks + other.ticks,
            waiting_ns: self.waiting_ns + other.waiting_ns,
            sleeps: self.sleeps + other.sleeps,
        }
    }
}

/// `pid`'s parent, from `/proc/{pid}/stat`.
fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.first()?.parse().ok()
}

/// The fields of `/proc/{pid}/stat` from the fourth (ppid) on.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 2..];
    Some(
        after_name
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect(),
    )
}

fn usage(pid: u32) -> Option<Usage> {
    let fields = stat_fields(pid)?;
    // Fields 14 to 17: utime, stime, cutime, cstime.
    let field = |n: usize| fields.get(n - 4)?.parse::<u64>().ok();
    let mut usage = Usage {
        ticks: field(14)? + field(15)? + field(16)? + field(17)?,
        ..Usage::default()
    };
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may end between listing and reading: it then counts for nothing.
        if let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) {
            let waiting = schedstat
                .split_whitespace()
                .nth(1)
                .and_then(|w| w.parse().ok());
            usage.waiting_ns += waiting.unwrap_or(0);
        }
        if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
            let sleeps = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok());
            usage.sleeps += sleeps.unwrap_or(0);
        }
    }
    Some(usage)
}

/// Each of `roots` together with all its descendants, counted as one: a server may be several processes
/// (PostgreSQL forks one per connection). A descendant that exits and is reaped moves into its parent's
/// `cutime` and `cstime`, so nothing is lost; what it had used before the window is then counted in it
/// too (a small overcount, for processes that live shorter than a window).
fn tree_usage(roots: &[u32]) -> Vec<Option<Usage>> {
    process_trees(roots)
        .into_iter()
        .map(|tree| {
            let (root, descendants) = tree.split_first()?;
            let own = usage(*root)?;
            Some(
                descendants
                    .iter()
                    .fold(own, |total, pid| total + usage(*pid).unwrap_or_default()),
            )
        })
        .collect()
}

/// Each of `roots` (first) and its descendants, from one pass over /proc; empty for a root that is gone.
fn process_trees(roots: &[u32]) -> Vec<Vec<u32>> {
    if roots.is_empty() {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(parent) = parent(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    roots
        .iter()
        .map(|root| {
            if parent(*root).is_none() {
                return Vec::new();
            }
            let mut tree = vec![*root];
            let mut next = 0;
            while let Some(pid) = tree.get(next).copied() {
                tree.extend(children.get(&pid).into_iter().flatten());
                next += 1;
            }
            tree
        })
        .collect()
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
