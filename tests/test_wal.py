"""Tests of the per-topic write-ahead log."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from datalogger.exceptions import ConfigError, InvalidData, InvalidTopic
from datalogger.records import read_records
from datalogger.wal import WriteAheadLog


def chunk(n: int, size: int = 2) -> list[dict[str, object]]:
    return [{"n": n, "i": i, "pad": "x" * 50} for i in range(size)]


def test_round_trip_and_layout(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "sensors.temp") as wal:
        assert wal.next_seq == 1
        assert wal.append(chunk(1)) == 1
        assert wal.append_many([chunk(2), chunk(3)]) == [2, 3]
        assert list(wal.read_from(0)) == [(1, chunk(1)), (2, chunk(2)), (3, chunk(3))]
        assert list(wal.read_from(2)) == [(3, chunk(3))]
        assert list(wal.read_from(3)) == []
    segment = tmp_path / "sensors.temp" / f"{1:020d}.wal"
    assert segment.is_file()
    records = [record for _offset, record in read_records(segment)]
    assert [record["seq"] for record in records] == [1, 2, 3]
    assert all(isinstance(record["ts"], float) for record in records)
    assert records[0]["rows"] == chunk(1)


def test_seq_continues_across_reopen(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "t") as wal:
        wal.append_many([chunk(1), chunk(2)])
    with WriteAheadLog(tmp_path, "t") as wal:
        assert wal.next_seq == 3
        assert wal.append(chunk(3)) == 3
        assert [seq for seq, _rows in wal.read_from(0)] == [1, 2, 3]


def test_segments_rotate_and_seq_survives_removal(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "t", segment_bytes=500) as wal:
        for n in range(1, 21):
            assert wal.append(chunk(n)) == n
        segments = wal.segments
        assert len(segments) > 2
        firsts = [int(p.name.split(".")[0]) for p in segments]
        assert firsts[0] == 1 and firsts == sorted(firsts)
        assert [seq for seq, _rows in wal.read_from(0)] == list(range(1, 21))
        before = wal.bytes_on_disk
        assert before == sum(p.stat().st_size for p in segments)

        removed = wal.remove_through(firsts[2] - 1)  # the first two segments are done
        assert removed == 2
        assert [p.name for p in wal.segments] == [p.name for p in segments[2:]]
        assert not segments[0].exists() and not segments[1].exists()
        assert wal.bytes_on_disk < before
        assert [seq for seq, _rows in wal.read_from(0)] == list(range(firsts[2], 21))
        assert [seq for seq, _rows in wal.read_from(15)] == list(range(16, 21))

        # A partly delivered segment stays; the active segment always stays.
        wal.remove_through(firsts[3])
        assert wal.segments[0].name == segments[3].name
        wal.remove_through(10**9)
        assert wal.segments == [segments[-1]]
    with WriteAheadLog(tmp_path, "t", segment_bytes=500) as wal:
        assert wal.next_seq == 21
        assert wal.append(chunk(21)) == 21


def test_torn_tail_is_repaired_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WriteAheadLog(tmp_path, "t") as wal:
        wal.append_many([chunk(n) for n in range(1, 6)])
        segment = wal.segments[-1]
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0x55  # corrupt the last record
    segment.write_bytes(bytes(data[:-1]))  # and tear it
    with caplog.at_level(logging.WARNING, logger="datalogger.records"):
        wal = WriteAheadLog(tmp_path, "t")
    assert any(str(segment) in r.getMessage() for r in caplog.records)
    assert [seq for seq, _rows in wal.read_from(0)] == [1, 2, 3, 4]
    assert wal.next_seq == 5
    assert wal.append(chunk(99)) == 5
    assert list(wal.read_from(4)) == [(5, chunk(99))]
    wal.close()


def test_empty_last_segment_keeps_its_seq(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "t", segment_bytes=100) as wal:
        wal.append_many([chunk(1), chunk(2)])
    # A crash right after a new segment was created, before it was written to.
    (tmp_path / "t" / f"{3:020d}.wal").touch()
    with WriteAheadLog(tmp_path, "t", segment_bytes=100) as wal:
        assert wal.next_seq == 3
        assert wal.append(chunk(3)) == 3
        assert len(wal.segments) == 2


def test_always_policy_fsyncs_once_per_append_or_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    with WriteAheadLog(tmp_path, "t", fsync="always") as wal:
        wal.append(chunk(0))  # creates the segment (and fsyncs the directory)
        calls.clear()
        for n in range(1, 4):
            wal.append(chunk(n))
        assert len(calls) == 3
        wal.append_many([chunk(n) for n in range(4, 14)])
        assert len(calls) == 4


def test_never_policy_does_not_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    with WriteAheadLog(tmp_path, "t", fsync="never") as wal:
        wal.append_many([chunk(1), chunk(2)])
        wal.sync()
    assert calls == []
    with WriteAheadLog(tmp_path, "t") as wal:
        assert [seq for seq, _rows in wal.read_from(0)] == [1, 2]


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidTopic):
        WriteAheadLog(tmp_path, "../x")
    with pytest.raises(ConfigError):
        WriteAheadLog(tmp_path, "t", fsync="often")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        WriteAheadLog(tmp_path, "t", segment_bytes=0)
    with WriteAheadLog(tmp_path, "t") as wal:
        with pytest.raises(InvalidData):
            wal.append([{"bad": object()}])
        assert wal.append(chunk(1)) == 1  # the failed append used no seq
    assert not (tmp_path.parent / "x").exists()


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "t")
    wal.append(chunk(1))
    wal.close()
    with pytest.raises(ValueError, match="closed"):
        wal.append(chunk(2))
    with WriteAheadLog(tmp_path, "t") as reopened:
        assert [seq for seq, _rows in reopened.read_from(0)] == [1]
