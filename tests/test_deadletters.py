"""Tests of the dead-letter store."""

from __future__ import annotations

import logging
import multiprocessing
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from datalogger.deadletters import DeadLetter, DeadLetterStore, DeadLetterSummary
from datalogger.exceptions import InvalidData, InvalidTopic

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def rows(n: int) -> list[dict[str, object]]:
    return [{"i": i, "at": WHEN} for i in range(n)]


def add(store: DeadLetterStore, topic: str, destination: str, n: int, reason: str) -> DeadLetter:
    return store.add(topic, destination, rows(n), reason, 3, 1000.0, 1010.0)


def test_add_and_read_back(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path)
    letter = add(store, "sensors", "pg", 2, "duplicate key")
    assert len(letter.id) == 32 and uuid.UUID(hex=letter.id).version == 4
    assert (letter.topic, letter.destination, letter.reason, letter.attempts) == (
        "sensors",
        "pg",
        "duplicate key",
        3,
    )
    assert (letter.first_attempt_at, letter.last_attempt_at) == (1000.0, 1010.0)
    assert (tmp_path / "pg" / "sensors.dl").is_file()
    assert list(store.letters()) == [letter]
    (again,) = DeadLetterStore(tmp_path).letters()
    assert again.rows == rows(2)  # tz-aware datetimes round trip


def test_two_instances_share_the_store(tmp_path: Path) -> None:
    actor, cli = DeadLetterStore(tmp_path), DeadLetterStore(tmp_path)
    first = add(actor, "t", "pg", 1, "one")
    second = add(cli, "t", "pg", 2, "two")
    third = add(actor, "t", "pg", 3, "three")
    assert [letter.id for letter in cli.letters("t", "pg")] == [first.id, second.id, third.id]
    assert cli.remove("t", "pg", {second.id}) == 1
    assert [letter.id for letter in actor.letters()] == [first.id, third.id]
    fourth = add(actor, "t", "pg", 4, "four")  # appending after the rewrite
    assert [letter.id for letter in cli.letters()] == [first.id, third.id, fourth.id]


def test_filters_and_summary(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path)
    a1 = add(store, "a", "pg", 2, "r1")
    a2 = add(store, "a", "pg", 3, "r2")
    b1 = add(store, "b", "pg", 1, "r3")
    a3 = add(store, "a", "influx", 5, "r4")
    assert [x.id for x in store.letters(topic="a")] == [a3.id, a1.id, a2.id]
    assert [x.id for x in store.letters(destination="pg")] == [a1.id, a2.id, b1.id]
    assert [x.id for x in store.letters("a", "pg")] == [a1.id, a2.id]
    assert list(store.letters("zzz", "pg")) == []
    assert list(store.letters(destination="nowhere")) == []

    assert store.summary() == [
        DeadLetterSummary("a", "influx", 1, 5, a3.created_at, a3.created_at, "r4"),
        DeadLetterSummary("a", "pg", 2, 5, a1.created_at, a2.created_at, "r2"),
        DeadLetterSummary("b", "pg", 1, 1, b1.created_at, b1.created_at, "r3"),
    ]
    assert store.total_letters() == 4
    assert store.total_rows() == 11


def test_remove(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path)
    letters = [add(store, "t", "pg", n, f"r{n}") for n in range(1, 5)]
    assert store.remove("t", "pg", {letters[1].id, letters[2].id, "unknown"}) == 2
    assert [x.id for x in store.letters()] == [letters[0].id, letters[3].id]
    assert store.total_rows() == 5
    assert store.remove("t", "pg", {"unknown"}) == 0
    assert store.remove("t", "pg", {letters[0].id, letters[3].id}) == 2
    assert not (tmp_path / "pg" / "t.dl").exists()
    assert store.summary() == [] and store.total_letters() == 0
    assert store.remove("t", "pg", {letters[0].id}) == 0
    assert store.remove("t", "other", {letters[0].id}) == 0
    assert not list(tmp_path.rglob("*.tmp"))


def test_empty_store(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "absent")
    assert store.summary() == [] and list(store.letters()) == []
    assert store.total_rows() == 0 and store.total_letters() == 0


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "", "x y"])
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    store = DeadLetterStore(tmp_path / "store")
    with pytest.raises(InvalidTopic):
        add(store, name, "pg", 1, "r")
    with pytest.raises(InvalidTopic):
        add(store, "t", name, 1, "r")
    with pytest.raises(InvalidTopic):
        store.remove(name, "pg", {"x"})
    with pytest.raises(InvalidTopic):
        list(store.letters(destination=name))
    assert list(tmp_path.rglob("*")) == []


def test_unserialisable_rows_are_refused(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path)
    with pytest.raises(InvalidData):
        store.add("t", "pg", [{"x": object()}], "r", 1, 0.0, 0.0)
    assert store.total_letters() == 0


def test_add_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeadLetterStore(tmp_path)
    add(store, "t", "pg", 1, "r")
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    add(store, "t", "pg", 1, "r")
    assert len(calls) >= 1


def test_torn_tail_keeps_complete_letters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DeadLetterStore(tmp_path)
    kept = [add(store, "t", "pg", n, "r") for n in (1, 2)]
    add(store, "t", "pg", 3, "r")
    path = tmp_path / "pg" / "t.dl"
    data = bytearray(path.read_bytes())
    data[-4] ^= 0xFF
    path.write_bytes(bytes(data[:-1]))
    assert [x.id for x in store.letters()] == [k.id for k in kept]
    with caplog.at_level(logging.WARNING, logger="datalogger.records"):
        new = add(store, "t", "pg", 4, "r")
    assert any(str(path) in r.getMessage() for r in caplog.records)
    assert [x.id for x in store.letters()] == [kept[0].id, kept[1].id, new.id]


def _add_many(directory: str, worker: int, count: int) -> None:
    store = DeadLetterStore(directory)
    for n in range(count):
        store.add("t", "pg", [{"worker": worker, "n": n}], "r", 1, 0.0, 0.0)


def test_concurrent_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    store = DeadLetterStore(tmp_path)
    early = [add(store, "t", "pg", 1, "early") for _ in range(20)]
    workers = [
        context.Process(target=_add_many, args=(str(tmp_path), w, 30)) for w in range(3)
    ]
    for process in workers:
        process.start()
    for letter in early:  # removing while the others append
        store.remove("t", "pg", {letter.id})
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    letters = list(store.letters())
    assert len(letters) == 90
    for worker in range(3):
        seen = [x.rows[0]["n"] for x in letters if x.rows[0]["worker"] == worker]
        assert seen == list(range(30))


def test_long_topics_and_destinations_get_short_distinct_files(tmp_path: Path) -> None:
    from datalogger.names import file_name

    store = DeadLetterStore(tmp_path)
    one, two, dest = "t" * 254 + "1", "t" * 254 + "2", "d" * 255
    add(store, one, dest, 1, "first")
    add(store, two, dest, 2, "second")
    names = [p.name for p in (tmp_path / file_name(dest)).iterdir()]
    assert len(names) == 4 and all(len(name.encode()) <= 255 for name in names)  # .dl, .dl.lock
    assert [letter.reason for letter in store.letters(topic=one)] == ["first"]
    assert [letter.topic for letter in store.letters(topic=two)] == [two]
    assert sorted(item.topic for item in store.summary()) == sorted([one, two])
    assert store.remove(two, dest, {next(store.letters(topic=two)).id}) == 1
    assert [letter.topic for letter in store.letters()] == [one]


def test_each_row_keeps_its_own_error_and_a_letter_can_shrink(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path)
    letter = store.add("t", "db", rows(3), "three rows", 1, 1.0, 2.0, errors=["a", "b", "c"])
    assert next(store.letters()).row_errors() == ["a", "b", "c"]
    store.remove("t", "db", set(), keep={letter.id: (rows(3)[2:], ["c again"])})
    (kept,) = store.letters()
    assert (kept.id, kept.rows, kept.row_errors()) == (letter.id, rows(3)[2:], ["c again"])
    old = add(store, "t", "db", 2, "old letter")  # without errors: the reason for every row
    assert old.row_errors() == ["old letter", "old letter"]
