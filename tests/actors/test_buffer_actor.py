"""BufferActor tests through DataBuffer, on simpleSystemBase and multiprocTCPBase.

The test buffers (tests/actors/buffers_for_tests.py) record to files, since on
multiprocTCPBase ``handle_flush`` runs in the BufferActors' processes. Timing
checks use generous bounds: an interval flush must come after most of the
interval and well within a few seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import datalogger
from datalogger.buffer import DataBuffer
from datalogger.buffer_partition import partition_for
from datalogger.deadletters import DeadLetterStore
from datalogger.exceptions import ConfigError, NotRunning
from datalogger.system import DataLogger

from .buffers_for_tests import BrokenBuffer, FlakyBuffer, RecordingBuffer, read_events

FAST_RETRY = {"initial_delay": 0.1, "max_delay": 0.2, "jitter": 0.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["simpleSystemBase", "multiprocTCPBase"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DataLogger]:
    """A datalogger node (one per base for the module), shut down at the end."""
    base_dir = tmp_path_factory.mktemp("node")
    config = {
        "data_dir": str(base_dir / "state"),
        "destinations": {"files": {"type": "jsonl", "directory": str(base_dir / "jsonl")}},
    }
    handle = datalogger.start(
        config, base=request.param, admin_port=free_port(), make_default=False
    )
    yield handle
    handle.shutdown(timeout=5.0)


@pytest.fixture
def started(node: DataLogger) -> Iterator[Callable[[DataBuffer], DataBuffer]]:
    """Start buffers on the node; stop them after the test."""
    buffers: list[DataBuffer] = []

    def start(buffer: DataBuffer) -> DataBuffer:
        buffers.append(buffer.start(node))
        return buffer

    yield start
    for buffer in buffers:
        buffer.stop(timeout=5.0)


def wait_for(buf: DataBuffer, check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it is truthy; the requests keep simpleSystemBase's timers going."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf.size()
        result = check()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout}s")


def test_interval_flush(started: Any, tmp_path: Path) -> None:
    buf = started(RecordingBuffer(tmp_path, interval=0.5, flush_meta={"table": "t"}))
    before = time.time()
    buf.insert("k", 1)
    buf.insert("k", 2)
    (event,) = wait_for(buf, lambda: read_events(tmp_path, "flushes"))
    assert (event["key"], event["data"], event["meta"]) == ("k", [1, 2], {"table": "t"})
    assert 0.3 <= event["at"] - before <= 5.0
    assert buf.size() == 0


def test_size_flush_is_immediate(started: Any, tmp_path: Path) -> None:
    buf = started(RecordingBuffer(tmp_path, interval=60.0, max_size=3))
    buf.insert_batch("k", [1, 2])
    buf.insert("k", 3)
    buf.insert("k", 4)
    (event,) = wait_for(buf, lambda: read_events(tmp_path, "flushes"))
    assert event["data"] == [1, 2, 3]
    assert buf.dump() == {"k": [4]}


def test_stale_timer_does_not_flush_the_next_insert_early(started: Any, tmp_path: Path) -> None:
    buf = started(RecordingBuffer(tmp_path, interval=1.0, max_size=2))
    buf.insert("k", 1)  # starts a timer, due in 1 s
    buf.insert("k", 2)  # size flush: that timer is now stale
    wait_for(buf, lambda: read_events(tmp_path, "flushes"))
    time.sleep(0.5)
    inserted = time.time()
    buf.insert("k", 3)  # a fresh timer, due 1 s from now; the stale one goes off in ~0.5 s
    events = wait_for(buf, lambda: read_events(tmp_path, "flushes")[1:])
    assert events[0]["data"] == [3]
    assert 0.8 <= events[0]["at"] - inserted <= 5.0


def test_flush_and_sync_flush(started: Any, tmp_path: Path) -> None:
    buf = started(RecordingBuffer(tmp_path, interval=60.0, partitions=3))
    buf.insert("early", "x")
    buf.flush()
    wait_for(buf, lambda: read_events(tmp_path, "flushes"))
    for key in ("a", "b", "c"):
        buf.insert_batch(key, [key] * 2)
    results = buf.sync_flush(timeout=10.0)
    assert sorted(results) == [["ok", "a", 2], ["ok", "b", 2], ["ok", "c", 2]]
    assert buf.size() == 0 and buf.sync_flush() == []
    assert sorted(e["key"] for e in read_events(tmp_path, "flushes")) == ["a", "b", "c", "early"]


def test_dump_size_info(started: Any, tmp_path: Path) -> None:
    buf = started(RecordingBuffer(tmp_path, interval=60.0, partitions=2, max_size=50))
    buf.insert_batch("a", [1, 2, 3])
    buf.insert("b", {"x": 1})
    buf.insert(("tuple", 7), None)
    assert buf.dump() == {"a": [1, 2, 3], "b": [{"x": 1}], ("tuple", 7): [None]}
    assert buf.dump("a") == {"a": [1, 2, 3]}
    assert (buf.size(), buf.size("a"), buf.size("nothing")) == (5, 3, 0)
    info = buf.info()
    assert [p["partition"] for p in info] == [0, 1]
    assert sorted(map(repr, (k for p in info for k in p["keys"]))) == sorted(
        map(repr, ["a", "b", ("tuple", 7)])
    )
    assert sum(p["size"] for p in info) == 5 and sum(p["inserted"] for p in info) == 5
    assert info[0]["settings"]["max_size"] == 50
    assert info[0]["settings"]["class"] == "tests.actors.buffers_for_tests:RecordingBuffer"
    buf.sync_flush()
    assert sum(p["flushed"] for p in buf.info()) == 3


def test_retry_then_success_flushes_exactly_once(started: Any, tmp_path: Path) -> None:
    buf = started(FlakyBuffer(tmp_path, failures=2, partitions=1, retry=FAST_RETRY))
    buf.insert_batch("k", [1, 2])
    assert buf.sync_flush(timeout=20.0) == [["ok", "k", 2]]
    assert [e["data"] for e in read_events(tmp_path, "attempts")] == [[1, 2]] * 3
    assert [e["data"] for e in read_events(tmp_path, "flushes")] == [[1, 2]]
    (info,) = buf.info()
    assert (info["errors"], info["retried"], info["flushed"], info["failed"]) == (2, 2, 1, 0)


def test_exhausted_retries_go_to_handle_error_and_dead_letters(
    started: Any, tmp_path: Path
) -> None:
    dead = tmp_path / "dead"
    buf = started(
        BrokenBuffer(
            tmp_path,
            partitions=1,
            retry={**FAST_RETRY, "max_attempts": 3},
            dead_letter_dir=dead,
            flush_meta="m",
        )
    )
    buf.insert_batch("k", ["a", "b"])
    assert buf.sync_flush(timeout=20.0) == []
    assert len(read_events(tmp_path, "attempts")) == 3
    (error,) = read_events(tmp_path, "errors")
    assert (error["key"], error["data"], error["meta"]) == ("k", ["a", "b"], "m")
    (letter,) = DeadLetterStore(dead).letters()
    assert (letter.topic, letter.destination, letter.attempts) == ("k", "BrokenBuffer", 3)
    assert letter.rows == [{"value": "a"}, {"value": "b"}]
    assert "ConnectionError: database is down" in letter.reason
    (info,) = buf.info()
    assert (info["failed"], info["failed_values"], info["dead_lettered"], info["lost"]) == (
        1,
        2,
        2,
        0,
    )
    assert buf.size() == 0


def test_partitions_spread_keys(started: Any, tmp_path: Path) -> None:
    buf = started(RecordingBuffer(tmp_path, interval=60.0, partitions=4))
    keys = [f"key-{n}" for n in range(16)]
    for _ in range(2):
        for key in keys:
            buf.insert(key, key)
    info = buf.info()
    placed = {key: p["partition"] for p in info for key in p["keys"]}
    assert sorted(placed) == sorted(keys)  # each key in exactly one partition
    assert all(placed[key] == partition_for(key, 4) for key in keys)
    assert len(set(placed.values())) >= 3
    assert all(len(values) == 2 for values in buf.dump().values())
    buf.sync_flush()
    events = read_events(tmp_path, "flushes")
    assert sorted(e["key"] for e in events) == sorted(keys)  # one flush per key, both values
    if not buf._in_process:  # each partition is its own process
        assert len({e["pid"] for e in events}) == len(set(placed.values()))


def test_stop_flushes_what_is_left(node: DataLogger, tmp_path: Path) -> None:
    buf = RecordingBuffer(tmp_path, interval=60.0).start(node)
    buf.insert("k", 1)
    buf.stop()
    assert [e["data"] for e in read_events(tmp_path, "flushes")] == [[1]]
    with pytest.raises(NotRunning):
        buf.insert("k", 2)


def test_class_in_main_is_rejected_on_multiproc(node: DataLogger) -> None:
    if node.admin_port is None:
        pytest.skip("simpleSystemBase runs the actors in this process: __main__ classes work")
    in_main = type("InMain", (DataBuffer,), {"__module__": "__main__"})
    with pytest.raises(ConfigError, match="__main__"):
        in_main().start(node)
