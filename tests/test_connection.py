"""A handle is a connection that heals: node restarts, a stopped node, forks, a busy port.

Every test runs a real node with ``datalogger run`` (multiprocTCPBase) in a
subprocess and kills it with SIGKILL, as an operator or the OOM killer would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

import datalogger
from tests.conftest import free_port
from tests.node_process import NodeProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path):
    process = NodeProcess(tmp_path).start()
    yield process
    process.stop()


def test_blocking_log_raises_not_running_within_connect_timeout_then_works_again(node: NodeProcess) -> None:
    dl = datalogger.connect(node.port, make_default=False, connect_timeout=1.0)
    assert dl.log("green", {"n": 1}) == 1
    dl.flush(timeout=30)  # delivered and its process status stored: not replayed after the kill
    node.kill()
    for attempt in range(3):  # the cached route, then the router, then the admin: all dead
        started = time.monotonic()
        with pytest.raises(datalogger.NotRunning, match=f"listening on 127.0.0.1:{node.port}"):
            dl.log("green", {"n": 100 + attempt})
        assert time.monotonic() - started < 1.0
    with pytest.raises(datalogger.NotRunning):
        dl.stats()
    assert dl.client_stats()["connected"] is False
    node.start()  # the same admin port
    dl.log("green", {"n": 2})  # the same handle, no action by the application
    dl.flush(timeout=30)
    assert [row["n"] for row in node.rows("green")] == [1, 2]
    assert dl.client_stats()["reconnects"] == 1
    dl.close()


def test_a_stopped_node_fails_blocking_calls_in_time_and_queues_the_rest(node: NodeProcess) -> None:
    """A node that takes no message (SIGSTOP: a hung host) is as unreachable as a dead one."""
    dl = datalogger.connect(node.port, make_default=False, connect_timeout=0.5)
    dl.log("green", {"n": 0})
    processes = node.processes()
    for process in processes:
        process.suspend()
    try:
        started = time.monotonic()
        with pytest.raises(datalogger.NotRunning, match=r"did not answer within 0\.5s"):
            dl.log("green", {"n": -1})
        assert time.monotonic() - started < 1.5
        slowest = 0.0
        for n in range(1, 201):
            before = time.perf_counter()
            assert dl.log_nowait("green", {"n": n})
            slowest = max(slowest, time.perf_counter() - before)
        assert slowest < 0.05
    finally:
        for process in processes:
            process.resume()
    dl.flush(timeout=30)
    stored = [row["n"] for row in node.rows("green")]
    assert set(range(201)) <= set(stored)
    dl.close()


def test_a_route_to_an_address_now_held_by_another_topic_is_refused(node: NodeProcess) -> None:
    """After a restart a cached route's port may belong to another topic's supervisor."""
    dl = datalogger.connect(node.port, make_default=False)
    dl.log("a", {"topic": "a"})
    dl.log("b", {"topic": "b"})
    link = dl._link
    link._routes["b"] = link._routes["a"]  # as if "a"'s supervisor now listened where "b"'s was
    dl.log("b", {"topic": "b", "n": 2})
    dl.flush(timeout=30)
    assert [row["topic"] for row in node.rows("a")] == ["a"]
    assert [row.get("n") for row in node.rows("b")] == [None, 2]
    dl.close()


def test_flush_returns_with_the_process_status_stored(node: NodeProcess) -> None:
    dl = datalogger.connect(node.port, make_default=False)
    for round_ in range(5):
        seq = dl.log("green", [{"round": round_}])
        dl.flush(timeout=30)
        assert dl.last_processed("green/files") == seq
    dl.close()


def test_a_child_forked_after_connect_sends_its_own_rows_only(node: NodeProcess) -> None:
    dl = datalogger.connect(node.port, make_default=False)
    dl.log("green", {"who": "parent", "n": 0})
    for n in range(1, 50):
        dl.log_nowait("green", {"who": "parent", "n": n})
    pid = os.fork()
    if pid == 0:  # the child: the parent's queued rows are not its to send
        code = 1
        try:
            for n in range(100):
                dl.log_nowait("green", {"who": "child", "n": n})
            dl.log("green", {"who": "child", "n": 100})
            dl.flush(timeout=30)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    dl.flush(timeout=30)
    rows = node.rows("green")
    assert sorted(r["n"] for r in rows if r["who"] == "parent") == list(range(50))
    assert sorted(r["n"] for r in rows if r["who"] == "child") == list(range(101))
    dl.close()


def test_sigkill_of_datalogger_run_takes_the_node_down_within_5s(node: NodeProcess) -> None:
    processes = node.processes()
    assert len(processes) >= 5  # the run process, the admin, the logger and the actors
    node.kill_run_process()
    started = time.monotonic()
    _, alive = psutil.wait_procs(processes, timeout=5)
    assert not alive, f"still running {time.monotonic() - started:.1f}s later: {alive}"
    node.start()  # and the port is free for the next node
    dl = datalogger.connect(node.port, make_default=False)
    assert dl.log("green", {"n": 1}) >= 1
    dl.close()


def test_start_waits_for_a_port_still_held_by_a_node_shutting_down(tmp_path: Path) -> None:
    port = free_port()
    config = {"data_dir": str(tmp_path / "state"), "destinations": {"m": {"type": "memory"}}}
    for _ in range(3):
        dl = datalogger.start(config, admin_port=port, make_default=False)
        dl.log("green", {"n": 1})
        dl.shutdown(timeout=2)
    running = datalogger.start(config, admin_port=port, make_default=False)
    try:
        started = time.monotonic()
        with pytest.raises(datalogger.DataLoggerError, match="already in use: a node runs there"):
            datalogger.start(config, admin_port=port, make_default=False)
        assert time.monotonic() - started < 2.0  # a running node is not waited for
    finally:
        running.shutdown(timeout=2)


def test_connect_without_a_node_queues_until_one_starts(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path)
    dl = datalogger.connect(node.port, make_default=False, require_node=False)
    with pytest.raises(datalogger.NotRunning):
        dl.log("green", {"n": 0})
    for n in range(10):
        dl.log_nowait("green", {"n": n})
    node.start()
    try:
        dl.flush(timeout=30)
        assert [row["n"] for row in node.rows("green")] == list(range(10))
        assert wait_for(lambda: dl.client_stats()["queued"] == 0, 5)
    finally:
        dl.close()
        node.stop()
