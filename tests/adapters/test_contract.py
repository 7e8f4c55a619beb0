"""One contract suite run against every storing adapter (memory, sqlite, postgres, redis).

The sqlite, postgres and redis runs use real storage: a file in ``tmp_path``,
a fresh table on the test PostgreSQL server, a fresh key on the test Redis
server. Each run cleans its storage up afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from datalogger.adapters import create_adapter
from datalogger.adapters.base import StorageAdapter
from datalogger.exceptions import InvalidInput
from tests.services import postgres_dsn_or_skip, redis_url_or_skip, unique_name


@attrs.define
class Storage:
    """Builds started adapters that all use the same storage."""

    name: str
    options: dict[str, Any]
    persistent: bool
    opened: list[StorageAdapter] = attrs.field(factory=list)

    def new(self) -> StorageAdapter:
        """A new started adapter instance over the same storage."""
        adapter = create_adapter(self.name, self.options)
        self.opened.append(adapter)
        return adapter


def _postgres(tmp_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    import psycopg

    dsn = postgres_dsn_or_skip()
    table = unique_name("ps")

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')

    return {"dsn": dsn, "table": table}, drop


def _redis(tmp_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    import redis

    url = redis_url_or_skip()
    key = unique_name("datalogger_test:ps")

    def delete() -> None:
        client = redis.Redis.from_url(url)
        client.delete(key)
        client.close()

    return {"url": url, "key": key}, delete


def _sqlite(tmp_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    return {"path": str(tmp_path / "status.db"), "table": unique_name("ps")}, lambda: None


def _memory(tmp_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    return {}, lambda: None


BACKENDS = {"memory": _memory, "sqlite": _sqlite, "postgres": _postgres, "redis": _redis}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh storage of each kind."""
    options, cleanup = BACKENDS[request.param](tmp_path)
    store = Storage(request.param, options, persistent=request.param != "memory")
    try:
        yield store
    finally:
        for adapter in store.opened:
            adapter.close()
        cleanup()


def test_fresh_storage_loads_empty(storage: Storage) -> None:
    assert storage.new().load() == []


def test_item_processed_then_load_returns_it(storage: Storage) -> None:
    adapter = storage.new()
    adapter.item_processed(("users", 1700000000123))
    assert adapter.load() == [("users", 1700000000123)]


def test_upsert_overwrites_with_the_given_value(storage: Storage) -> None:
    adapter = storage.new()
    adapter.item_processed(("users", 10))
    adapter.item_processed(("users", 20))
    assert adapter.load() == [("users", 20)]
    # EventStreamex semantics: the value given is stored, even when lower.
    adapter.item_processed(("users", 5))
    assert adapter.load() == [("users", 5)]


def test_many_entities(storage: Storage) -> None:
    adapter = storage.new()
    expected = {f"entity_{i}": i * 1000 for i in range(50)}
    for item in expected.items():
        adapter.item_processed(item)
    loaded = adapter.load()
    assert len(loaded) == 50
    assert dict(loaded) == expected
    assert all(isinstance(e, str) and isinstance(t, int) for e, t in loaded)


def test_large_and_negative_timestamps_round_trip(storage: Storage) -> None:
    adapter = storage.new()
    items = {"max": 2**63 - 1, "min": -(2**63), "zero": 0, "unicode é/ü": 7}
    adapter.item_processed_many(items.items())
    assert dict(adapter.load()) == items


def test_reset_empties(storage: Storage) -> None:
    adapter = storage.new()
    adapter.item_processed_many([("a", 1), ("b", 2)])
    adapter.reset()
    assert adapter.load() == []
    adapter.item_processed(("c", 3))
    assert adapter.load() == [("c", 3)]


def test_item_processed_many(storage: Storage) -> None:
    adapter = storage.new()
    adapter.item_processed(("kept", 1))
    adapter.item_processed_many([("a", 1), ("b", 2), ("a", 3), ("kept", 9)])
    adapter.item_processed_many([])
    adapter.item_processed_many(iter([("c", 4)]))
    assert sorted(adapter.load()) == [("a", 3), ("b", 2), ("c", 4), ("kept", 9)]


@pytest.mark.parametrize(
    "bad",
    [
        ("users", "12"),
        ("users", 1.5),
        ("users", True),
        (3, 1),
        ("", 1),
        ("users",),
        "users",
        ("users", 2**63),
    ],
)
def test_bad_items_are_refused_and_nothing_is_stored(storage: Storage, bad: Any) -> None:
    adapter = storage.new()
    with pytest.raises(InvalidInput):
        adapter.item_processed(bad)
    with pytest.raises(InvalidInput):
        adapter.item_processed_many([("good", 1), bad])
    assert adapter.load() == []


def test_new_instance_reloads_what_the_first_wrote(storage: Storage) -> None:
    if not storage.persistent:
        pytest.skip("the memory adapter keeps nothing across instances, by design")
    first = storage.new()
    first.item_processed(("users", 10))
    first.item_processed_many([("orders", 20), ("users", 11)])
    first.close()  # as after a crash: only what reached the storage counts
    second = storage.new()
    assert sorted(second.load()) == [("orders", 20), ("users", 11)]
    second.reset()
    assert storage.new().load() == []


def test_instances_over_the_same_storage_see_each_others_writes(storage: Storage) -> None:
    if not storage.persistent:
        pytest.skip("the memory adapter keeps nothing across instances, by design")
    first, second = storage.new(), storage.new()
    first.item_processed(("a", 1))
    second.item_processed(("a", 2))
    assert first.load() == [("a", 2)]
