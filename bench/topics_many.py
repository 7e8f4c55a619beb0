"""Case: many topics on one node (issue 17): memory, processes and node-wide calls.

``topics`` topics (10,000 in full, 1,000 with ``--quick``) get 100 rows each, one
chunk per topic, from four threads with a handle each, to two destinations
(SQLite and JSON lines). Reported: the node's peak PSS (target <= 1 GiB) and
process count, the time from ``log()`` of a topic never seen to its rows in the
JSON file (median of 5), and how long ``stats()`` (summary and per topic),
``flush()`` and shutdown take with every topic hosted. Rows are counted in both
destinations at the end.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time

import datalogger

from ._common import Mode, Result, RssSampler, Target, check_count, free_port, wait_until
from ._node import node_group, wait_group_gone
from .topics import THREADS, parallel

ROWS = 100
TARGET_PSS_MB = 1024.0


def _lines(directory: str) -> int:
    total = 0
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            total += sum(1 for _ in handle)
    return total


def _sqlite_rows(path: str) -> int:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables)


def run(mode: Mode) -> Result:
    """Log one chunk to each of many topics; report memory, processes and call times."""
    topics = int(mode.pick(10_000, 1_000, 50))
    rows = int(mode.pick(ROWS, ROWS, 10))
    result = Result("topics_many", mode.name, {"topics": topics, "rows_per_topic": rows,
                                              "threads": THREADS,
                                              "destinations": "sqlite + jsonl"})
    with tempfile.TemporaryDirectory(prefix="dl-bench-many-") as out, RssSampler() as sampler:
        files, db = os.path.join(out, "jsonl"), os.path.join(out, "out.db")
        config = {
            "data_dir": os.path.join(out, "state"),
            "destinations": {"db": {"type": "sqlite", "path": db},
                             "files": {"type": "jsonl", "directory": files}},
        }
        dl = datalogger.start(config, base="multiprocTCPBase", admin_port=free_port(),
                              make_default=False)
        assert dl.admin_port is not None
        sampler.watch(dl.admin_port)
        group = node_group(dl.admin_port)
        handles = [datalogger.connect(dl.admin_port, make_default=False) for _ in range(THREADS)]
        names = [f"sensor.{t}" for t in range(topics)]
        chunk = [{"i": i, "value": i * 0.5} for i in range(rows)]

        def feeder(k: int):  # type: ignore[no-untyped-def]
            return lambda: [handles[k].log(name, chunk) for name in names[k::THREADS]]

        with sampler.labelled("load"):
            load = parallel([feeder(k) for k in range(THREADS)])
            began = time.perf_counter()
            dl.flush(timeout=1800.0)
            flush_after_load = time.perf_counter() - began
        timings: dict[str, float] = {"load_s": load, "flush_after_load_s": flush_after_load,
                                     "rows_per_s": topics * rows / (load + flush_after_load)}
        with sampler.labelled("hosted"):
            firsts = []
            for n in range(5):
                topic = f"fresh.{n}"
                began = time.perf_counter()
                dl.log(topic, chunk)
                path = os.path.join(files, f"{topic}.jsonl")
                wait_until(lambda path=path: os.path.exists(path), 60.0, 0.002)
                firsts.append(time.perf_counter() - began)
            timings["first_delivery_s"] = statistics.median(firsts)
            for label, call in (("stats_s", dl.stats), ("stats_detail_s", lambda: dl.stats(True)),
                                ("flush_s", lambda: dl.flush(timeout=600.0))):
                began = time.perf_counter()
                call()
                timings[label] = time.perf_counter() - began
            stats = dl.stats()
        for extra in handles:
            extra.close()
        began = time.perf_counter()
        dl.shutdown()
        timings["shutdown_s"] = time.perf_counter() - began
        wait_group_gone(group)
        expected = (topics + 5) * rows
        result.verified["jsonl rows"] = check_count("jsonl", expected, _lines(files))
        result.verified["sqlite rows"] = check_count("sqlite", expected, _sqlite_rows(db))
    result.per_round = {"ours": [timings]}
    result.medians = {"ours": timings}
    result.memory = sampler.peaks()
    peak_pss = max(phase["node_pss"] for phase in result.memory.values())
    procs = max(phase["node_procs"] for phase in result.memory.values())
    result.extra["summary"] = stats.get("summary")
    result.extra["supervisors"] = stats.get("supervisors")
    result.notes.append(f"node processes at most {procs}; node PSS at most {peak_pss:.0f} MB")
    result.targets.append(Target("node PSS MB", peak_pss, "<=", TARGET_PSS_MB))
    return result
