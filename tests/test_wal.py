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

        # A partly delivered segment stays.
        wal.remove_through(firsts[3])
        assert wal.segments[0].name == segments[3].name
        # Everything settled: the active segment is rolled and deleted too; an empty one
        # named after the next chunk keeps the numbering.
        wal.remove_through(20)
        assert [p.name for p in wal.segments] == [f"{21:020d}.wal"]
        assert wal.bytes_on_disk == 0
        assert not any(p.exists() for p in segments)
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


def test_a_flipped_byte_in_the_newest_and_in_an_older_segment_loses_only_that_chunk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datalogger.records import read_frames

    with WriteAheadLog(tmp_path, "t", segment_bytes=400) as wal:
        for n in range(1, 22):
            wal.append(chunk(n))
        segments = wal.segments
    assert len(segments) >= 3 and len(list(read_frames(segments[-1]))) == 3
    for segment in (segments[0], segments[-1]):
        (_first, second, _end), *_rest = list(read_frames(segment))
        data = bytearray(segment.read_bytes())
        data[second + 30] ^= 0x10  # inside the second record of the segment
        segment.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="datalogger.wal"):
        wal = WriteAheadLog(tmp_path, "t", segment_bytes=400)
        seqs = [seq for seq, _rows in wal.read_from(0)]
        list(wal.read_from(0))  # read twice: counted once
    assert seqs == [n for n in range(1, 22) if n not in (2, 20)]
    assert wal.corrupt_records == 2
    assert wal.next_seq == 22
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("corrupt record" in e for e in errors)
    assert wal.append(chunk(22)) == 22
    wal.close()


def test_long_topics_get_short_distinct_directories(tmp_path: Path) -> None:
    from datalogger.names import topic_from_dir

    one, two = "a" * 254 + "1", "a" * 254 + "2"
    with WriteAheadLog(tmp_path, one) as first, WriteAheadLog(tmp_path, two) as second:
        first.append(chunk(1))
        second.append(chunk(2))
        assert first.path != second.path
        assert len(first.path.name) == 200
        assert topic_from_dir(first.path) == one and topic_from_dir(second.path) == two
    with WriteAheadLog(tmp_path, one) as again:
        assert list(again.read_from(0)) == [(1, chunk(1))]


def test_a_read_only_disk_raises_storage_error_and_heals(tmp_path: Path) -> None:
    from datalogger.exceptions import StorageError

    from .fsfaults import tmpfs

    with tmpfs(tmp_path / "wal", read_only=True) as disk:
        with pytest.raises(StorageError, match=r"Read-only file system \(EROFS\)") as raised:
            WriteAheadLog(disk.path, "t")
        assert str(disk.path / "t") in str(raised.value)
        disk.remount(writable=True)
        with WriteAheadLog(disk.path, "t") as wal:
            assert wal.append(chunk(1)) == 1


def test_a_full_disk_raises_storage_error_and_settled_data_frees_it(tmp_path: Path) -> None:
    from datalogger.exceptions import StorageError

    from .fsfaults import tmpfs

    with tmpfs(tmp_path / "wal", size="256k") as disk, WriteAheadLog(disk.path, "t") as wal:
        big = [{"pad": "x" * 4000}]
        seq = 0
        with pytest.raises(StorageError, match=r"No space left on device \(ENOSPC\)"):
            for _ in range(1000):
                seq = wal.append(big)
        assert [s for s, _rows in wal.read_from(0)] == list(range(1, seq + 1))  # no torn record
        with pytest.raises(StorageError):
            wal.append(big)
        wal.remove_through(seq)  # every chunk settled: the active segment goes
        assert wal.bytes_on_disk == 0
        assert wal.append(big) == seq + 1


def test_a_failed_write_raises_storage_error_naming_the_file_and_appends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from datalogger.exceptions import StorageError

    with WriteAheadLog(tmp_path, "t", fsync="always") as wal:
        wal.append(chunk(1))
        real = os.fsync

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(StorageError) as raised:
            wal.append_many([chunk(2), chunk(3)])
        assert "No space left on device (ENOSPC)" in str(raised.value)
        assert str(wal.segments[-1]) in str(raised.value)
        monkeypatch.setattr(os, "fsync", real)
        assert wal.append(chunk(2)) == 2
        assert [seq for seq, _rows in wal.read_from(0)] == [1, 2]
