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
    MARKER,
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
    import zlib

    blob = encode_record({"a": 1})
    assert blob[:4] == MARKER == b"\xf5DL\x02"
    length = int.from_bytes(blob[4:8], "big")
    assert len(blob) == HEADER_SIZE + length
    crc = zlib.crc32(blob[HEADER_SIZE:], zlib.crc32(blob[4:8]))
    assert int.from_bytes(blob[8:12], "big") == crc


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
    assert repair(path) == 8 + 1  # a version-1 header and the payload


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


def _write_v1(path: Path, objs: list[Any]) -> None:
    """Records as datalogger wrote them before the marker (format version 1)."""
    import zlib

    from datalogger.validation import pack

    with open(path, "wb") as handle:
        for obj in objs:
            payload = pack(obj)
            handle.write(len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big"))
            handle.write(payload)


def test_a_corrupt_record_in_the_middle_is_skipped_and_reading_resynchronises(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.rec"
    objs = [{"n": n, "pad": "x" * 50} for n in range(10)]
    sizes = write(path, objs)
    data = bytearray(path.read_bytes())
    middle = sum(sizes[:4]) + HEADER_SIZE + 20  # inside record 4's payload
    data[middle] ^= 0x01
    path.write_bytes(bytes(data))
    damage: list[Any] = []
    assert [obj["n"] for _o, obj in read_records(path, on_damage=damage.append)] == [
        0, 1, 2, 3, 5, 6, 7, 8, 9,
    ]
    assert len(damage) == 1 and not damage[0].torn
    assert damage[0].offset == sum(sizes[:4]) and damage[0].length == sizes[4]
    # repair cuts nothing: the damage is between valid records
    assert repair(path, on_damage=lambda d: None) == 0
    assert path.stat().st_size == len(data)


@pytest.mark.parametrize("where", ["marker", "length", "crc"])
def test_damage_to_a_header_is_skipped_too(tmp_path: Path, where: str) -> None:
    path = tmp_path / "f.rec"
    sizes = write(path, [{"n": n} for n in range(5)])
    data = bytearray(path.read_bytes())
    start = sum(sizes[:2])
    index = {"marker": start + 1, "length": start + 4, "crc": start + 9}[where]
    data[index] ^= 0xFF  # a length of ~4 GiB would look like a torn tail without the CRC
    path.write_bytes(bytes(data))
    damage: list[Any] = []
    assert [obj["n"] for _o, obj in read_records(path, on_damage=damage.append)] == [0, 1, 3, 4]
    assert [(d.offset, d.torn) for d in damage] == [(start, False)]


def test_a_corrupt_last_record_is_damage_and_a_short_one_is_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "f.rec"
    write(path, OBJECTS)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    damage: list[Any] = []
    assert len(list(read_records(path, on_damage=damage.append))) == len(OBJECTS) - 1
    assert [d.torn for d in damage] == [False]
    path.write_bytes(data[:-1])
    damage.clear()
    assert len(list(read_records(path, on_damage=damage.append))) == len(OBJECTS) - 1
    assert [d.torn for d in damage] == [True]


def test_damage_is_logged_when_nobody_listens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f.rec"
    sizes = write(path, OBJECTS)
    data = bytearray(path.read_bytes())
    data[sizes[0] + HEADER_SIZE] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="datalogger.records"):
        assert len(list(read_records(path))) == len(OBJECTS) - 1
    assert any("corrupt record at byte" in r.getMessage() for r in caplog.records)


def test_files_of_the_first_format_are_read_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "old.rec"
    _write_v1(path, OBJECTS[:2])
    assert [obj for _o, obj in read_records(path)] == OBJECTS[:2]
    with RecordFile(path) as file:
        file.append(OBJECTS[2])
    assert [obj for _o, obj in read_records(path)] == OBJECTS[:3]
    assert path.read_bytes().count(MARKER) == 1  # the new record is in the new format


def test_an_append_whose_fsync_fails_is_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.rec"
    with RecordFile(path, fsync="always") as file:
        file.append({"n": 1})
        size = file.size

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing)
        with pytest.raises(OSError):
            file.append({"n": 2})
        assert file.size == size == path.stat().st_size
        monkeypatch.undo()
        file.append({"n": 3})
    assert [obj for _o, obj in read_records(path)] == [{"n": 1}, {"n": 3}]
