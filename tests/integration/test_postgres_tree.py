"""PostgreSQL through the whole actor tree on multiprocTCPBase, counted in the database."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import datalogger
from datalogger.deadletters import DeadLetterStore
from tests.services import postgres_dsn_or_skip, unavailable, unique_name

pytestmark = pytest.mark.integration

StartNode = Callable[..., datalogger.DataLogger]


@pytest.fixture
def dsn() -> str:
    return postgres_dsn_or_skip()


@pytest.fixture
def schemas(dsn: str) -> Iterator[list[str]]:
    """Names appended here are dropped (cascade) after the test."""
    names: list[str] = []
    yield names
    wait_postgres_ready(60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def scalar(dsn: str, query: sql.Composed | str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]


def count_rows(dsn: str, schema: str, table: str) -> int:
    query = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))
    return int(scalar(dsn, query))


def table_exists(dsn: str, schema: str, table: str) -> bool:
    query = "select exists (select 1 from pg_tables where schemaname = %s and tablename = %s)"
    return bool(scalar(dsn, query, (schema, table)))


def lane(dl: datalogger.DataLogger, topic: str, destination: str = "pg") -> dict[str, Any]:
    stats: dict[str, Any] = dl.stats()["topics"][topic][destination]
    return stats


def config(tmp_path: Path, **destination: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "state"),
        "destinations": {"pg": {"type": "postgres", **destination}},
    }


# -- servers' lifecycle ------------------------------------------------------------


def postgres_ready() -> bool:
    result = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-q", "-t", "2"], check=False, timeout=10
    )
    return result.returncode == 0


def wait_postgres_ready(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not postgres_ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL not ready within {timeout:g}s")
        time.sleep(0.2)


def pg_ctlcluster() -> Callable[[str], None]:
    """A function running ``pg_ctlcluster <version> main <action>`` on this machine's cluster."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        unavailable("no Debian PostgreSQL cluster (pg_ctlcluster) to restart")
    version = sorted(os.listdir("/etc/postgresql"))[0]

    def run(action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
            check=True,
            timeout=60,
            capture_output=True,
        )

    return run


# -- tests ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_100k_rows_green_and_red_into_their_own_schemas(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    green, red = unique_name("green"), unique_name("red")
    schemas.extend([green, red])
    dl = start_node(config(tmp_path, dsn=dsn, schema="{topic}", table="readings"))
    for chunk in range(50):
        base = chunk * 1_000
        dl.log(green, [{"id": base + i, "sensor": i % 10, "value": i * 0.5} for i in range(1_000)])
        dl.log(red, [{"id": base + i, "sensor": i % 7, "note": f"r{i}"} for i in range(1_000)])
    dl.flush(timeout=60)

    assert count_rows(dsn, green, "readings") == 50_000
    assert count_rows(dsn, red, "readings") == 50_000
    distinct = sql.SQL("select count(distinct id) from {}").format(
        sql.Identifier(green, "readings")
    )
    assert scalar(dsn, distinct) == 50_000
    for topic in (green, red):
        stats = lane(dl, topic)
        assert stats["received"] == 50_000
        assert stats["delivered"] == 50_000
        assert stats["dead_lettered"] == 0


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_server_restarted_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    ctl = pg_ctlcluster()
    schema = unique_name("restart")
    schemas.append(schema)
    topic = "ticks"
    dl = start_node(
        config(
            tmp_path,
            dsn=dsn,
            schema=schema,
            conflict_key=["id"],
            connect_timeout=2,
            retry={"max_attempts": 100, "initial_delay": 0.1, "max_delay": 1.0, "jitter": 0.1},
        )
    )
    errors: list[BaseException] = []

    def bounce() -> None:
        try:
            ctl("stop")
            time.sleep(2)
            ctl("start")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    restarter = threading.Thread(target=bounce, daemon=True)
    try:
        for chunk in range(40):  # 20,000 rows in chunks of 500, over about 4 s
            if chunk == 10:
                restarter.start()
            dl.log(topic, [{"id": chunk * 500 + i, "v": float(i)} for i in range(500)])
            time.sleep(0.1)
        restarter.join(90)
        assert not errors, f"restarting PostgreSQL failed: {errors[0]!r}"
        dl.flush(timeout=90)
        wait_postgres_ready(30)
        assert count_rows(dsn, schema, topic) == 20_000
        distinct = sql.SQL("select count(distinct id) from {}").format(
            sql.Identifier(schema, topic)
        )
        assert scalar(dsn, distinct) == 20_000
        stats = lane(dl, topic)
        assert stats["failed"] >= 1, "the restart did not make any attempt fail"
        assert stats["dead_lettered"] == 0
        assert stats["delivered"] == 20_000
    finally:
        restarter.join(90)
        if not postgres_ready():
            ctl("start")
        wait_postgres_ready(60)


def test_topic_with_a_semicolon_is_refused_before_anything_runs(
    tmp_path: Path, start_node: StartNode, dsn: str
) -> None:
    dl = start_node(config(tmp_path, dsn=dsn))
    with pytest.raises(datalogger.InvalidTopic):
        dl.log("x.y;--", [{"id": 1}])
    with pytest.raises(datalogger.InvalidTopic):
        dl.log('x"; drop table x; --', [{"id": 1}])


def test_topic_punctuation_is_kept_in_a_quoted_table(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    schema = unique_name("map")
    schemas.append(schema)
    dl = start_node(config(tmp_path, dsn=dsn, schema=schema, table="t_{topic}"))
    dl.log("a-b.c:d", [{"id": i, "Mixed Case": f"v{i}"} for i in range(25)])
    dl.flush(timeout=30)
    assert count_rows(dsn, schema, "t_a-b.c:d") == 25
    column = sql.SQL("select count({}) from {}").format(
        sql.Identifier("Mixed Case"), sql.Identifier(schema, "t_a-b.c:d")
    )
    assert scalar(dsn, column) == 25
    assert lane(dl, "a-b.c:d")["delivered"] == 25


def test_hostile_schema_option_is_refused_and_rows_dead_lettered(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    victim = unique_name("victim")
    schemas.append(victim)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(victim)))
        conn.execute(sql.SQL("create table {} (id int)").format(sql.Identifier(victim, "x")))
    hostile = f'{victim}"; drop table {victim}.x; --'
    dl = start_node(
        config(tmp_path, dsn=dsn, schema=hostile, retry={"max_attempts": 3, "initial_delay": 0.1})
    )
    rows = [{"id": i} for i in range(10)]
    dl.log("victim_rows", rows)
    dl.flush(timeout=30)

    assert table_exists(dsn, victim, "x")
    stats = lane(dl, "victim_rows")
    assert stats["delivered"] == 0
    assert stats["dead_lettered"] == 10
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters("victim_rows"))
    assert [row for letter in letters for row in letter.rows] == rows
    assert "schema" in letters[0].reason


def test_hostile_schema_option_is_not_retried(
    tmp_path: Path, start_node: StartNode, dsn: str
) -> None:
    hostile = 'public"; drop table x; --'
    retry = {"max_attempts": 3, "initial_delay": 0.1}  # a transient error would be retried
    dl = start_node(config(tmp_path, dsn=dsn, schema=hostile, retry=retry))
    dl.log("never", [{"id": 1}])
    dl.flush(timeout=30)
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters("never"))
    assert [letter.attempts for letter in letters] == [1]


def test_bad_rows_are_dead_lettered_and_good_rows_land(
    tmp_path: Path, start_node: StartNode, dsn: str, schemas: list[str]
) -> None:
    schema = unique_name("bad")
    schemas.append(schema)
    dl = start_node(
        config(tmp_path, dsn=dsn, schema=schema, columns={"id": "bigint", "n": "bigint"})
    )
    rows: list[dict[str, Any]] = [{"id": i, "n": i * 10} for i in range(200)]
    bad_ids = {17, 101, 199}
    for i in bad_ids:
        rows[i]["n"] = f"not a number {i}"
    dl.log("mixed", rows)
    dl.flush(timeout=30)

    assert count_rows(dsn, schema, "mixed") == 197
    stored = scalar(
        dsn,
        sql.SQL("select array_agg(id order by id) from {}").format(sql.Identifier(schema, "mixed")),
    )
    assert set(stored) == set(range(200)) - bad_ids
    letters = list(DeadLetterStore(tmp_path / "state" / "dead_letters").letters("mixed", "pg"))
    dead = [row for letter in letters for row in letter.rows]
    assert sorted(row["id"] for row in dead) == sorted(bad_ids)
    assert all("invalid input syntax" in letter.reason for letter in letters)
    stats = lane(dl, "mixed")
    assert stats["delivered"] == 197
    assert stats["dead_lettered"] == 3
