"""Rows over a lane's memory bound stay only in the write-ahead log and are read back from it.

The log is the only durable queue: nothing is written a second time, rows come
back in order, survive a SIGKILL of the whole node, and the log is trimmed once
they are delivered.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import datalogger
from datalogger.records import read_frames
from datalogger.wal import WalReader, WriteAheadLog
from tests.conftest import free_port, kill_node, recorder
from tests.dests import rows_in
from tests.test_durability import run_node


def chunk(n: int, size: int = 2) -> list[dict[str, object]]:
    return [{"n": n, "i": i, "pad": "x" * 50} for i in range(size)]


def test_reader_returns_the_chunks_asked_for_in_order_across_segments(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "t", segment_bytes=400) as wal:
        for n in range(1, 21):
            wal.append(chunk(n))
        assert len(wal.segments) > 3
        reader = WalReader(wal)
        assert [(seq, rows) for seq, _ns, rows in reader.read([3, 4, 5])] == [
            (3, chunk(3)), (4, chunk(4)), (5, chunk(5))
        ]
        assert [seq for seq, _ns, _rows in reader.read([6, 9, 17])] == [6, 9, 17]
        assert [seq for seq, _ns, _rows in reader.read([2])] == [2]  # backwards: read from the start
        assert reader.read([]) == []
        assert reader.read([21]) == []  # not in the log


def test_reader_resumes_where_it_stopped_instead_of_parsing_the_segment_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datalogger.wal as wal_module

    parsed: list[int] = []

    def counting(path, start=0, on_damage=None):  # type: ignore[no-untyped-def]
        for frame in read_frames(path, start, on_damage):
            parsed.append(1)
            yield frame

    with WriteAheadLog(tmp_path, "t") as wal:
        for n in range(1, 101):
            wal.append(chunk(n))
        monkeypatch.setattr(wal_module, "read_frames", counting)
        reader = WalReader(wal)
        for first in range(1, 101, 10):
            got = reader.read(list(range(first, first + 10)))
            assert [seq for seq, _ns, _rows in got] == list(range(first, first + 10))
    # 100 chunks read in ten steps: each record parsed about once, not 10 + 20 + ... + 100 times.
    assert len(parsed) <= 100 + 10


def test_reader_skips_a_chunk_lost_to_damage(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "t") as wal:
        for n in range(1, 4):
            wal.append(chunk(n))
        (segment,) = wal.segments
    data = bytearray(segment.read_bytes())
    at = data.index(b"\x02", data.index(b"\xf5DL\x02", 10) + 4)  # inside chunk 2's record
    data[at + 30] ^= 0xFF
    segment.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path, "t") as wal:
        assert [seq for seq, _ns, _rows in WalReader(wal).read([1, 2, 3])] == [1, 3]


def _files_outside_the_log(data_dir: Path) -> dict[str, int]:
    wal = data_dir / "wal"
    return {
        str(p.relative_to(data_dir)): p.stat().st_size
        for p in data_dir.rglob("*")
        if p.is_file() and wal not in p.parents and p.name != "secret"
    }


def _wal_chunks(data_dir: Path, topic: str) -> int:
    with WriteAheadLog(data_dir / "wal", topic) as wal:
        return sum(1 for _ in wal.read_from(0))


def test_rows_over_the_bound_are_written_once_delivered_in_order_and_the_log_trimmed(
    tmp_path: Path, start_node
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    state = tmp_path / "state"
    # A slow destination (0.3 s a write) that never fails: the order of delivery is the lane's.
    slow = recorder(out, "Recorder", slow_topic="green", delay=0.3, max_buffered_rows=1_000)
    dl = start_node({"data_dir": str(state), "destinations": {"d": slow}})
    for c in range(40):
        dl.log("green", [{"n": c * 250 + i, "p": "x" * 200} for i in range(250)])
    stats = dl.stats()["topics"]["green"]["d"]
    assert stats["wal_only_rows"] >= 5_000  # held in the log only, not in memory
    assert stats["spilled"] >= stats["wal_only_rows"]
    # Written once: the log holds the 40 chunks; no other file holds rows (10,000 x 200 bytes).
    others = _files_outside_the_log(state)
    assert sum(others.values()) < 100_000, others
    assert not (state / "spill").exists()
    dl.flush(timeout=60)
    assert [r["n"] for r in rows_in(str(out), "green")] == list(range(10_000))
    stats = dl.stats()["topics"]["green"]["d"]
    assert stats["wal_only_rows"] == 0 and stats["buffered"] == 0 and stats["delivered"] == 10_000
    # Delivered: the log is trimmed (status reports delete settled segments).
    deadline = time.monotonic() + 10
    while dl.stats()["topics"]["green"]["d"]["wal_bytes"] > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dl.stats()["topics"]["green"]["d"]["wal_bytes"] == 0


def test_rows_held_only_in_the_log_survive_a_sigkill_of_the_node(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "down").touch()
    state = tmp_path / "state"
    config = tmp_path / "node.toml"
    config.write_text(
        f'data_dir = "{state}"\n\n[destinations.d]\ntype = "tests.dests:Switchable"\n'
        f'directory = "{out}"\nmax_buffered_rows = 1000\n'
        "retry = { max_attempts = 10000, initial_delay = 0.05, max_delay = 0.1 }\n"
    )
    port = free_port()
    node = run_node(config, port)
    try:
        dl = datalogger.connect(port, make_default=False)
        for c in range(30):
            dl.log("green", [{"n": c * 200 + i} for i in range(200)])
        assert dl.stats()["topics"]["green"]["d"]["wal_only_rows"] > 3_000
    finally:
        assert kill_node(port, node) >= 3
    assert _wal_chunks(state, "green") == 30
    (out / "down").unlink()
    port = free_port()
    node = run_node(config, port)
    try:
        dl = datalogger.connect(port, make_default=False)
        dl.flush(timeout=60)
        assert [r["n"] for r in rows_in(str(out), "green")] == list(range(6_000))
        dl.shutdown()
    finally:
        if node.poll() is None:
            node.wait(timeout=30)
    assert not os.path.exists(state / "spill")
