#!/usr/bin/env bash
# `make bench`: the fan-out benchmark, this server side by side with the reference FastAPI chat of the
# seed document (bench/reference/app.py), each pinned to core 0 with the load generator on core 1.
#
# Scenarios, for each server, each on a fresh server process:
#   fanout-20k   1,000 clients in one room, 10 senders, 20 messages/s   (20,000 deliveries/s)
#   fanout-100k  the same at 100 messages/s                            (100,000 deliveries/s)
#   fanout-max   the same at 1,000 messages/s: more than the load generator can take in
#   padded-100k  fanout-100k with 1 KB messages, over a window twice as long
#   stalled      padded-100k plus one client that never reads (and has a small receive buffer), so its
#                buffers fill within seconds: what does it do to everyone else?
#   idle-5k      5,000 idle connections: server memory per connection
#   held-10k     10,000 idle connections held
#   hostile-20   a room of 150 messages of 60 KB; 20 clients that never read rejoin it asking for all of
#                it, and send pings, for 10 s: the memory one hostile connection pins (not the reference,
#                which has neither history nor joins)
# BENCH_QUICK=1 shrinks everything to a one-minute smoke run; BENCH_ONLY="fanout-20k idle-5k" runs only
# those scenarios; BENCH_NO_REFERENCE=1 leaves the reference out. Results: target/bench/results.jsonl
#
# BENCH_BASELINE=/path/to/groupchat adds a third side, "baseline": another build of this server (say,
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

# Every cargo call below (the builds, and each scenario's `cargo bench` run of the load generator, which
# would otherwise rebuild the server binary too) uses this directory, whatever CARGO_TARGET_DIR was.
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-target/bench-build}"
server_bin="$CARGO_TARGET_DIR/release/groupchat"
sides=(ours)
[ -n "$baseline" ] && sides+=(baseline)
[ "${BENCH_NO_REFERENCE:-0}" = 1 ] || sides+=(reference)

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  CLIENTS=200 WINDOW=3 WARMUP=1 IDLE=1000 HELD=2000
else
  CLIENTS=1000 WINDOW=10 WARMUP=2 IDLE=5000 HELD=10000
fi
OURS_PORT=${BENCH_PORT:-3400}
REF_PORT=$((OURS_PORT + 1))
out=target/bench
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

# Each side holds up to 10,000 sockets: raise the soft descriptor limit to the hard one (20,000 here).
ulimit -n "$(ulimit -Hn)"

step "reference: a venv with FastAPI and uvicorn from PyPI"
venv=bench/reference/.venv
if [ ! -x "$venv/bin/uvicorn" ] || [ bench/reference/requirements.txt -nt "$venv/bin/uvicorn" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/reference/requirements.txt
fi

step "building the server and the load generator (release, into $CARGO_TARGET_DIR)"
cargo build --release --features ssr --bin groupchat
cargo bench --features ssr --bench loadgen --no-run
# What was measured, for the table.
ours_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || ours_rev="$ours_rev+uncommitted changes"
if [ -n "$baseline" ]; then
  cp "$baseline" "$out/baseline-groupchat"
  baseline_desc="$baseline ($(date -ur "$baseline" '+built %Y-%m-%d %H:%M UTC'))"
  baseline="$out/baseline-groupchat"
fi

server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap stop_server EXIT

start_server() { # $1 = ours | baseline | reference
  stop_server
  if [ "$1" = ours ] || [ "$1" = baseline ]; then
    local bin=$server_bin
    [ "$1" = baseline ] && bin=$baseline
    # Rate limits off: the benchmark's senders are far faster than any person.
    # A fresh data directory per run: every message is stored (SQLite, synced) before it is sent out.
    # Only the socket is measured: the pages (and the site root) do not matter here.
    rm -rf "$out/data"
    CHAT_MSG_RATE=1000000 CHAT_MSG_BURST=1000000 CHAT_MAX_CONNECTIONS=20000 DATA_DIR="$out/data" \
      LEPTOS_SITE_ADDR="127.0.0.1:$OURS_PORT" LEPTOS_OUTPUT_NAME=groupchat LEPTOS_SITE_ROOT=target/site \
      RUST_LOG=warn taskset -c 0 "$bin" >"$out/$1.log" 2>&1 &
    server_pid=$!
    port=$OURS_PORT
  else
    (cd bench/reference && exec taskset -c 0 .venv/bin/uvicorn app:app --host 127.0.0.1 \
      --port "$REF_PORT" --log-level warning) >"$out/reference.log" 2>&1 &
    server_pid=$!
    port=$REF_PORT
  fi
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "server $1 did not start" >&2
  exit 1
}

loadgen() { # $1 = ours | baseline | reference, $2 = label, then loadgen flags
  local side=$1 label=$2
  shift 2
  local target=groupchat port=$OURS_PORT
  if [ "$side" = reference ]; then target=reference port=$REF_PORT; fi
  step "$side: $label"
  # Bounded: a scenario that hangs (the reference's stalled room) is cut off, and says so. A run that
  # fails is tried once more on a fresh server (the reference has been seen refusing its first
  # connections right after a restart).
  local attempt
  for attempt in 1 2; do
    if timeout 300 taskset -c 1 cargo bench -q --features ssr --bench loadgen -- \
      --target "$target" --addr "127.0.0.1:$port" --server-pid "$server_pid" --label "$side $label" "$@" \
      2>"$out/loadgen.err" | grep '^RESULT ' | sed 's/^RESULT //' | tee -a "$results"; then
      return
    fi
    [ "$attempt" = 1 ] && sleep 2 && start_server "$side"
  done
  if true; then
    echo "{\"label\":\"$side $label\",\"failed\":$( (grep -h '^loadgen:' "$out/loadgen.err" || echo timed out) | tail -1 | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')}" | tee -a "$results"
  fi
}

# Scenario by scenario, every side in turn: the runs compared are minutes apart, not the whole benchmark.
fan=(--clients "$CLIENTS" --senders 10 --warmup "$WARMUP" --duration "$WINDOW")
long=(--clients "$CLIENTS" --senders 10 --warmup "$WARMUP" --duration $((WINDOW * 2)) --rate 100 --pad 1000)
scenario() { # $1 = label, then loadgen flags
  local side
  # BENCH_ONLY="fanout-20k idle-5k": only those scenarios.
  if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $1 "* ]]; then return; fi
  for side in "${sides[@]}"; do
    start_server "$side"; loadgen "$side" "$@"
  done
}
scenario fanout-20k "${fan[@]}" --rate 20
scenario fanout-100k "${fan[@]}" --rate 100
scenario fanout-max "${fan[@]}" --rate 1000
scenario padded-100k "${long[@]}"
scenario stalled "${long[@]}" --stalled
scenario idle-5k --mode idle --clients "$IDLE"
scenario held-10k --mode idle --clients "$HELD"
for side in "${sides[@]}"; do
  [ "$side" = reference ] && continue
  if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" hostile-20 "* ]]; then break; fi
  start_server "$side"; loadgen "$side" hostile-20 --mode hostile --clients 20 --history 150 --pad 60000 --duration "$WINDOW"
done
stop_server

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
print(f"{'scenario':<24}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>10}{'dup':>6}{'ooo':>6}{'cpu us/deliv':>14}{'rss KiB':>10}  notes")
for scenario in scenarios:
    sides = by[scenario]
    for side, r in sides.items():
        notes = []
        if side == "ours" and "baseline" in sides and "failed" not in r and "failed" not in sides["baseline"]:
            notes.append(versus(r, sides["baseline"]))
        if "failed" in r:
            print(f"{r['label']:<24} FAILED: {r['failed'][-120:]!r}")
        elif "pinned_kib_per_hostile" in r:
            print(f"{r['label']:<24}{'':>10}{'':>9}{'':>9}{'':>9}{'':>10}{'':>6}{'':>6}{'':>14}{r['rss_kib_peak']:>10}  "
                  f"{r['clients']} hostile clients: peak +{r['rss_kib_peak'] - r['rss_kib_before']} KiB, "
                  f"{r['pinned_kib_per_hostile']:.0f} KiB each; {r['hostile_closed']} closed by the server")
        elif "rss_kib_per_connection" in r:
            notes.insert(0, f"{r['held']} held, {r['rss_kib_per_connection']:.2f} KiB per connection")
            print(f"{r['label']:<24}{'':>10}{'':>9}{'':>9}{'':>9}{'':>10}{'':>6}{'':>6}{'':>14}{r['rss_kib_after']:>10}  "
                  + "; ".join(n for n in notes if n))
        else:
            if r.get("stalled"):
                notes.insert(0, f"stalled client: {r['stalled']}")
            print(f"{r['label']:<24}{cell(r,'deliveries_per_sec','{:.0f}'):>10}{cell(r,'p50_ms','{:.1f}'):>9}"
                  f"{cell(r,'p99_ms','{:.1f}'):>9}{cell(r,'max_ms','{:.1f}'):>9}{cell(r,'lost'):>10}"
                  f"{cell(r,'duplicated_or_late'):>6}{cell(r,'out_of_order'):>6}"
                  f"{cell(r,'cpu_us_per_delivery','{:.2f}'):>14}{cell(r,'rss_kib_end'):>10}  "
                  + "; ".join(n for n in notes if n))
PY
