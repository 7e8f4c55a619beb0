"""The fire-and-forget path: log_nowait() through node restarts, overflow, the spool on disk.

A real node (``datalogger run``, multiprocTCPBase) is killed with SIGKILL and
started again on the same admin port while the application keeps logging.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.metrics import StatsCollector
from tests.node_process import ROOT, NodeProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path):
    process = NodeProcess(tmp_path).start()
    yield process
    process.stop()


class Streamer:
    """Calls ``log_nowait`` from a thread about every millisecond, timing each call."""

    def __init__(self, dl: datalogger.DataLogger, topic: str = "green") -> None:
        self.dl, self.topic = dl, topic
        self.sent = 0
        self.latencies: list[float] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            if not self.dl.log_nowait(self.topic, {"n": self.sent}):
                self.refused += 1
            self.latencies.append(time.perf_counter() - started)
            self.sent += 1
            time.sleep(0.001)

    def __enter__(self) -> Streamer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_log_nowait_through_a_node_restart_loses_nothing_and_never_waits(node: NodeProcess) -> None:
    dl = datalogger.connect(node.port, make_default=False)
    with Streamer(dl) as streamer:
        assert wait_for(lambda: len(node.rows("green")) > 100, 10)
        node.kill()
        time.sleep(1.0)  # the node stays away for a while
        node.start()
        time.sleep(0.5)
    dl.flush(timeout=30)
    stored = [row["n"] for row in node.rows("green")]
    assert set(stored) == set(range(streamer.sent))  # every row, those logged while it was down too
    assert streamer.refused == 0
    latencies = sorted(streamer.latencies)
    assert latencies[-1] < 1.0  # no call waits for the node (the outage lasts more)
    assert latencies[int(len(latencies) * 0.99)] < 0.01  # a queue put (10 ms: a loaded machine)
    client = dl.stats()["client"]
    assert client["sent"] == streamer.sent and client["dropped"] == 0 and client["reconnects"] == 1
    dl.close()


def test_overflow_without_spool_is_counted_warned_and_exported(
    node: NodeProcess, caplog: pytest.LogCaptureFixture
) -> None:
    dl = datalogger.connect(node.port, make_default=False, client_buffer_rows=1000)
    dl.log_nowait("green", {"n": -1})
    dl.flush(timeout=30)
    node.kill()
    with caplog.at_level(logging.WARNING, logger="datalogger.client"):
        queued = [dl.log_nowait("green", {"n": n}) for n in range(1500)]
        assert queued == [True] * 1000 + [False] * 500
        assert wait_for(lambda: "500 more rows or events dropped" in caplog.text, 10)
    assert wait_for(lambda: dl.client_stats()["connected"] is False, 10)
    client = dl.client_stats()
    assert (client["dropped"], client["queued"], client["connected"]) == (500, 1000, False)
    metrics = {
        sample.name: sample.value
        for family in StatsCollector(dl.stats, client_stats_fn=dl.client_stats).collect()
        for sample in family.samples
    }
    assert metrics["datalogger_up"] == 0  # the node is away, the client's counters are not
    assert metrics["datalogger_client_dropped_total"] == 500
    assert metrics["datalogger_client_queued_rows"] == 1000
    node.start()
    dl.flush(timeout=30)
    assert [row["n"] for row in node.rows("green")] == list(range(-1, 1000))
    assert dl.stats()["client"]["dropped"] == 500
    dl.close()


def run_app(port: int, spool: Path, rows: int, how: str) -> dict:
    """tests/client_app.py in a subprocess; its client counters at the end."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.client_app", str(port), str(spool), str(rows), how],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("how", ["close", "kill"])
def test_spool_keeps_what_memory_cannot_and_survives_a_restart_of_the_app(tmp_path: Path, how: str) -> None:
    node = NodeProcess(tmp_path)  # not running while the application logs
    spool = tmp_path / "spool"
    counters = run_app(node.port, spool, 3000, how)  # three times what memory holds
    assert counters["dropped"] == 0 and counters["refused_puts"] == 0
    assert counters["spooled"] == 3000 and counters["sent"] == 0
    node.start()
    try:
        # the application starts again with the same spool_dir: the spool goes out first
        dl = datalogger.connect(node.port, make_default=False, spool_dir=spool)
        dl.log_nowait("green", {"n": 3000})
        dl.flush(timeout=30)
        assert [row["n"] for row in node.rows("green")] == list(range(3001))  # all, in order
        assert dl.client_stats()["spooled"] == 0
        dl.close()
    finally:
        node.stop()


def test_spools_left_by_two_dead_processes_are_all_sent(tmp_path: Path) -> None:
    """Two workers of a pre-fork server shared one spool_dir; a new process adopts both slots."""
    node = NodeProcess(tmp_path)
    spool = tmp_path / "spool"
    go = tmp_path / "go"
    apps = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.client_app", str(node.port), str(spool), "1500", "kill", str(go)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    assert apps[0].stdout is not None and apps[1].stdout is not None
    for app in apps:  # both run at once, each in its own slot
        counters = json.loads(app.stdout.readline())
        assert counters["spooled"] == 1500
    go.touch()
    for app in apps:
        app.wait(timeout=30)
    assert sorted(p.name for p in spool.iterdir()) == ["0", "1"]  # one slot each
    node.start()
    try:
        dl = datalogger.connect(node.port, make_default=False, spool_dir=spool)
        dl.flush(timeout=30)
        rows = node.rows("green")
        pids = {row["pid"] for row in rows}
        assert len(pids) == 2 and len(rows) == 3000
        for pid in pids:
            assert [r["n"] for r in rows if r["pid"] == pid] == list(range(1500))
        dl.close()
    finally:
        node.stop()


def test_a_full_spool_keeps_rows_in_memory_then_drops_and_counts(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path)
    dl = datalogger.connect(
        node.port, make_default=False, require_node=False, client_buffer_rows=500,
        spool_dir=tmp_path / "spool", spool_max_bytes=20_000,
    )
    offered = 3000
    queued = sum(dl.log_nowait("green", {"n": n, "pad": "x" * 20}) for n in range(offered))
    assert wait_for(lambda: dl.client_stats()["spooled"] > 0, 10)
    client = dl.client_stats()
    assert 0 < client["spooled"] < offered  # the spool took what fits in spool_max_bytes
    assert client["dropped"] == offered - queued > 0
    assert "spool_max_bytes (20000) reached" in client["spool_error"]
    node.start()
    try:
        dl.flush(timeout=30)
        stored = [row["n"] for row in node.rows("green")]
        assert len(stored) == queued == len(set(stored))  # everything not counted as dropped
        dl.close()
    finally:
        node.stop()


def test_a_disk_full_spool_is_reported_not_fatal(tmp_path: Path) -> None:
    """A real full file system: a 256 KiB tmpfs (needs root)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(spool)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        node = NodeProcess(tmp_path)
        dl = datalogger.connect(node.port, make_default=False, require_node=False,
                                client_buffer_rows=2000, spool_dir=spool)
        offered = 20_000
        queued = sum(dl.log_nowait("green", {"n": n, "pad": "y" * 40}) for n in range(offered))
        assert wait_for(lambda: "No space left" in (dl.client_stats()["spool_error"] or ""), 10)
        assert dl.client_stats()["dropped"] == offered - queued > 0
        node.start()
        try:
            dl.flush(timeout=60)
            stored = [row["n"] for row in node.rows("green")]
            assert sorted(stored) == sorted(set(stored)) and len(stored) == queued
            dl.close()
        finally:
            node.stop()
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def test_an_event_that_cannot_travel_is_dropped_and_counted_the_others_arrive(
    tmp_path: Path, start_node: Any
) -> None:
    from datalogger import pubsub

    dl = start_node({"data_dir": str(tmp_path), "destinations": {"m": {"type": "memory"}}})
    with pubsub.subscribe(dl, "requests") as subscription:
        dl.broadcast({"i": 1})
        dl.broadcast(lambda: None)  # cannot be pickled
        dl.broadcast({"i": 2})
        dl.flush(timeout=30)
        assert list(subscription.iter(timeout=2.0)) == [{"i": 1}, {"i": 2}]
    client = dl.client_stats()
    assert (client["events_sent"], client["events_dropped"]) == (2, 1)
    assert "cannot be pickled" in client["last_error"]


def test_an_event_that_cannot_travel_after_a_full_message_loses_only_itself(
    tmp_path: Path, start_node: Any
) -> None:
    """The transport's own pickling is the check: the messages before the bad one went, in order."""
    from datalogger import batching, pubsub

    dl = start_node({"data_dir": str(tmp_path), "destinations": {"m": {"type": "memory"}}})
    per_message = batching.MAX_EVENTS_PER_MESSAGE
    count = per_message + 50
    with pubsub.subscribe(dl, "requests") as subscription:
        for i in range(count):
            if i == per_message + 20:
                dl.broadcast(lambda: None)  # cannot be pickled: in the second message
            dl.broadcast({"i": i})
        dl.flush(timeout=30)
        got = list(subscription.iter(timeout=2.0))
    assert got == [{"i": i} for i in range(count)]
    client = dl.client_stats()
    assert (client["events_sent"], client["events_dropped"]) == (count, 1)
    assert "cannot be pickled" in client["last_error"]
