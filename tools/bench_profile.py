#!/usr/bin/env python3
"""Where the servers' CPU went in one `make bench` run: reads a `perf record -a -g` file of the servers'
core (the load generator's `--perf`) and splits its samples by process, then each chat server's by what
it was doing. Run by tools/bench.sh when BENCH_PERF=1; by hand:

    python3 tools/bench_profile.py target/bench/perf/ours-fanout-20k.data

Whose samples are whose comes from the `.procs` file beside it (`name pid` lines, written by the load
generator as the window starts: every server process and its descendants). A process forked during the
window (a PostgreSQL backend for a new connection) counts as other work: the machine may run other
PostgreSQL servers, so names cannot tell.

The categories, for a chat server's sample, by the first that matches anywhere in its call chain:
  wake reader     waking the receiving socket's sleeping reader (sock_def_readable, ep_poll_callback): on
                  loopback the writer's own system call delivers the data and does the wake-up
  reader's TCP    the receiving side's TCP/IP processing, also run by the writer on loopback (net_rx_action)
  send            the rest of each write: the system call, copying into socket buffers, the sending
                  side's TCP/IP, segments, timers
  reads           reading clients' frames
  sleep/wake      epoll, futexes and the scheduler: the server's own threads going to sleep and waking
  disk            fsync and the file system (SQLite's commits)
  kernel, other   anything else in the kernel
  JSON            serde_json (encoding each event once, decoding each message)
  runtime         tokio, mio, futures: tasks, wakers, I/O readiness
  server code     the rest of user space: the fan-out, WebSocket framing, the store's client, ...
"""

import collections
import subprocess
import sys

CATEGORIES = [
    ("wake reader", {"sock_def_readable", "ep_poll_callback"}),
    ("reader's TCP", {"net_rx_action", "process_backlog", "__netif_receive_skb_one_core", "tcp_v4_rcv"}),
    ("send", {"tcp_sendmsg", "tcp_sendmsg_locked", "tcp_write_xmit", "sock_write_iter", "__sys_sendto",
              "__x64_sys_sendto", "do_writev", "__x64_sys_writev", "ksys_write", "__send", "__GI___writev",
              "__libc_write", "writev"}),
    ("reads", {"tcp_recvmsg", "sock_read_iter", "__sys_recvfrom", "__x64_sys_recvfrom", "ksys_read",
               "__x64_sys_read", "__libc_recv", "__libc_read", "recv"}),
    ("sleep/wake", {"do_epoll_wait", "__x64_sys_epoll_wait", "epoll_wait", "schedule", "__schedule",
                    "do_futex", "__x64_sys_futex", "try_to_wake_up", "sched_yield"}),
    ("disk", {"do_fsync", "__x64_sys_fdatasync", "__x64_sys_fsync", "ext4_file_write_iter",
              "ext4_sync_file", "jbd2_journal_commit_transaction", "fsync", "fdatasync"}),
]
COLUMNS = [name for name, _ in CATEGORIES] + ["kernel, other", "JSON", "runtime", "server code"]


def samples(path):
    """(comm, pid, frames leaf first as (symbol, dso)) for every sample in the file."""
    script = subprocess.run(["perf", "script", "-i", path, "-F", "comm,pid,ip,sym,dso"],
                            capture_output=True, text=True, check=True).stdout
    for block in script.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        head = lines[0].rsplit(None, 1)
        if len(head) != 2 or not head[1].isdigit():
            continue
        frames = []
        for line in lines[1:]:
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                continue
            sym, _, dso = parts[1].rpartition(" (")
            frames.append((sym.split("+0x")[0], dso.rstrip(")")))
        yield head[0], int(head[1]), frames


def category(frames):
    names = {sym for sym, _ in frames}
    for name, markers in CATEGORIES:
        if names & markers:
            return name
    leaf, dso = frames[0] if frames else ("", "")
    if "kernel" in dso:
        return "kernel, other"
    if any("serde_json" in sym for sym, _ in frames[:8]):
        return "JSON"
    if any(word in leaf for word in ("tokio", "mio", "futures")):
        return "runtime"
    return "server code"


def main():
    path = sys.argv[1]
    by_pid = {}
    with open(path.rsplit(".", 1)[0] + ".procs") as procs:
        for line in procs:
            name, pid = line.split()
            by_pid[int(pid)] = name
    chat_servers = {name for name in by_pid.values() if name not in ("postgres", "redis")}
    per_process = collections.Counter()
    per_category = collections.defaultdict(collections.Counter)
    total = 0
    for _comm, pid, frames in samples(path):
        total += 1
        if pid == 0:
            process = "(idle)"
        elif pid in by_pid:
            process = by_pid[pid]
        else:
            process = "(other work on the core)"
        per_process[process] += 1
        if process in chat_servers:
            per_category[process][category(frames)] += 1
    if not total:
        print("  no samples")
        return
    print("  core time: " + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in per_process.most_common()))
    for process, counts in per_category.items():
        n = sum(counts.values())
        print(f"  {process} ({n} samples): " + ", ".join(
            f"{column} {100 * counts[column] / n:.0f}%" for column in COLUMNS if counts[column]))


if __name__ == "__main__":
    main()
