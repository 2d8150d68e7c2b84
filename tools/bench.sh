#!/usr/bin/env bash
# `make bench`: the fan-out benchmark. This server, on one node or two, side by side with two others: the
# reference FastAPI chat of the seed document (bench/reference/app.py), and the floor (examples/floor.rs:
# axum's WebSocket and a tokio broadcast channel, one write per delivery and nothing else). Every server
# process (and PostgreSQL and Redis) is pinned to core 0, the load generator to core 1.
#
# Sides:
#   ours       one node, history in SQLite (the default setup)
#   ours-pg    one node, history in PostgreSQL (no Redis)
#   cluster    two nodes on PostgreSQL + Redis, the clients split between them: every message is committed
#              by its sender's node, delivered to that node's clients, published on Redis, and delivered
#              by the other node to its own
#   floor      examples/floor.rs: what a delivery costs with nothing but the socket write around it
#   reference  the seed's FastAPI chat
# PostgreSQL and Redis are private to the run: initdb into target/bench/pg-*, a free port, PostgreSQL's
# durable defaults (fsync on, synchronous_commit on: each commit waits for the disk, as in production);
# Redis without persistence. Each run starts on an empty database and an empty Redis.
#
# Scenarios, for each side, each on fresh server processes:
#   fanout-20k   1,000 clients in one room, 10 senders, 20 messages/s   (20,000 deliveries/s)
#   fanout-50k   the same at 50 messages/s                             (50,000 deliveries/s)
#   fanout-max   the same at 1,000 messages/s: more than the load generator can take in, on purpose (the
#                servers' ceiling here is the load generator's)
#   padded-50k   fanout-50k with 1 KB messages, over a window twice as long
#   stalled      padded-50k plus one client that never reads (and has a small receive buffer), so its
#                buffers fill within seconds: what does it do to everyone else?
#   idle-5k      5,000 idle connections: server memory per connection
#   held-10k     10,000 idle connections held
#   hostile-20   a room of 150 messages of 60 KB; 20 clients that never read rejoin it asking for all of
#                it, and send pings, for 10 s: the memory one hostile connection pins (ours only)
# BENCH_QUICK=1 shrinks everything to a few-minute smoke run; BENCH_SCENARIOS=fanout-20k,fanout-50k runs
# only those, BENCH_SIDES=ours,cluster only those sides; BENCH_PORT=3500 moves the servers' ports;
# BENCH_PERF=1 also profiles core 0 over each fan-out window (`perf record`, 999 samples a
# second) and says where each side's CPU went (tools/bench_profile.py). Results: target/bench/results.jsonl
#
# The load generator is measured too. On loopback a delivery's cost is mostly the kernel's: the TCP path
# and waking the reader. A load generator that falls behind reads many frames per wake-up, so the
# server's writes find no sleeping reader to wake, and the server looks several times cheaper per
# delivery than it is. Every fan-out result therefore carries the load generator's CPU, the time it waited
# for its core (this machine is shared), and the deliveries it took in per wake-up; the table flags runs
# where it was busy or waiting more than 80 % of the window. It stays one thread on one core: with two
# cores, more threads would only take the servers' core. So the rates stop at 50,000 deliveries a second:
# at 100,000 the floor's and the reference's one write per delivery kept it busy past 85 % (this server
# coalesces a connection's pending frames into one write, so it stayed near 25 % there).
#
# BENCH_BASELINE=/path/to/groupchat adds another side, "baseline": another build of this server (say,
# from the commit before a change), run through every scenario right after ours, so one run on one
# machine gives before and after numbers under the same conditions. The table lists each scenario's sides
# together, with ours compared to the baseline. To make one (any target directory but the site's):
#   git stash   # or check out the commit to compare with
#   CARGO_TARGET_DIR=target/baseline-build cargo build --release --features ssr --bin groupchat
#   git stash pop; BENCH_BASELINE=target/baseline-build/release/groupchat make bench
#
# Everything is built into target/bench-build (BENCH_TARGET_DIR), never target/release: `cargo leptos`
# builds the site's server there with its own settings (the site's name and file hashes the pages load),
# and a plain `cargo build` over it leaves a server whose pages ask for files the site does not have.
set -euo pipefail
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Resolved before leaving the caller's directory; copied once built (below), as the file may be rebuilt
# (or be the site's binary) while this runs.
baseline="${BENCH_BASELINE:-}"
if [ -n "$baseline" ]; then
  if [ ! -x "$baseline" ] || [ -d "$baseline" ]; then
    echo "BENCH_BASELINE=$baseline: not an executable file" >&2
    exit 1
  fi
  baseline="$(cd "$(dirname "$baseline")" && pwd)/$(basename "$baseline")"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Every cargo call below uses this directory, whatever CARGO_TARGET_DIR was.
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-target/bench-build}"
server_bin="$CARGO_TARGET_DIR/release/groupchat"
floor_bin="$CARGO_TARGET_DIR/release/examples/floor"
ours_sides=(ours)
[ -n "$baseline" ] && ours_sides+=(baseline)

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  CLIENTS=200 WINDOW=3 WARMUP=1 IDLE=1000 HELD=2000
else
  CLIENTS=1000 WINDOW=10 WARMUP=2 IDLE=5000 HELD=10000
fi
# The servers' ports, from BENCH_PORT on (3400; another value lets two benchmarks share a machine); a
# second node on NODE_B_PORT. PostgreSQL and Redis take free ones.
OURS_PORT=${BENCH_PORT:-3400}
REF_PORT=$((OURS_PORT + 1))
FLOOR_PORT=$((OURS_PORT + 2))
NODE_B_PORT=$((OURS_PORT + 3))
out=target/bench
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
rm -rf "$out/perf"
if [ "${BENCH_PERF:-0}" = 1 ] && ! perf record -q -o /dev/null -- true 2>/dev/null; then
  echo "BENCH_PERF=1: perf does not work here (installed? kernel.perf_event_paranoid?)" >&2
  exit 1
fi

# Each side holds up to 10,000 sockets: raise the soft descriptor limit to the hard one (20,000 here).
ulimit -n "$(ulimit -Hn)"

step "reference: a venv with FastAPI and uvicorn from PyPI"
venv=bench/reference/.venv
if [ ! -x "$venv/bin/uvicorn" ] || [ bench/reference/requirements.txt -nt "$venv/bin/uvicorn" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/reference/requirements.txt
fi

step "building the load generator, the floor and the server (release, into $CARGO_TARGET_DIR)"
# The load generator is run as the built file, not through `cargo bench`: cargo would check (and on a
# change rebuild) the server before every scenario, on the load generator's core. The server is built
# last: building the bench target rebuilds it with the dev-dependencies' features, and this is the
# server as `cargo build` makes it.
loadgen_bin="$(cargo bench --features ssr --bench loadgen --no-run --message-format=json-render-diagnostics \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')"
cargo build --release --features ssr --example floor
cargo build --release --features ssr --bin groupchat
# What was measured, for the table.
ours_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || ours_rev="$ours_rev+uncommitted changes"
if [ -n "$baseline" ]; then
  cp "$baseline" "$out/baseline-groupchat"
  baseline_desc="$baseline ($(date -ur "$baseline" '+built %Y-%m-%d %H:%M UTC'))"
  baseline="$out/baseline-groupchat"
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for_port() { # $1 = port, $2 = what
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "$2 did not start (nothing on port $1)" >&2
  exit 1
}
# Stops a process we started: SIGTERM (SIGINT for PostgreSQL: its fast shutdown), then SIGKILL after 5 s.
stop_pid() { # $1 = pid, $2 = signal
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill "-$2" "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

# PostgreSQL and Redis, started once (the first time a side needs them) and kept for the whole run.
pg_pid="" pg_dir="" pg_port="" redis_pid="" redis_port=""
pg_bin="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[ -x "$pg_bin/postgres" ] || pg_bin="$(dirname "$(command -v postgres || echo /nonexistent/postgres)")"
start_postgres() {
  [ -n "$pg_pid" ] && return
  step "PostgreSQL ($pg_bin), private to this run"
  [ -x "$pg_bin/initdb" ] || { echo "PostgreSQL is not installed (no initdb; set PG_BIN)" >&2; exit 1; }
  # initdb and postgres refuse to run as root: then as the postgres user, through setpriv, which execs
  # (so the pid we measure and stop is the server's own).
  local as_pg=()
  pg_dir="$(mktemp -d "$PWD/$out/pg-XXXXXX")"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$pg_dir"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  fi
  "${as_pg[@]}" "$pg_bin/initdb" --pgdata="$pg_dir/data" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-sync >"$out/initdb.log" 2>&1
  pg_port="$(free_port)"
  taskset -c 0 "${as_pg[@]}" "$pg_bin/postgres" -D "$pg_dir/data" -p "$pg_port" -k "$pg_dir" \
    -c listen_addresses=127.0.0.1 -c shared_buffers=32MB >"$out/postgres.log" 2>&1 &
  pg_pid=$!
  wait_for_port "$pg_port" PostgreSQL
  until "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; do sleep 0.1; done
}
start_redis() {
  [ -n "$redis_pid" ] && return
  step "Redis, private to this run"
  redis_port="$(free_port)"
  taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$out/redis.log" 2>&1 &
  redis_pid=$!
  wait_for_port "$redis_port" Redis
}
# An empty database (and Redis) for a run: the previous run's history and presence are gone.
fresh_stores() { # $1 = with redis?
  "$pg_bin/dropdb" -h 127.0.0.1 -p "$pg_port" -U postgres --if-exists --force chat
  "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres chat
  if [ "${1:-}" = redis ]; then redis-cli -p "$redis_port" flushall >/dev/null; fi
}

# The side under test: its processes (to stop), and the load generator's --addr and --server-pid.
server_pids=() addrs="" pids=""
stop_server() {
  local pid
  for pid in "${server_pids[@]}"; do stop_pid "$pid" TERM; done
  server_pids=()
}
stop_all() {
  stop_server
  stop_pid "$redis_pid" TERM
  stop_pid "$pg_pid" INT
  [ -n "$pg_dir" ] && rm -rf "$pg_dir"
  return 0
}
trap stop_all EXIT

# One node of ours. Rate limits off: the benchmark's senders are far faster than any person. A fresh data
# directory per run: with SQLite every message is stored (synced) before it is sent out. Only the socket
# is measured: the pages (and the site root) do not matter here.
start_node() { # $1 = name, $2 = port, $3 = binary, then settings (NAME=value)
  local name=$1 port=$2 bin=$3
  shift 3
  rm -rf "$out/data-$name"
  env CHAT_MSG_RATE=1000000 CHAT_MSG_BURST=1000000 CHAT_MAX_CONNECTIONS=20000 DATA_DIR="$out/data-$name" \
    LEPTOS_SITE_ADDR="127.0.0.1:$port" LEPTOS_OUTPUT_NAME=groupchat LEPTOS_SITE_ROOT=target/site \
    RUST_LOG=warn "$@" taskset -c 0 "$bin" >"$out/$name.log" 2>&1 &
  server_pids+=($!)
  wait_for_port "$port" "$name"
}

start_server() { # $1 = side
  stop_server
  local pg redis
  case "$1" in
    ours | baseline)
      local bin=$server_bin
      [ "$1" = baseline ] && bin=$baseline
      start_node "$1" "$OURS_PORT" "$bin"
      addrs="127.0.0.1:$OURS_PORT" pids="$1=${server_pids[0]}"
      ;;
    ours-pg)
      start_postgres; fresh_stores
      pg="postgres://postgres@127.0.0.1:$pg_port/chat"
      start_node ours-pg "$OURS_PORT" "$server_bin" DATABASE_URL="$pg"
      addrs="127.0.0.1:$OURS_PORT" pids="node=${server_pids[0]},postgres=$pg_pid"
      ;;
    cluster)
      start_postgres; start_redis; fresh_stores redis
      pg="postgres://postgres@127.0.0.1:$pg_port/chat" redis="redis://127.0.0.1:$redis_port/"
      # One after the other: the first creates the schema and the session key.
      start_node node-a "$OURS_PORT" "$server_bin" DATABASE_URL="$pg" REDIS_URL="$redis" CHAT_NODE_ID=a
      start_node node-b "$NODE_B_PORT" "$server_bin" DATABASE_URL="$pg" REDIS_URL="$redis" CHAT_NODE_ID=b
      addrs="127.0.0.1:$OURS_PORT,127.0.0.1:$NODE_B_PORT"
      pids="a=${server_pids[0]},b=${server_pids[1]},postgres=$pg_pid,redis=$redis_pid"
      ;;
    floor)
      taskset -c 0 "$floor_bin" "127.0.0.1:$FLOOR_PORT" >"$out/floor.log" 2>&1 &
      server_pids+=($!)
      wait_for_port "$FLOOR_PORT" floor
      addrs="127.0.0.1:$FLOOR_PORT" pids="floor=${server_pids[0]}"
      ;;
    reference)
      (cd bench/reference && exec taskset -c 0 .venv/bin/uvicorn app:app --host 127.0.0.1 \
        --port "$REF_PORT" --log-level warning) >"$out/reference.log" 2>&1 &
      server_pids+=($!)
      wait_for_port "$REF_PORT" reference
      addrs="127.0.0.1:$REF_PORT" pids="reference=${server_pids[0]}"
      ;;
  esac
}

loadgen() { # $1 = side, $2 = label, then loadgen flags
  local side=$1 label=$2
  shift 2
  local target=groupchat
  if [ "$side" = reference ] || [ "$side" = floor ]; then target=reference; fi
  step "$side: $label"
  # BENCH_PERF=1: the servers' core profiled over the window (fan-out runs), summed up after the table.
  local profile=()
  if [ "${BENCH_PERF:-0}" = 1 ] && [[ " $* " != *" --mode "* ]]; then
    mkdir -p "$out/perf"
    profile=(--perf "$out/perf/$side-$label.data" --perf-cpus 0)
  fi
  # Bounded: a scenario that hangs (the reference's stalled room) is cut off, and says so. A run that
  # fails is tried once more on a fresh server (the reference has been seen refusing its first
  # connections right after a restart).
  local attempt
  for attempt in 1 2; do
    if timeout 300 taskset -c 1 "$loadgen_bin" --target "$target" --addr "$addrs" --server-pid "$pids" \
      --label "$side $label" "${profile[@]}" "$@" 2>"$out/loadgen.err" | grep '^RESULT ' | sed 's/^RESULT //' \
      | tee -a "$results"; then
      return
    fi
    [ "$attempt" = 1 ] && sleep 2 && start_server "$side"
  done
  echo "{\"label\":\"$side $label\",\"failed\":$( (grep -h '^loadgen:' "$out/loadgen.err" || echo timed out) | tail -1 | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}" | tee -a "$results"
}

# Scenario by scenario, every side in turn: the runs compared are minutes apart, not the whole benchmark.
wanted() { [ -z "${BENCH_SCENARIOS:-}" ] || [[ ",$BENCH_SCENARIOS," == *",$1,"* ]]; }
wanted_side() { [ -z "${BENCH_SIDES:-}" ] || [[ ",$BENCH_SIDES," == *",$1,"* ]]; }
scenario() { # $1 = label, $2 = sides (space-separated), then loadgen flags
  local label=$1 sides=$2 side
  shift 2
  wanted "$label" || return 0
  for side in $sides; do
    wanted_side "$side" || continue
    start_server "$side"; loadgen "$side" "$label" "$@"
  done
}
fan=(--clients "$CLIENTS" --senders 10 --warmup "$WARMUP" --duration "$WINDOW")
long=(--clients "$CLIENTS" --senders 10 --warmup "$WARMUP" --duration $((WINDOW * 2)) --rate 50 --pad 1000)
everyone="${ours_sides[*]} ours-pg cluster floor reference"
single="${ours_sides[*]} floor reference"
scenario fanout-20k "$everyone" "${fan[@]}" --rate 20
scenario fanout-50k "$everyone" "${fan[@]}" --rate 50
scenario fanout-max "$everyone" "${fan[@]}" --rate 1000
scenario padded-50k "$single" "${long[@]}"
scenario stalled "$single" "${long[@]}" --stalled
# Memory per connection: the floor is left out (axum's WebSocket keeps 128 KiB of buffers per socket,
# which says nothing about a chat server).
scenario idle-5k "${ours_sides[*]} reference" --mode idle --clients "$IDLE"
scenario held-10k "${ours_sides[*]} reference" --mode idle --clients "$HELD"
scenario hostile-20 "${ours_sides[*]}" --mode hostile --clients 20 --history 150 --pad 60000 --duration "$WINDOW"
stop_all

step "results"
python3 - "$results" "$ours_rev" "${baseline_desc:-}" <<'PY'
import json, sys
path, ours_rev, baseline_desc = sys.argv[1:4]
rows = [json.loads(line) for line in open(path) if line.strip()]
print(f"ours: {ours_rev}" + (f"; baseline: {baseline_desc}" if baseline_desc else ""))
# Each scenario's sides together, in the order they ran.
scenarios, by = [], {}
for r in rows:
    side, _, scenario = r["label"].partition(" ")
    if scenario not in by:
        scenarios.append(scenario)
        by[scenario] = {}
    by[scenario][side] = r
def cell(r, k, fmt="{}"):
    v = r.get(k)
    return "-" if v is None else fmt.format(v)
def versus(ours, base):
    """Ours against the baseline: the change in latency, CPU and memory, where both have them."""
    changes = []
    for key, name in [("deliveries_per_sec", "deliv/s"), ("p50_ms", "p50"), ("p99_ms", "p99"),
                      ("cpu_us_per_delivery", "cpu"), ("rss_kib_per_connection", "KiB/conn")]:
        a, b = ours.get(key), base.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
            changes.append(f"{name} {100 * (a - b) / b:+.0f}%")
    return "vs baseline: " + ", ".join(changes) if changes else ""
def headroom(r):
    """The load generator's state over the window: a run where it was busy, or kept off its core, for
    more than 80 % of it measured the load generator at least as much as the server."""
    cpu, wait = r.get("loadgen_cpu_pct"), r.get("loadgen_wait_pct")
    if cpu is None:
        return ""
    if cpu > 80:
        return f"LOADGEN SATURATED ({cpu}% of its core)"
    if cpu + (wait or 0) > 80:
        return f"LOADGEN STARVED ({cpu}% busy + {wait}% waiting for its core)"
    return ""
def split(r):
    """Where the server-side CPU went, for sides of several processes."""
    parts = r.get("cpu_us_by_process") or {}
    if len(parts) < 2:
        return ""
    return "cpu " + " + ".join(f"{name} {us:.2f}" for name, us in parts.items() if us is not None)
print("lg cpu/wait: the load generator's CPU and its wait for its core, % of the window; "
      "deliv/wake: deliveries it read per wake-up; srv wait: the servers' wait for their core")
blank = f"{'':>10}{'':>9}{'':>9}{'':>9}{'':>10}{'':>6}{'':>6}{'':>14}"
print(f"{'scenario':<26}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>10}{'dup':>6}{'ooo':>6}"
      f"{'cpu us/deliv':>14}{'rss KiB':>10}{'lg cpu/wait':>13}{'deliv/wake':>11}{'srv wait':>9}  notes")
for scenario in scenarios:
    sides = by[scenario]
    for side, r in sides.items():
        notes = []
        if side == "ours" and "baseline" in sides and "failed" not in r and "failed" not in sides["baseline"]:
            notes.append(versus(r, sides["baseline"]))
        if "failed" in r:
            print(f"{r['label']:<26} FAILED: {r['failed'][-120:]!r}")
        elif "pinned_kib_per_hostile" in r:
            print(f"{r['label']:<26}{blank}{r['rss_kib_peak']:>10}{'':>13}{'':>11}{'':>9}  "
                  f"{r['clients']} hostile clients: peak +{r['rss_kib_peak'] - r['rss_kib_before']} KiB, "
                  f"{r['pinned_kib_per_hostile']:.0f} KiB each; {r['hostile_closed']} closed by the server")
        elif "rss_kib_per_connection" in r:
            notes.insert(0, f"{r['held']} held, {r['rss_kib_per_connection']:.2f} KiB per connection")
            print(f"{r['label']:<26}{blank}{r['rss_kib_after']:>10}{'':>13}{'':>11}{'':>9}  "
                  + "; ".join(n for n in notes if n))
        else:
            notes[:0] = [headroom(r), split(r)]
            if r.get("closed_by_server"):
                notes.append(f"{r['closed_by_server']} clients closed by the server")
            if r.get("lost") and len(r.get("lost_by_server") or []) > 1:
                notes.append("lost by node: " + ", ".join(str(n) for n in r["lost_by_server"]))
            if r.get("server_errors"):
                notes.append(f"{r['server_errors']} error events, the first: {r['first_server_error'][:100]}")
            if r.get("stalled"):
                notes.insert(0, f"stalled client: {r['stalled']}")
            lg = f"{cell(r, 'loadgen_cpu_pct')}/{cell(r, 'loadgen_wait_pct')}%"
            print(f"{r['label']:<26}{cell(r,'deliveries_per_sec','{:.0f}'):>10}{cell(r,'p50_ms','{:.1f}'):>9}"
                  f"{cell(r,'p99_ms','{:.1f}'):>9}{cell(r,'max_ms','{:.1f}'):>9}{cell(r,'lost'):>10}"
                  f"{cell(r,'duplicated_or_late'):>6}{cell(r,'out_of_order'):>6}"
                  f"{cell(r,'cpu_us_per_delivery','{:.2f}'):>14}{cell(r,'rss_kib_end'):>10}{lg:>13}"
                  f"{cell(r,'deliveries_per_loadgen_wakeup','{:.1f}'):>11}{cell(r,'server_wait_pct','{}%'):>9}  "
                  + "; ".join(n for n in notes if n))
PY
if [ "${BENCH_PERF:-0}" = 1 ]; then
  step "where the servers' CPU went (perf, core 0, over each window)"
  for data in "$out"/perf/*.data; do
    [ -e "$data" ] || continue
    echo "$(basename "$data" .data):"
    python3 tools/bench_profile.py "$data" || echo "  (perf script failed)"
  done
fi
