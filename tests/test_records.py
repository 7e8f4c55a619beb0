"""Tests of the record framing: round trips, torn tails, fsync policies."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from datalogger.exceptions import ConfigError, InvalidData
from datalogger.records import (
    HEADER_SIZE,
    RecordFile,
    atomic_write_bytes,
    encode_record,
    read_frames,
    read_records,
    repair,
)

OBJECTS: list[Any] = [
    {"a": 1, "b": "x"},
    [1, 2, 3],
    {"when": datetime(2024, 5, 1, 12, 30, tzinfo=UTC), "v": 1.5},
    {"rows": [{"k": None, "bytes": b"\x00\xff"}]},
]


@pytest.fixture
def fsync_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count os.fsync calls (still doing them)."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def write(path: Path, objs: list[Any]) -> list[int]:
    with RecordFile(path) as file:
        return [file.append(obj) for obj in objs]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "f.rec"
    sizes = write(path, OBJECTS)
    records = list(read_records(path))
    assert [obj for _offset, obj in records] == OBJECTS
    offsets = [offset for offset, _obj in records]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert path.stat().st_size == sum(sizes)


def test_reopen_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "f.rec"
    write(path, OBJECTS[:2])
    with RecordFile(path) as file:
        assert file.size == path.stat().st_size
        file.append_many(OBJECTS[2:])
    assert [obj for _offset, obj in read_records(path)] == OBJECTS


def test_frame_layout(tmp_path: Path) -> None:
    blob = encode_record({"a": 1})
    length = int.from_bytes(blob[:4], "big")
    assert len(blob) == HEADER_SIZE + length


def test_unserialisable_object_is_refused_and_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "f.rec"
    with RecordFile(path) as file:
        file.append({"ok": 1})
        with pytest.raises(InvalidData):
            file.append({"bad": object()})
        with pytest.raises(InvalidData):
            file.append_many([{"fine": 1}, {"bad": object()}])
    assert [obj for _offset, obj in read_records(path)] == [{"ok": 1}]


def test_bad_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fsync"):
        RecordFile(tmp_path / "f.rec", fsync="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "damage",
    ["truncate-payload", "truncate-header", "flip-byte", "garbage-length"],
)
def test_torn_tail_is_repaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "f.rec"
    sizes = write(path, OBJECTS)
    good = sum(sizes[:-1])
    data = bytearray(path.read_bytes())
    if damage == "truncate-payload":
        data = data[: good + HEADER_SIZE + 2]
    elif damage == "truncate-header":
        data = data[: good + 3]
    elif damage == "flip-byte":
        data[-2] ^= 0xFF
    else:
        data[good : good + 4] = (2**31).to_bytes(4, "big")
    path.write_bytes(bytes(data))

    assert [obj for _offset, obj in read_records(path)] == OBJECTS[:-1]
    with caplog.at_level(logging.WARNING, logger="datalogger.records"):
        dropped = repair(path)
    assert dropped == len(data) - good
    assert path.stat().st_size == good
    assert any(
        str(path) in r.getMessage() and str(dropped) in r.getMessage() for r in caplog.records
    )
    assert repair(path) == 0


def test_opening_a_torn_file_repairs_it_and_appends_stay_readable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f.rec"
    write(path, OBJECTS)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 3)
    with caplog.at_level(logging.WARNING, logger="datalogger.records"), RecordFile(path) as file:
        file.append({"after": "crash"})
    assert [obj for _offset, obj in read_records(path)] == [*OBJECTS[:-1], {"after": "crash"}]
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_undecodable_payload_with_valid_crc_stops_reading(tmp_path: Path) -> None:
    import zlib

    path = tmp_path / "f.rec"
    write(path, OBJECTS[:1])
    payload = b"\xc1"  # a msgpack byte that is never used
    with open(path, "ab") as handle:
        handle.write(len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big"))
        handle.write(payload)
    assert [obj for _offset, obj in read_records(path)] == OBJECTS[:1]
    assert repair(path) == HEADER_SIZE + 1


def test_repair_of_missing_file_is_a_no_op(tmp_path: Path) -> None:
    assert repair(tmp_path / "absent.rec") == 0


def test_read_frames_from_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "f.rec"
    sizes = write(path, OBJECTS)
    frames = list(read_frames(path, sizes[0]))
    assert [obj for _start, _end, obj in frames] == OBJECTS[1:]
    assert frames[-1][1] == path.stat().st_size


def test_always_fsyncs_every_append(tmp_path: Path, fsync_calls: list[int]) -> None:
    file = RecordFile(tmp_path / "f.rec", fsync="always")
    fsync_calls.clear()  # creating the file fsyncs its directory
    for obj in OBJECTS:
        file.append(obj)
    assert len(fsync_calls) == len(OBJECTS)
    file.append_many(OBJECTS)  # a group: one fsync
    assert len(fsync_calls) == len(OBJECTS) + 1
    file.close()
    assert len(fsync_calls) == len(OBJECTS) + 1  # nothing left to sync


def test_never_does_not_fsync(tmp_path: Path, fsync_calls: list[int]) -> None:
    path = tmp_path / "f.rec"
    with RecordFile(path, fsync="never") as file:
        for obj in OBJECTS:
            file.append(obj)
        file.sync()
        assert [obj for _offset, obj in read_records(path)] == OBJECTS  # in the OS already
    assert fsync_calls == []


def test_interval_fsyncs_once_the_interval_has_passed(
    tmp_path: Path, fsync_calls: list[int]
) -> None:
    with RecordFile(tmp_path / "f.rec", fsync="interval", fsync_interval=3600) as file:
        fsync_calls.clear()
        for obj in OBJECTS:
            file.append(obj)
        file.sync()
        assert fsync_calls == []  # an hour has not passed
        file.sync(force=True)
        assert len(fsync_calls) == 1
    with RecordFile(tmp_path / "g.rec", fsync="interval", fsync_interval=0) as file:
        fsync_calls.clear()
        file.append(OBJECTS[0])
        file.append(OBJECTS[1])
        assert len(fsync_calls) == 2


def test_interval_close_fsyncs_pending_appends(tmp_path: Path, fsync_calls: list[int]) -> None:
    file = RecordFile(tmp_path / "f.rec", fsync="interval", fsync_interval=3600)
    file.append(OBJECTS[0])
    fsync_calls.clear()
    file.close()
    assert len(fsync_calls) == 1
    file.close()
    assert len(fsync_calls) == 1


def test_atomic_write_bytes_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two", durable=False)
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cursor"]
