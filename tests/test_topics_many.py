"""Many topics on one node: bounded processes, shared supervisors, idle topics released."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import recorder
from tests.dests import read_lines, rows_in


def node_processes(admin_port: int) -> list[psutil.Process]:
    """The node's processes: those of the session of the process listening on ``admin_port``
    (Thespian's admin and actor processes detach into a session of their own); exited ones
    not yet reaped (zombies) hold no memory and are not counted."""
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == admin_port and conn.status == "LISTEN" and conn.pid:
            session = os.getsid(conn.pid)
            found = []
            for process in psutil.process_iter():
                try:
                    if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                        found.append(process)
                except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                    continue
            return found
    raise AssertionError(f"no process listens on the admin port {admin_port}")


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def slow_node(tmp_path: Path, start_node: Any, **options: Any) -> tuple[Any, Path]:
    out = tmp_path / "out"
    dest = recorder(out, slow_topic="red", delay=3.0, **options.pop("dest", {}))
    config = {
        "data_dir": str(tmp_path / "state"),
        "max_topic_supervisors": 2,  # one dedicated supervisor, a shared pool of one
        "destinations": {"rec": dest},
        **options,
    }
    return start_node(config), out


def green_delay(dl: Any, out: Path) -> float:
    """Seconds from logging 'green' to its delivery, while 'red' is inside a 3 s send."""
    dl.log("red", [{"n": 1}])
    time.sleep(0.3)  # red's send_data is now sleeping
    began = time.time()
    dl.log("green", [{"n": 2}])
    wait_for(lambda: rows_in(str(out), "green"), 10, "green's delivery")
    return read_lines(str(out / "green.jsonl"))[0]["at"] - began


def test_a_slow_send_of_a_shared_topic_delays_the_topics_of_its_supervisor(
    tmp_path: Path, start_node: Any
) -> None:
    dl, out = slow_node(tmp_path, start_node)
    dl.log("first", [{"n": 0}])  # the one dedicated supervisor; red and green share the pool
    assert green_delay(dl, out) > 2.0, "a shared worker sends one chunk at a time"
    pids = dl.stats()["supervisor_pids"]
    assert pids["red"] == pids["green"] != pids["first"]
    dl.flush(timeout=20)
    assert len(rows_in(str(out), "red")) == 1


def test_send_async_bounds_what_a_slow_shared_topic_does_to_its_neighbours(
    tmp_path: Path, start_node: Any
) -> None:
    dl, out = slow_node(tmp_path, start_node, dest={"send_async": True})
    dl.log("first", [{"n": 0}])
    assert green_delay(dl, out) < 1.5
    pids = dl.stats()["supervisor_pids"]
    assert pids["red"] == pids["green"]


def test_an_isolated_topic_gets_its_own_supervisor_beyond_the_limit(
    tmp_path: Path, start_node: Any
) -> None:
    dl, out = slow_node(tmp_path, start_node, isolate=["re*"])
    dl.log("first", [{"n": 0}])
    assert green_delay(dl, out) < 1.5
    pids = dl.stats()["supervisor_pids"]
    assert len({pids["red"], pids["green"], pids["first"]}) == 3


def count_sqlite(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables)


def count_jsonl(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.jsonl"):
        with open(path, encoding="utf-8") as handle:
            total += sum(1 for _ in handle)
    return total


@pytest.mark.timeout(180)
def test_two_thousand_topics_two_destinations_bounded_processes_idle_topics_released(
    tmp_path: Path, start_node: Any
) -> None:
    topics, rows, limit, destinations = 2000, 3, 4, 2
    dl = start_node(
        {
            "data_dir": str(tmp_path / "state"),
            "max_topic_supervisors": limit,
            "idle_after": 4.0,
            "destinations": {
                "db": {"type": "sqlite", "path": str(tmp_path / "out.db")},
                "files": {"type": "jsonl", "directory": str(tmp_path / "jsonl")},
            },
        }
    )
    # The constant: six processes of any node (Thespian's admin and logger, the root, ProcessStatus,
    # ...) and two for dedicated supervisors exiting idle while new ones start.
    bound = limit * (1 + destinations) + 8
    peak = 0
    for t in range(topics):
        dl.log(f"sensor.{t}", [{"t": t, "i": i} for i in range(rows)])
        if t % 250 == 0:
            peak = max(peak, len(node_processes(dl.admin_port)))
    dl.flush(timeout=120)
    peak = max(peak, len(node_processes(dl.admin_port)))
    assert count_sqlite(tmp_path / "out.db") == topics * rows
    assert count_jsonl(tmp_path / "jsonl") == topics * rows
    assert peak <= bound, f"{peak} processes for {topics} topics (bound {bound})"
    stats = dl.stats()
    assert stats["summary"]["topics"] == topics
    assert stats["summary"]["destinations"]["db"]["delivered"] == topics * rows
    assert stats["topics"] == {}  # a summary by default on a node with many topics

    detail = dl.stats(detail=True)
    dedicated = {t: pid for t, pid in detail["supervisor_pids"].items()
                 if list(detail["supervisor_pids"].values()).count(pid) == 1}
    assert len(dedicated) == limit - 1  # the pool is a quarter of the limit (1 here)
    workers = [p for pid in dedicated.values() for p in psutil.Process(pid).children()]
    gone = [psutil.Process(pid) for pid in dedicated.values()] + workers

    # idle: the dedicated topics' supervisors and workers exit
    _, alive = psutil.wait_procs(gone, timeout=30)
    assert not alive, f"still running after idle_after: {[p.pid for p in alive]}"
    idle = len(node_processes(dl.admin_port))
    assert idle < peak

    # ... and come back on their next chunk, numbering where they stopped
    topic = next(iter(dedicated))
    dl.log(topic, [{"t": -1, "i": 0}])
    dl.flush(timeout=30)
    assert count_sqlite(tmp_path / "out.db") == topics * rows + 1
    assert len(node_processes(dl.admin_port)) > idle
    lanes = dl.stats(detail=True)["topics"][topic]
    assert lanes["db"]["settled_seq"] == 2 and lanes["files"]["settled_seq"] == 2
    assert lanes["db"]["delivered"] == rows + 1  # its counters go on where they were
