"""Tests of the on-disk FIFO of the client spool."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from datalogger.exceptions import ConfigError, InvalidData
from datalogger.spool_queue import SpoolQueue
from datalogger.validation import unpack


def rows(n: int, size: int = 3) -> list[dict[str, object]]:
    return [{"n": n, "i": i, "pad": "y" * 40} for i in range(size)]


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.spill"))


def test_fifo_order_and_counts(tmp_path: Path) -> None:
    with SpoolQueue(tmp_path / "q") as queue:
        assert len(queue) == 0 and queue.rows == 0 and queue.pop(10) == []
        for n in range(1, 6):
            queue.push(n, rows(n))
        assert len(queue) == 5 and queue.rows == 15
        assert queue.pop(6) == [(1, rows(1)), (2, rows(2))]
        assert queue.pop(4) == [(3, rows(3))]  # whole chunks only
        assert len(queue) == 2 and queue.rows == 6
        assert queue.pop(1) == [(4, rows(4))]  # at least one chunk, though bigger
        assert queue.pop(100) == [(5, rows(5))]
        assert len(queue) == 0 and queue.rows == 0 and queue.pop(100) == []


def test_chunks_survive_a_restart_and_popped_ones_do_not_come_back(tmp_path: Path) -> None:
    directory = tmp_path / "q"
    queue = SpoolQueue(directory)
    for n in range(1, 8):
        queue.push(n * 10, rows(n))
    assert [seq for seq, _ in queue.pop(6)] == [10, 20]

    crashed, queue = queue, SpoolQueue(directory)  # restarted without a close()
    assert len(queue) == 5 and queue.rows == 15
    assert [seq for seq, _ in queue.pop(3)] == [30]
    queue.push(80, rows(8))
    queue.close()
    crashed.close()  # only releases the file (a close saves no cursor)

    with SpoolQueue(directory) as queue:
        assert len(queue) == 5
        popped = queue.pop(1000)
    assert [seq for seq, _ in popped] == [40, 50, 60, 70, 80]
    assert popped[-1][1] == rows(8)
    with SpoolQueue(directory) as queue:
        assert len(queue) == 0 and queue.pop(1000) == []


def test_cursor_file_is_msgpack(tmp_path: Path) -> None:
    with SpoolQueue(tmp_path) as queue:
        queue.push(1, rows(1))
        queue.push(2, rows(2))
        queue.pop(1)
        cursor = unpack((tmp_path / "cursor").read_bytes())
    assert set(cursor) == {"segment", "offset"} and cursor["offset"] > 0
    assert not (tmp_path / "cursor.tmp").exists()


def test_segments_rotate_and_consumed_ones_are_deleted(tmp_path: Path) -> None:
    with SpoolQueue(tmp_path, segment_bytes=400) as queue:
        for n in range(1, 21):
            queue.push(n, rows(n))
        first = segments(tmp_path)
        assert len(first) > 3
        before = queue.bytes_on_disk
        assert before == sum(p.stat().st_size for p in tmp_path.glob("*.spill"))
        got = queue.pop(30)
        assert [seq for seq, _ in got] == list(range(1, 11))
        remaining = segments(tmp_path)
        assert remaining and remaining[0] > first[0] and remaining[-1] == first[-1]
        assert queue.bytes_on_disk < before
    with SpoolQueue(tmp_path, segment_bytes=400) as queue:
        assert [seq for seq, _ in queue.pop(1000)] == list(range(11, 21))
        assert segments(tmp_path) == [] and queue.bytes_on_disk == 0
        queue.push(21, rows(21))  # and it goes on after being emptied
    with SpoolQueue(tmp_path, segment_bytes=400) as queue:
        assert queue.pop(1000) == [(21, rows(21))]


def test_crash_between_cursor_save_and_segment_deletion(tmp_path: Path) -> None:
    with SpoolQueue(tmp_path, segment_bytes=300) as queue:
        for n in range(1, 11):
            queue.push(n, rows(n))
        kept = {p.name: p.read_bytes() for p in tmp_path.glob("*.spill")}
        queue.pop(12)
    for name, data in kept.items():  # the deletions "did not happen"
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(data)
    with SpoolQueue(tmp_path, segment_bytes=300) as queue:
        assert [seq for seq, _ in queue.pop(1000)] == list(range(5, 11))
    assert segments(tmp_path) == []


def test_torn_tail_is_repaired_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with SpoolQueue(tmp_path) as queue:
        for n in range(1, 5):
            queue.push(n, rows(n))
        queue.pop(3)
    (segment,) = tmp_path.glob("*.spill")
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0x01
    segment.write_bytes(bytes(data[:-2]))
    with caplog.at_level(logging.WARNING, logger="datalogger.records"):
        queue = SpoolQueue(tmp_path)
    assert any(str(segment) in r.getMessage() for r in caplog.records)
    assert len(queue) == 2
    queue.push(5, rows(5))
    assert [seq for seq, _ in queue.pop(1000)] == [2, 3, 5]
    queue.close()


def test_cursor_past_the_end_after_power_loss(tmp_path: Path) -> None:
    with SpoolQueue(tmp_path) as queue:
        for n in range(1, 4):
            queue.push(n, rows(n))
        queue.pop(3)
    (segment,) = tmp_path.glob("*.spill")
    with open(segment, "r+b") as handle:  # the pushes were lost, the cursor was not
        handle.truncate(0)
    with SpoolQueue(tmp_path) as queue:
        assert len(queue) == 0
        queue.push(4, rows(4))
    with SpoolQueue(tmp_path) as queue:
        assert queue.pop(100) == [(4, rows(4))]


def test_corrupt_cursor_redelivers_rather_than_loses(tmp_path: Path) -> None:
    with SpoolQueue(tmp_path) as queue:
        queue.push(1, rows(1))
        queue.push(2, rows(2))
        queue.pop(1)
    (tmp_path / "cursor").write_bytes(b"\xc1garbage")
    with SpoolQueue(tmp_path) as queue:
        assert [seq for seq, _ in queue.pop(100)] == [1, 2]


def test_always_policy_fsyncs_pushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    with SpoolQueue(tmp_path, fsync="always") as queue:
        queue.push(0, rows(0))
        calls.clear()
        for n in range(1, 4):
            queue.push(n, rows(n))
        assert len(calls) == 3


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SpoolQueue(tmp_path, segment_bytes=0)
    with SpoolQueue(tmp_path) as queue:
        with pytest.raises(InvalidData):
            queue.push(1, [{"bad": object()}])
        assert len(queue) == 0
    with pytest.raises(ValueError, match="closed"):
        queue.push(1, rows(1))
