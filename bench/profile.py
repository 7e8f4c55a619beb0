"""``python -m bench.profile <case> [--seconds N] [--after-postgres]``: where the time goes.

Cases: postgres, influxdb, per_row, latency, peer_vmagent. ``--after-postgres``
first writes 200,000 rows to PostgreSQL through a node of its own, in this
process, as issue 19's sequence does, then profiles the case on a new node.

Runs the hot loop of a case on a fresh node and, while it runs, records every
process of the node and the caller with ``py-spy record --format
raw`` (idle threads are not sampled; a thread that is ready to run but
waits for a CPU is, so on a busy machine its samples overstate its CPU). The
node's processes are found by the admin's process group, since the admin
detaches from the caller. Per process it prints the samples, the actor it runs
(guessed from the stack), its share of the time on a CPU and waiting for one
and its CPU time per 1,000 rows stored (from ``/proc/<pid>/task/*/schedstat``
and the node's ``delivered`` counters, over as many seconds just before py-spy
records), and the top functions by self and by inclusive samples;
it writes the collapsed stacks and a JSON summary to bench/results/. Needs
py-spy (the ``bench`` extra) and ptrace permission.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

import datalogger

from ._common import RESULTS, utc_stamp
from ._node import (
    chunked,
    influx_create,
    influx_destination,
    influx_drop,
    influx_rows,
    log_chunks,
    node,
    node_group,
    pg_destination,
    pg_drop,
    pg_rows,
    unique,
)
from ._victoria import metric_rows, vm_destination

RATE = 250
"""py-spy samples per second."""
_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+):(?P<line>\d+)\)$")


def _loop(
    case: str,
    dl: datalogger.DataLogger,
    stop: threading.Event,
    cleanup: list[str],
    logged: list[int] | None = None,
) -> int:
    """Run the case's hot loop until ``stop``; return rows logged (also added to ``logged[0]``)."""
    logged = logged if logged is not None else [0]
    start = logged[0]
    if case == "postgres":
        topic = unique("bench_prof_pg")
        cleanup.append(topic)
        chunk = pg_rows(1000)
        while not stop.is_set():
            dl.log(topic, chunk)
            logged[0] += len(chunk)
    elif case == "influxdb":  # the influxdb case's ours: log() of 1,000 rows, v1 HTTP
        chunks = chunked(influx_rows(200_000), 1000)
        while not stop.is_set():
            dl.log("bench_prof_influx", chunks[(logged[0] // 1000) % len(chunks)])
            logged[0] += 1000
    elif case == "peer_vmagent":  # peer_vmagent's datalogger side: log() of 1,000 rows, v2 to VM
        chunks = chunked(metric_rows(200_000), 1000)
        while not stop.is_set():
            dl.log("bench_prof_vm", chunks[(logged[0] // 1000) % len(chunks)])
            logged[0] += 1000
    elif case == "per_row":
        batch = influx_rows(10_000)
        while not stop.is_set():
            for row in batch:
                dl.log_nowait("bench_prof_rows", row)
            logged[0] += len(batch)
            dl.flush(60.0)
    else:
        row = {"sensor": "s1", "value": 0.5, "i": 0}
        while not stop.is_set():
            dl.log("bench_prof_latency", [row])
            logged[0] += 1
    return logged[0] - start


def _role(stacks: Counter[str]) -> str:
    """The actor class a process runs, from its ``receiveMsg_`` frames.

    A forked actor's stacks start with its ancestors' frames (the parent's
    handler that created it), so the class deepest in the chain is the one
    the process runs.
    """
    depth: dict[str, int] = {}
    for stack in stacks:
        found = re.findall(r"(\w+)\.receiveM(?:sg_\w+|essage) \((?:datalogger|bench)/", stack)
        for level, name in enumerate(dict.fromkeys(found)):
            depth[name] = max(depth.get(name, 0), level)
    if depth:
        return max(depth, key=lambda name: depth[name])
    if "thespian/system/admin" in "".join(stacks):
        return "thespian admin"
    return "?"


def summarize(raw: str, top: int = 12) -> dict[str, Any]:
    """Samples, role, top self and inclusive functions of one py-spy raw (collapsed) file."""
    stacks: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            stacks[stack] += int(samples)
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    pct = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "role": _role(stacks),
        "self": [(f, pct(n)) for f, n in own.most_common(top)],
        "inclusive": [(f, pct(n)) for f, n in inclusive.most_common(top * 2)],
    }


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path}:{match['line']})"


def record(pids: list[int], seconds: float, out: str, native: bool = False) -> dict[int, str]:
    """py-spy every pid for ``seconds`` (``native``: with C frames); return pid -> stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    procs = {
        pid: subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--rate",
             str(RATE), "--duration", str(int(seconds)), "--output", f"{out}/{pid}.txt",
             *(["--native"] if native else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for pid in pids
    }
    stacks: dict[int, str] = {}
    for pid, proc in procs.items():
        proc.wait(timeout=seconds + 60)
        path = Path(out, f"{pid}.txt")
        stacks[pid] = path.read_text(encoding="utf-8") if path.exists() else ""
    return stacks


def profile(case: str, seconds: float, native: bool = False,
            after_postgres: bool = False) -> dict[str, Any]:
    """Run ``case``'s hot loop on a fresh node and profile all its processes.

    ``after_postgres``: first 200,000 rows into PostgreSQL through another node.
    """
    database = unique("bench_prof")
    destinations: dict[str, Any]
    cleanup: list[str] = []
    if after_postgres:
        with node({"pg": pg_destination()}) as first:
            table = unique("bench_prof_first")
            cleanup.append(table)
            log_chunks(first, table, chunked(pg_rows(200_000), 1000))
    if case == "postgres":
        destinations = {"pg": pg_destination()}
    elif case in ("per_row", "influxdb"):
        influx_create(database)
        destinations = {"influx": influx_destination(database)}
    elif case == "peer_vmagent":  # the shared VictoriaMetrics of .ci/start-victoriametrics
        destinations = {"vm": vm_destination()}
    else:
        destinations = {"j": {"type": "jsonl", "directory": tempfile.mkdtemp(prefix="dl-prof-")}}
    summary: dict[str, Any] = {"case": case, "seconds": seconds, "processes": {},
                               "after_postgres": after_postgres}
    try:
        with node(destinations) as dl, tempfile.TemporaryDirectory() as out:
            stop = threading.Event()
            done: list[int] = []
            warm = threading.Event()

            logged = [0]

            def work() -> None:
                _loop(case, dl, warm, cleanup)  # warm: starts the actors
                done.append(_loop(case, dl, stop, cleanup, logged))

            warm.set()
            _loop(case, dl, warm, cleanup)
            warm.clear()
            thread = threading.Thread(target=work)
            warm.set()
            thread.start()
            time.sleep(1.0)
            group = node_group(dl.admin_port)
            pids = [p.pid for p in psutil.process_iter() if _in_group(p.pid, group)]
            every = [*pids, os.getpid()]
            # CPU shares first, without py-spy (which pauses each process to sample it)
            before, rows_before, started = _sched(every), logged[0], time.monotonic()
            stored_before = _delivered(dl)
            time.sleep(seconds)
            after, rows, wall = _sched(every), logged[0] - rows_before, time.monotonic() - started
            stored = _delivered(dl) - stored_before
            summary["rows_stored_per_s"] = stored / wall
            stacks = record(every, seconds, out, native)
            stop.set()
            thread.join()
            summary["rows_per_s"] = rows / wall
            RESULTS.mkdir(parents=True, exist_ok=True)
            base = RESULTS / f"profile-{case}-{utc_stamp()}"
            for pid, raw in stacks.items():
                name = f"caller {pid}" if pid == os.getpid() else str(pid)
                Path(f"{base}-{name}.collapsed").write_text(raw, encoding="utf-8")
                summary["processes"][name] = summarize(raw)
                summary["processes"][name]["sched"] = _sched_shares(
                    before.get(pid), after.get(pid), wall, stored or rows
                )
            Path(f"{base}.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            summary["written"] = str(base)
    finally:
        pg_drop(cleanup)
        if case in ("per_row", "influxdb"):
            influx_drop(database)
    return summary


def _delivered(dl: datalogger.DataLogger) -> int:
    """Rows delivered so far, over every topic and destination of the node."""
    topics = dl.stats().get("topics", {})
    return sum(int(lane.get("delivered", 0)) for dests in topics.values() for lane in dests.values())


def _sched(pids: list[int]) -> dict[int, tuple[int, int]]:
    """pid -> (ns on a CPU, ns runnable but waiting for a CPU), all threads, from schedstat."""
    out: dict[int, tuple[int, int]] = {}
    for pid in pids:
        running = waiting = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as handle:
                    fields = handle.read().split()
                running, waiting = running + int(fields[0]), waiting + int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = (running, waiting)
    return out


def _sched_shares(
    before: tuple[int, int] | None, after: tuple[int, int] | None, wall: float, rows: int
) -> dict[str, float]:
    """Share of the wall time on a CPU and waiting for one, and CPU ms per 1,000 rows stored."""
    if before is None or after is None or wall <= 0:
        return {}
    running, waiting = (after[0] - before[0]) / 1e9, (after[1] - before[1]) / 1e9
    return {
        "on_cpu": round(running / wall, 3),
        "waiting_for_cpu": round(waiting / wall, 3),
        "cpu_ms_per_1000_rows": round(running * 1e6 / rows, 3) if rows else 0.0,
    }


def _in_group(pid: int, group: int | None) -> bool:
    try:
        return group is not None and os.getpgid(pid) == group
    except OSError:
        return False


def print_summary(summary: dict[str, Any], top: int = 8) -> None:
    """Print the busiest processes and their top frames."""
    procs = sorted(summary["processes"].items(), key=lambda kv: -kv[1]["samples"])
    after = " after 200,000 rows to PostgreSQL" if summary.get("after_postgres") else ""
    print(f"== profile {summary['case']}{after}: {summary.get('rows_per_s') or 0:,.0f} rows/s logged, "
          f"{summary.get('rows_stored_per_s') or 0:,.0f} stored (before py-spy); "
          f"{summary.get('written')}")
    for name, info in procs:
        if not info["samples"]:
            continue
        sched = info.get("sched") or {}
        print(f"-- {name} ({info['role']}): {info['samples']} samples; on a CPU "
              f"{100 * sched.get('on_cpu', 0):.0f}% of the time, waiting for one "
              f"{100 * sched.get('waiting_for_cpu', 0):.0f}%; "
              f"{sched.get('cpu_ms_per_1000_rows', 0):.2f} ms CPU per 1,000 rows stored")
        for frame, pct in info["self"][:top]:
            print(f"     self {pct:5.1f}%  {frame}")


def main(argv: list[str] | None = None, run: Callable[..., dict[str, Any]] = profile) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("case", choices=["postgres", "influxdb", "per_row", "latency", "peer_vmagent"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--native", action="store_true", help="C frames too (gc, libpq...)")
    parser.add_argument("--after-postgres", action="store_true",
                        help="first 200,000 rows to PostgreSQL through a node of their own")
    args = parser.parse_args(argv)
    extra = {"after_postgres": True} if args.after_postgres else {}
    print_summary(run(args.case, args.seconds, args.native, **extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
